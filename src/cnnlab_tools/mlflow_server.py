"""A team's MLflow tracking server on this machine: PostgreSQL for runs, artifacts served by MLflow.

    python -m cnnlab_tools.mlflow_server start    # or: make mlflow-server
    python -m cnnlab_tools.mlflow_server stop
    python -m cnnlab_tools.mlflow_server status

PostgreSQL is Debian's (`apt-get install postgresql`); its cluster lives in
.mlflow-server/postgres (git-ignored), listening on 127.0.0.1 only, with
trust authentication for local connections: a single-machine setup, not a
hardened one. MLflow runs with `--serve-artifacts`, so clients send every
artifact and model through the server, which keeps them in
.mlflow-server/artifacts. Both bind to 127.0.0.1 only. Point the pipeline at
it with the MLFLOW_TRACKING_URI that `start` prints.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DIR = Path(".mlflow-server")
DEFAULT_PORT = 5000
DEFAULT_DB_PORT = 5433
DB_USER = DB_NAME = "mlflow"
START_TIMEOUT_S = 120.0


class ServerError(Exception):
    """A one-line reason the server cannot start, naming the fix."""


@dataclass(frozen=True)
class ServerLayout:
    root: Path

    @property
    def cluster(self) -> Path:
        return self.root / "postgres"

    @property
    def sockets(self) -> Path:  # PostgreSQL's Unix socket: project-local, not /var/run/postgresql
        return self.root / "sockets"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def pid_file(self) -> Path:
        return self.root / "mlflow.pid"

    @property
    def log(self) -> Path:
        return self.root / "mlflow.log"


def postgres_bin() -> Path:
    """Debian's PostgreSQL server programs (newest version installed)."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    if not versions:
        raise ServerError("PostgreSQL's server is not installed; run `apt-get install postgresql` (Debian/Ubuntu)")
    return versions[-1].parent


