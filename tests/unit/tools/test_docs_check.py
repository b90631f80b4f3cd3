"""Every name the docs give exists: make targets, flags, params keys, paths and environment variables."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cnnlab_tools.docs_check import (
    Located,
    Mention,
    Project,
    check,
    check_mentions,
    code_in,
    command_mentions,
    env_mentions,
    git_ignores,
    heading_anchors,
    is_path,
    key_mentions,
    key_states,
    makefile_targets,
    makefile_variables,
    params_model,
    path_exists,
    path_mentions,
    shell_words,
)
from conftest import REPO, copy_project, run_env

SECTIONS = {"runtime", "datasets", "experiments", "transfer", "replicates", "report"}
TOP_LEVEL = frozenset({"src", "reports", "metrics", "models", "data", "params.yaml", "Makefile"})


def test_the_projects_docs_name_only_what_exists():
    """The one test that asks dvc and mlflow (`--help` of each subcommand the docs name)."""
    assert [str(problem) for problem in check(REPO)] == []


# --- Each kind of name, on a copy of the project with a doc of one line -----------------------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(tmp_path_factory.mktemp("docs") / "project")


def write_docs(root: Path, docs: dict[str, str]) -> None:
    """The project's docs are these, and only these."""
    (root / "README.md").unlink(missing_ok=True)
    shutil.rmtree(root / "docs", ignore_errors=True)
    for name, text in docs.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def docs_check(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cnnlab_tools.docs_check"], cwd=root, capture_output=True, text=True, env=run_env()
    )


def test_a_make_target_the_makefile_lacks_fails_the_check_naming_it_and_where(project: Path):
    write_docs(
        project, {"README.md": "# The project\n\nSet up, then:\n\n```bash\nmake setup && make no-such-target\n```\n"}
    )
    done = docs_check(project)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "README.md:6: make target `no-such-target` is not a rule of the Makefile; add the rule"
    ]
    write_docs(project, {"README.md": "# The project\n\n`make -o setup repro` runs the pipeline.\n"})
    done = docs_check(project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == "README.md: every name the docs give exists\n"


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        (
            "Run `dvc exp run -S datasets.cifar10.acquire.nosuchkey=1`.",
            "docs/guide.md:3: params key `datasets.cifar10.acquire.nosuchkey` is in neither params.yaml nor its model "
            "(cnnlab.config); `datasets.cifar10.acquire` has images, source, synthetic",
        ),
        (
            "The model is in `src/cnnlab/models/no_such_model.py`.",
            "docs/guide.md:3: path `src/cnnlab/models/no_such_model.py` is nowhere: not in the tree, an output of "
            "dvc.yaml or ignored as generated; fix the path",
        ),
        (
            "```bash\npython -m cnnlab_tools.bench --workloads cifar_vgg \\\n  --no-such-flag\n```",
            "docs/guide.md:5: flag of `python -m cnnlab_tools.bench`: `--no-such-flag` is not in "
            "src/cnnlab_tools/bench.py; fix the flag",
        ),
        (
            "Set `CNNLAB_MIROR=../shared/data` first.",
            "docs/guide.md:3: environment variable `CNNLAB_MIROR` is read nowhere in src/, stages/, tests/ or the "
            "Makefile; did you mean `CNNLAB_MIRROR`?",
        ),
        (
            "`make gpu-check GPU_PYTON=python3`",
            "docs/guide.md:3: make variable `GPU_PYTON` is not assigned in the Makefile; did you mean `GPU_PYTHON`?",
        ),
        (
            "See [the data](data.md#sources).",
            "docs/guide.md:3: link `docs/data.md#sources` leads nowhere: no such file or directory; fix the link",
        ),
        (
            "See [below](#the-gide).\n\n## The guide",
            "docs/guide.md:3: link `docs/guide.md#the-gide` leads to no heading of docs/guide.md; "
            "did you mean `the-guide`?",
        ),
        (
            "`python -m cnnlab.experiments`",
            "docs/guide.md:3: module `cnnlab.experiments` is not in the project; did you mean `cnnlab_tools.experiments`?",
        ),
    ],
)
def test_a_name_that_is_not_there_is_one_line_naming_it_its_file_and_line(project: Path, doc: str, problem: str):
    write_docs(project, {"docs/guide.md": f"# Guide\n\n{doc}\n"})
    assert [str(p) for p in check(project, tools=False)] == [problem]


