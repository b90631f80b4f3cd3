"""The team's S3-compatible remote checks credentials: a teammate's wrong keys are refused with one clear
error and leave nothing in the bucket; the right keys work from the environment or from .dvc/config.local,
which git never sees."""

from __future__ import annotations

import pytest

from conftest import run, run_env

REMOTE = "team"


@pytest.fixture
def project(tmp_path, s3_remote):
    """A DVC project with one tracked file and the team's remote (its address in git, no keys)."""
    root = tmp_path / "project"
    root.mkdir()
    env = run_env()
    run(["git", "init", "-q"], root, env)
    run(["dvc", "init", "-q"], root, env)
    run(["dvc", "remote", "add", "-d", REMOTE, s3_remote["url"].replace("dvcstore", f"keys-{tmp_path.name}")], root, env)
    run(["dvc", "remote", "modify", REMOTE, "endpointurl", s3_remote["endpoint"]], root, env)
    (root / "weights.bin").write_bytes(bytes(range(256)) * 64)
    run(["dvc", "add", "-q", "weights.bin"], root, env)
    return root


def stored(s3_remote, root) -> list[str]:
    prefix = f"keys-{root.parent.name}/"
    return [o["Key"] for o in s3_remote["client"].list_objects_v2(Bucket="cnnlab-team", Prefix=prefix).get("Contents", [])]


def test_wrong_keys_are_refused_in_one_error_and_nothing_is_written(project, s3_remote):
    wrong = {**s3_remote["env"], "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    pushed = run(["dvc", "push"], project, run_env(wrong), check=False)
    assert pushed.returncode != 0
    # S3 answers a HEAD request without a body, so DVC can only say 403 (README: what that means here).
    errors = [line for line in pushed.stderr.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 1 and "(403)" in errors[0] and "Forbidden" in errors[0], pushed.stderr
    assert "Traceback" not in pushed.stderr
    assert stored(s3_remote, project) == []

    unknown = {**s3_remote["env"], "AWS_ACCESS_KEY_ID": "AKIANOTAREALKEY00000"}
    pulled = run(["dvc", "pull"], project, run_env(unknown), check=False)
    errors = [line for line in pulled.stderr.splitlines() if line.startswith("ERROR")]
    assert pulled.returncode != 0 and "Traceback" not in pulled.stderr, pulled.stderr
    assert errors[0].startswith("ERROR: failed to connect to s3 (cnnlab-team/") and "(403)" in errors[0], errors
    assert stored(s3_remote, project) == []


def test_the_right_keys_work_from_config_local_which_git_never_sees(project, s3_remote, tmp_path):
    env = run_env({"AWS_DEFAULT_REGION": "us-east-1"})
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(name, None)
    run(["dvc", "remote", "modify", "--local", REMOTE, "access_key_id", s3_remote["env"]["AWS_ACCESS_KEY_ID"]],
        project, env)
    run(["dvc", "remote", "modify", "--local", REMOTE, "secret_access_key", s3_remote["env"]["AWS_SECRET_ACCESS_KEY"]],
        project, env)
    run(["dvc", "push"], project, env)
    assert len(stored(s3_remote, project)) == 1
    assert run(["git", "check-ignore", ".dvc/config.local"], project, env).returncode == 0
    run(["git", "add", "-A"], project, env)
    committed = run(["git", "grep", "--cached", "-l", s3_remote["env"]["AWS_SECRET_ACCESS_KEY"]], project, env,
                    check=False)
    assert committed.stdout == "", "the secret key is in git"

    (project / "weights.bin").unlink()
    run(["dvc", "cache", "dir"], project, env)
    for cached in (project / ".dvc" / "cache").rglob("*"):
        if cached.is_file():
            cached.unlink()
    run(["dvc", "pull"], project, env)
    assert (project / "weights.bin").read_bytes() == bytes(range(256)) * 64