def _as_postgres_user() -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its programs as Debian's `postgres` user."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _run(args: list[str], what: str) -> None:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        reason = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise ServerError(f"{what} failed: {reason[-1] if reason else f'exit {done.returncode}'}")


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def start_postgres(layout: ServerLayout, db_port: int) -> None:
    binaries = postgres_bin()
    as_postgres = _as_postgres_user()
    layout.sockets.mkdir(parents=True, exist_ok=True)
    if as_postgres:
        reachable = subprocess.run([*as_postgres, "test", "-x", str(layout.root.resolve())], capture_output=True)
        if reachable.returncode != 0:
            raise ServerError(
                f"PostgreSQL runs as user postgres, which cannot reach {layout.root.resolve()} "
                "(a parent directory is private); pass --dir with a directory it can reach"
            )
        shutil.chown(layout.root, "postgres")
        shutil.chown(layout.sockets, "postgres")
    if not (layout.cluster / "PG_VERSION").is_file():
        layout.cluster.mkdir(parents=True, exist_ok=True)
        if as_postgres:
            shutil.chown(layout.cluster, "postgres")
        _run(
            [
                *as_postgres,
                str(binaries / "initdb"),
                "-D",
                str(layout.cluster.resolve()),
                "-U",
                DB_USER,
                "--auth=trust",
                "--encoding=UTF8",
            ],
            "initdb",
        )
    if _pg_running(layout):
        return
    if not _port_free(db_port):
        raise ServerError(f"port {db_port} on 127.0.0.1 is taken; pass --db-port with a free one")
    options = f"-c listen_addresses=127.0.0.1 -p {db_port} -k {layout.sockets.resolve()}"
    _run(
        [
            *as_postgres,
            str(binaries / "pg_ctl"),
            "-D",
            str(layout.cluster.resolve()),
            "-o",
            options,
            "-l",
            str((layout.root / "postgres.log").resolve()),
            "-w",
            "start",
        ],
        "starting PostgreSQL",
    )
    exists = subprocess.run(
        [
            str(binaries / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(db_port),
            "-U",
            DB_USER,
            "-d",
            "postgres",
            "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'",
        ],
        capture_output=True,
        text=True,
    )
    if exists.stdout.strip() != "1":
        _run(
            [str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(db_port), "-U", DB_USER, DB_NAME],
            "creating the mlflow database",
        )


def _pg_running(layout: ServerLayout) -> bool:
    done = subprocess.run(
        [*_as_postgres_user(), str(postgres_bin() / "pg_ctl"), "-D", str(layout.cluster.resolve()), "status"],
        capture_output=True,
        text=True,
    )
    return done.returncode == 0


def stop_postgres(layout: ServerLayout) -> None:
    if (layout.cluster / "PG_VERSION").is_file() and _pg_running(layout):
        _run(
            [
                *_as_postgres_user(),
                str(postgres_bin() / "pg_ctl"),
                "-D",
                str(layout.cluster.resolve()),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
            "stopping PostgreSQL",
        )


def backend_uri(db_port: int) -> str:
    return f"postgresql+psycopg://{DB_USER}@127.0.0.1:{db_port}/{DB_NAME}"


def start_mlflow(layout: ServerLayout, port: int, db_port: int) -> subprocess.Popen:
    """`mlflow server` in the background on 127.0.0.1:`port`; returns once it answers /health."""
    try:
        import psycopg  # noqa: F401  (SQLAlchemy's postgresql driver)
    except ImportError:
        raise ServerError(
            "the PostgreSQL driver is missing; install cnnlab[server] "
            "(pip install -e '.[server]', or `make` with EXTRAS including server)"
        ) from None
    if not _port_free(port):
        raise ServerError(f"port {port} on 127.0.0.1 is taken; stop what runs there or pass --port")
    layout.artifacts.mkdir(parents=True, exist_ok=True)
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [
        str(mlflow),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        backend_uri(db_port),
        "--serve-artifacts",
        "--artifacts-destination",
        str(layout.artifacts.resolve()),
    ]
    # A client's settings (MLFLOW_TRACKING_URI and the like, which mlflow.set_tracking_uri exports) are not the
    # server's: the server has its own store and nothing else.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    # MLflow 3's job runner (GenAI scorers and trace roll-ups) starts eight more Python processes, each importing
    # MLflow; training runs and the model registry use none of it.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    with open(layout.log, "ab") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    layout.pid_file.write_text(str(server.pid))
    deadline = time.monotonic() + START_TIMEOUT_S
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise ServerError(f"mlflow server exited with {server.returncode}; see {layout.log}")
        try:
            with direct.open(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                if answer.status == 200:
                    return server
        except OSError:
            time.sleep(0.5)
    stop_mlflow(layout)
    last = (layout.log.read_text(errors="replace").strip().splitlines() or ["(empty)"])[-1]
    raise ServerError(
        f"mlflow server did not answer on 127.0.0.1:{port} within {START_TIMEOUT_S:.0f} s; "
        f"its log {layout.log} ends: {last[:300]}"
    )


def stop_mlflow(layout: ServerLayout) -> None:
    if not layout.pid_file.is_file():
        return
    pid = int(layout.pid_file.read_text())
    try:
        os.killpg(pid, signal.SIGTERM)  # the server and its workers
        for _ in range(100):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    layout.pid_file.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("start", "stop", "status"))
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="where cluster, artifacts and logs live")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="the MLflow server's port on 127.0.0.1")
    parser.add_argument("--db-port", type=int, default=DEFAULT_DB_PORT, help="PostgreSQL's port on 127.0.0.1")
    args = parser.parse_args(argv)
    layout = ServerLayout(args.dir)
    try:
        if args.command == "start":
            args.dir.mkdir(parents=True, exist_ok=True)
            start_postgres(layout, args.db_port)
            start_mlflow(layout, args.port, args.db_port)
            print(
                f"MLflow server on PostgreSQL: export MLFLOW_TRACKING_URI=http://127.0.0.1:{args.port}\n"
                f"  runs in {backend_uri(args.db_port)}, artifacts in {layout.artifacts}, log {layout.log}\n"
                f"  stop it with: python -m cnnlab_tools.mlflow_server stop --dir {args.dir}"
            )
        elif args.command == "stop":
            stop_mlflow(layout)
            stop_postgres(layout)
        else:
            running = layout.pid_file.is_file() and not _port_free(args.port)
            print(
                f"mlflow server: {'running' if running else 'stopped'}; PostgreSQL: "
                f"{'running' if (layout.cluster / 'PG_VERSION').is_file() and _pg_running(layout) else 'stopped'}"
            )
    except ServerError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