def test_what_the_pipeline_a_command_or_git_ignore_makes_counts_as_there(project: Path):
    write_docs(
        project,
        {
            "README.md": "# The project\n\n"
            "`models/mnist_cnn/train.json`, `metrics/<experiment>.json`, `data/prepared/mnist/`, `.venv/bin/activate`,\n"
            "`.dvc/config.local`, `reports/figures/<study>_seeds.png`, `mlflow.db`, `cnnlab/tracking/client.py`.\n\n"
            "```bash\n"
            "python -m cnnlab_tools.experiments --plots sweeps/   # sweeps/sweep-<id>.png\n"
            "dvc exp run -S 'experiments.mnist_cnn.train.augment.flip=true' -S experiments.<name>.train.epochs=2\n"
            "CNNLAB_DEVICE=cpu dvc repro   # or `make repro`, with $MLFLOW_TRACKING_URI set\n"
            "```\n"
        },
    )
    assert [str(p) for p in check(project, tools=False)] == []


# --- Checks on names given, with explicit inputs ----------------------------------------------------------------


def test_a_dvc_subcommand_or_flag_its_help_lacks_is_a_problem():
    project = Project(REPO, frozenset(), frozenset(), {}, None, frozenset(), frozenset(), (), frozenset(), None)
    helps = {"dvc exp run": frozenset({"--temp", "--queue"}), "dvc exp nosuch": None}
    commands, _ = shell_words("dvc exp run --temp --quue && dvc exp nosuch")
    found = [Located("README.md", 3, mention) for command in commands for mention in command_mentions(command)]
    problems = check_mentions(found, project, lambda command: helps.get(command, frozenset()), lambda family: None)
    assert [str(p) for p in problems] == [
        "README.md:3: flag of `dvc exp run`: `--quue` is not in its --help; did you mean `--queue`?",
        "README.md:3: command `dvc exp nosuch` does not exist (`dvc exp nosuch --help` fails); see `dvc exp --help`",
    ]


# --- Reading the docs --------------------------------------------------------------------------------------------


def mentions(code: str) -> list[tuple[str, str]]:
    words, _ = shell_words(code)
    return [(m.kind, m.name) for command in words for m in command_mentions(command)]


def test_make_targets_and_variables_end_with_the_command():
    assert mentions("make -o setup repro VAR=value && make test; make demo   # make not-this") == [
        ("make-target", "setup"),
        ("make-target", "repro"),
        ("make-variable", "VAR"),
        ("make-target", "test"),
        ("make-target", "demo"),
    ]
    assert mentions("make -j 2 test-slow") == [("make-target", "test-slow")]
    assert mentions("make -C elsewhere build") == [], "another makefile's targets are not this one's"
    assert mentions("export MAKE=make") == []
    assert mentions("make <target>") == [], "a placeholder is no name"


def test_flags_are_read_from_the_projects_commands_and_dvc_and_mlflows():
    assert mentions('PYTHONPATH=src python3 -m cnnlab_tools.gpu_check --out "$OUT" \\\n  --images=a/b.tar.gz') == [
        ("module", "cnnlab_tools.gpu_check"),
        ("flag", "--out"),
        ("flag", "--images"),
        ("written", "a/b.tar.gz"),
    ]
    assert mentions("python stages/train.py mnist_cnn --resume") == [
        ("module", "stages/train.py"),
        ("flag", "--resume"),
    ]
    assert mentions("dvc remote modify --local team endpointurl x") == [
        ("command", "dvc remote modify"),
        ("command-flag", "--local"),
    ]
    assert mentions("for gpu in 0 1; do CUDA_VISIBLE_DEVICES=$gpu dvc queue start -j $((gpu + 1)); done") == [
        ("command", "dvc queue start")
    ]
    assert mentions("mlflow ui --backend-store-uri sqlite:///mlflow.db") == [
        ("command", "mlflow ui"),
        ("command-flag", "--backend-store-uri"),
    ]
    assert mentions("python -c 'import x' --flag") == []


def test_params_keys_are_dotted_names_under_a_section():
    code = "dvc exp run -S 'experiments.mnist_cnn.train.optimizer.lr=0.02,0.05' -S report.significance=0.1 x"
    assert [m.name for m in key_mentions(code, SECTIONS)] == [
        "experiments.mnist_cnn.train.optimizer.lr",
        "report.significance",
    ]
    assert [m.name for m in key_mentions("experiments.<name>.train.epochs, runtime.*", SECTIONS)] == [
        "experiments.<name>.train.epochs",
        "runtime.*",
    ]
    text = "src/cnnlab/report.py, report.py, datasets.py, ${datasets}, foreach: ${experiments}, train.epochs"
    assert key_mentions(text, SECTIONS) == []


def test_a_params_key_is_one_of_params_yaml_or_one_its_model_accepts():
    params = {
        "datasets": {"mnist": {"kind": "mnist", "acquire": {"source": "official"}}},
        "experiments": {"mnist_cnn": {"train": {"epochs": 1}}},
        "report": {"comparisons": [{"baseline": "a", "candidate": "b"}]},
    }
    model = params_model()

    def known(key: str) -> bool:
        return bool(key_states(key, params, model))

    assert known("experiments.mnist_cnn.train.epochs")
    assert known("experiments.mnist_cnn.train.augment.flip"), "optional: the model has it, params.yaml leaves it out"
    assert known("experiments.<name>.train.epochs") and known("experiments.EXPERIMENT.train.seed")
    assert known("datasets.mnist.acquire.synthetic.train_size"), "mnist's acquire: options"
    assert known("report.comparisons[0].baseline") and known("runtime.checkpoint_every_s")
    assert not known("experiments.no_such_experiment.train.epochs"), "an entry is one params.yaml holds"
    assert not known("experiments.mnist_cnn.train.no_such_key")
    assert not known("datasets.mnist.acquire.images"), "CIFAR-10's option, not MNIST's"
    assert not known("runtime.precision")


def test_a_path_is_a_word_with_a_slash_that_names_a_place_in_the_project():
    names = [
        m.name
        for m in path_mentions("cat reports/bench.md kinds/mnist.py (metrics/mnist_cnn.json:test_accuracy),", TOP_LEVEL)
    ]
    assert names == ["reports/bench.md", "kinds/mnist.py", "metrics/mnist_cnn.json"]
    assert [m.name for m in path_mentions("CNNLAB_MIRROR=../shared/data --out=models/x", TOP_LEVEL)] == [
        "../shared/data",
        "models/x",
    ]
    for word in (
        "params.yaml",
        "src/cnnlab/models/vgg.py",
        "docs/data.md",
        "reports/<name>/",
        "../shared/x",
        "src/x",
        "models/",
    ):
        assert is_path(word, TOP_LEVEL), word
    for word in (
        "summary.json",
        "img/s",
        "and/or",
        "train/<class>/",
        "tls/",
        "https://x.org/a.md",
        "/data/mirror/x.tar",
        "~/.cache/x.pth",
    ):
        assert not is_path(word, TOP_LEVEL), word
    for word in ("$OUT/gpu.md", "s3://bucket/x", "models:/mnist.cnn@evaluated", "1/2"):
        assert path_mentions(word, TOP_LEVEL) == [], word


def test_a_path_is_there_in_the_tree_under_an_output_ignored_or_written(tmp_path: Path):
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "bench.md").write_text("")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / ".gitignore").write_text("/.venv/\n*.partial\n")
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / ".gitignore").write_text("/config.local\n")
    project = Project(
        root=tmp_path,
        make_targets=frozenset(),
        make_variables=frozenset(),
        params={},
        model=None,
        tracked=frozenset({"src", "src/cnnlab", "src/cnnlab/config", "src/cnnlab/config/params.py"}),
        outputs=frozenset({"models/mnist_cnn", "metrics/mnist_cnn.json"}),
        ignores=(("", "/.venv/"), ("", "*.partial"), (".dvc", "/config.local")),
        env_names=frozenset(),
        shared=None,
    )
    there = [
        "src/cnnlab/config/params.py",  # tracked
        "reports/bench.md",  # on disk
        "reports/bench",  # the stem of files there (`--out reports/bench`)
        "models/mnist_cnn/train.json",  # under an output
        "models/",  # above one
        "metrics/<experiment>.json",  # a placeholder: what comes before it is there
        ".venv/bin/activate",  # ignored: made here
        ".dvc/config.local",
        "data.partial",
        "config/",  # the tail of a known path
        "cnnlab/config/params.py",
        "src/cnnlab/{config,config/params.py}",  # each of a brace expansion
        "../shared/anything",  # no ../shared here: not checked
        "sweeps/sweep-<id>.png",  # under what a command writes
        "<folder>/train/",  # nothing fixed to check
    ]
    for path in there:
        assert path_exists(path, project, written={"sweeps"}), path
    for path in ("src/cnnlab/nosuch.py", "reports/nosuch/", "reports/bench.{md,json}", "metrics/x/<name>", "train/"):
        assert not path_exists(path, project, written={"sweeps"}), path


def test_what_git_ignores_counts_as_ignored_and_everything_under_it(tmp_path: Path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / ".gitignore").write_text("/data/\n*.egg-info/\nmlflow.db\n__pycache__/\n")
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / ".gitignore").write_text("/tmp\n")
    for path in ("data/raw/mnist", "data", "cnnlab.egg-info/PKG-INFO", "mlflow.db", "src/x/__pycache__/y.pyc",
                 ".dvc/tmp/exps", "__pycache__/"):
        assert git_ignores(tmp_path, path), path
    for path in ("src/data/x.py", "mlflow.db.txt", "tmp/x", "dvc.yaml"):
        assert not git_ignores(tmp_path, path), path


def test_env_variables_and_prefixes():
    names = [m.name for m in env_mentions("export CNNLAB_MIRROR=x; $MLFLOW_TRACKING_URI MLFLOW_HTTP_REQUEST_* OMP_X")]
    assert names == ["CNNLAB_MIRROR", "MLFLOW_TRACKING_URI", "MLFLOW_HTTP_REQUEST_*"]


def test_the_makefiles_targets_and_variables():
    makefile = (
        "PYTHON ?= python3.11\nBIN := $(VENV)/bin\nexport DVC_NO_ANALYTICS := 1\n.PHONY: setup repro\n"
        "$(BIN)/python:\n\t$(PYTHON) -m venv $(VENV)\nsetup: $(BIN)/python\nrepro test: setup\n\techo a:b\n"
    )
    assert makefile_targets(makefile) == {"setup", "repro", "test", "$(BIN)/python"}
    assert makefile_variables(makefile) == {"PYTHON", "BIN", "DVC_NO_ANALYTICS", "VENV"}


def test_code_is_read_from_spans_and_fenced_blocks_with_their_lines():
    doc = (
        "# Title\n"  # 1
        "Prose make nothing, then `make repro` and a\n"  # 2
        "``span with ` inside`` and [a link](docs/x.md).\n"  # 3
        "\n"  # 4
        "```bash\n"  # 5
        "make test   # then `make check`\n"  # 6
        "```\n"  # 7
        "<!-- docs-check: off -->\n"  # 8
        "`make gone`\n"  # 9
        "<!-- docs-check: on -->\n"  # 10
        "`[not a link](x.md)`\n"  # 11
    )
    codes, links = code_in(doc)
    assert sorted((code.line, code.text) for code in codes) == [
        (2, "make repro"),
        (3, "span with ` inside"),
        (6, "make check"),
        (6, "make test   # then `make check`"),
        (11, "[not a link](x.md)"),
    ]
    assert links == [(3, "docs/x.md")]


def test_heading_anchors_are_githubs():
    doc = "# The project\n## CIFAR-10's sources\n```\n# not a heading\n```\n## `make repro`\n## The project\n"
    assert heading_anchors(doc) == {"the-project", "cifar-10s-sources", "make-repro", "the-project-1"}


def test_a_mention_keeps_its_offset_for_the_line():
    assert command_mentions(shell_words("make \\\n  repro")[0][0]) == [Mention("make-target", "repro", 9)]
