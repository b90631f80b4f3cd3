"""A team's MLflow tracking server: PostgreSQL for runs and logins, MLflow's basic-auth app, TLS.

    python -m cnnlab_tools.mlflow_server start [--host H --tls-self-signed | --tls-cert C --tls-key K]
    python -m cnnlab_tools.mlflow_server stop | status
    python -m cnnlab_tools.mlflow_server user add NAME         # a generated password, in a 0600 file
    python -m cnnlab_tools.mlflow_server grant NAME STUDY EDIT  # or READ, MANAGE, NO_PERMISSIONS
    python -m cnnlab_tools.mlflow_server grant NAME --model REGISTERED_MODEL EDIT

Everything lives in --dir (.mlflow-server, git-ignored): PostgreSQL's cluster, listening on 127.0.0.1
only with a generated password (scram-sha-256), holding the runs (database `mlflow`) and MLflow's users
and permissions (database `mlflow_auth`); the artifacts the server stores for its clients; the secrets
(secrets/, 0700: the database's password, the admin's, each added user's), each generated on first use
and never printed into a log. MLflow runs its basic-auth app: every request needs a login; everyone
logged in reads every study (`default_permission = READ`), writing to one needs EDIT on it, granted
by an admin; the creator of a study or a registered model manages it.

The server binds to 127.0.0.1 unless --host says otherwise, and refuses to listen beyond loopback
without TLS: passwords would cross the network in clear. Clients trust the server's certificate from
the system store or MLFLOW_TRACKING_SERVER_CERT_PATH (a self-signed one: tls/cert.pem).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cnnlab.tracking.backend import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, temporary_environment

DEFAULT_DIR = Path(".mlflow-server")
DEFAULT_PORT = 5050  # not 5000: that is `make mlflow-ui`'s (MLflow's default)
DEFAULT_DB_PORT = 5433
DB_USER = DB_NAME = "mlflow"
AUTH_DB_NAME = "mlflow_auth"
ADMIN = "admin"
DEFAULT_PERMISSION = "READ"  # every login reads every study; writing one takes a grant (or creating it)
PERMISSIONS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")
START_TIMEOUT_S = 120.0
AUTH_CACHE_S = 30
WORKERS = 2  # uvicorn processes: a stage's worker and a UI user at once, without starving a 2-core machine


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
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def pgpass(self) -> Path:  # libpq's password file: the database password never goes on a command line
        return self.secrets / "pgpass"

    @property
    def admin_password(self) -> Path:
        return self.secrets / "admin-password"

    def user_password(self, name: str) -> Path:
        return self.secrets / "users" / name

    @property
    def auth_config(self) -> Path:
        return self.root / "basic_auth.ini"

    @property
    def tls(self) -> Path:
        return self.root / "tls"

    @property
    def pid_file(self) -> Path:
        return self.root / "mlflow.pid"

    @property
    def state(self) -> Path:  # where the running server listens, for `user` and `grant`
        return self.root / "server.json"

    @property
    def log(self) -> Path:
        return self.root / "mlflow.log"


def write_secret(path: Path, text: str) -> None:
    """A file only this user can read, created so (never readable by others, even for an instant)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)


def secret(path: Path) -> str:
    """The generated secret in `path`, generated on first use."""
    if not path.is_file():
        write_secret(path, secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: an interface reachable from elsewhere


def check_exposure(host: str, tls: bool) -> None:
    if not is_loopback(host) and not tls:
        raise ServerError(
            f"refusing to listen on {host} without TLS: logins would cross the network in clear; "
            "pass --tls-cert and --tls-key (or --tls-self-signed), or keep --host 127.0.0.1"
        )


# --- PostgreSQL ---------------------------------------------------------------------------------------------


def postgres_bin() -> Path:
    """Debian's PostgreSQL server programs (newest version installed)."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    if not versions:
        raise ServerError("PostgreSQL's server is not installed; run `apt-get install postgresql` (Debian/Ubuntu)")
    return versions[-1].parent


def _as_postgres_user() -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its programs as Debian's `postgres` user."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _run(args: list[str], what: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        reason = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise ServerError(f"{what} failed: {reason[-1] if reason else f'exit {done.returncode}'}")
    return done.stdout


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def db_env(layout: ServerLayout) -> dict[str, str]:
    """The environment of a process that logs in to the database: libpq reads the password from PGPASSFILE."""
    return {**os.environ, "PGPASSFILE": str(layout.pgpass.resolve())}


def _initdb(layout: ServerLayout, as_postgres: list[str]) -> None:
    layout.cluster.mkdir(parents=True, exist_ok=True)
    password_file = layout.root / "initdb-password"  # for initdb alone, readable by the postgres user
    write_secret(password_file, secret(layout.secrets / "db-password") + "\n")
    try:
        if as_postgres:
            shutil.chown(layout.cluster, "postgres")
            shutil.chown(password_file, "postgres")
        _run(
            [
                *as_postgres,
                str(postgres_bin() / "initdb"),
                "-D",
                str(layout.cluster.resolve()),
                "-U",
                DB_USER,
                "--auth=scram-sha-256",
                f"--pwfile={password_file.resolve()}",
                "--encoding=UTF8",
            ],
            "initdb",
        )
    finally:
        password_file.unlink(missing_ok=True)


def _check_hardened(layout: ServerLayout) -> None:
    hba = (layout.cluster / "pg_hba.conf").read_text()
    if any(line.split()[-1:] == ["trust"] for line in hba.splitlines() if not line.lstrip().startswith("#")):
        raise ServerError(
            f"the database in {layout.cluster} lets anyone on this machine in (trust authentication, made by an "
            "older cnnlab): stop it, move that directory away, and start again (the runs in it stay in the old "
            "directory; `pg_dump` them across if they matter)"
        )


def start_postgres(layout: ServerLayout, db_port: int) -> None:
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
        _initdb(layout, as_postgres)
    _check_hardened(layout)
    write_secret(layout.pgpass, f"127.0.0.1:{db_port}:*:{DB_USER}:{secret(layout.secrets / 'db-password')}\n")
    if not _pg_running(layout):
        if not _port_free(db_port):
            raise ServerError(f"port {db_port} on 127.0.0.1 is taken; pass --db-port with a free one")
        options = f"-c listen_addresses=127.0.0.1 -p {db_port} -k {layout.sockets.resolve()}"
        log = (layout.root / "postgres.log").resolve()
        _run(
            [
                *as_postgres,
                str(postgres_bin() / "pg_ctl"),
                "-D",
                str(layout.cluster.resolve()),
                "-o",
                options,
                "-l",
                str(log),
                "-w",
                "start",
            ],
            "starting PostgreSQL",
        )
    for database in (DB_NAME, AUTH_DB_NAME):
        _create_database(layout, db_port, database)


def _create_database(layout: ServerLayout, db_port: int, database: str) -> None:
    connect = ["-h", "127.0.0.1", "-p", str(db_port), "-U", DB_USER]
    exists = _run(
        [
            str(postgres_bin() / "psql"),
            *connect,
            "-d",
            "postgres",
            "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname = '{database}'",
        ],
        "reaching PostgreSQL",
        db_env(layout),
    )
    if exists.strip() != "1":
        _run([str(postgres_bin() / "createdb"), *connect, database], f"creating database {database}", db_env(layout))


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


def backend_uri(db_port: int, database: str = DB_NAME) -> str:
    """SQLAlchemy's URL of a database, without its password (libpq finds that in PGPASSFILE)."""
    return f"postgresql+psycopg://{DB_USER}@127.0.0.1:{db_port}/{database}"


# --- TLS ----------------------------------------------------------------------------------------------------


def self_signed_certificate(layout: ServerLayout, host: str) -> tuple[Path, Path]:
    """A certificate for this machine's names and `host` (EC P-256, one year), made once into tls/."""
    cert_path, key_path = layout.tls / "cert.pem", layout.tls / "key.pem"
    if cert_path.is_file() and key_path.is_file():
        return cert_path, key_path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.DNSName(socket.gethostname())]
    addresses = {"127.0.0.1", "::1"} | ({host} if _is_address(host) else set())
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in sorted(addresses)]
    if not _is_address(host) and host not in ("localhost", socket.gethostname()):
        names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cnnlab MLflow server")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_secret(key_path, key_pem.decode())
    layout.tls.mkdir(parents=True, exist_ok=True)
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# --- MLflow -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listening:
    """Where a started server answers, as `user` and `grant` (and the health check) reach it."""

    host: str
    port: int
    cert: str | None  # the certificate clients verify, None for plain HTTP on loopback

    @property
    def uri(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"{'https' if self.cert else 'http'}://{host}:{self.port}"


def write_auth_config(layout: ServerLayout, db_port: int) -> None:
    write_secret(
        layout.auth_config,
        "[mlflow]\n"
        f"default_permission = {DEFAULT_PERMISSION}\n"
        f"database_uri = {backend_uri(db_port, AUTH_DB_NAME)}\n"
        f"admin_username = {ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # A password check is a PBKDF2 hash, most of a request's CPU time: each worker remembers a login that
        # passed for 30 s. The price: a changed or deleted password still works for up to 30 s.
        f"auth_cache_ttl_seconds = {AUTH_CACHE_S}\n",
    )


def start_mlflow(
    layout: ServerLayout, listening: Listening, db_port: int, key: Path | None, allowed_hosts: str | None
) -> subprocess.Popen:
    """`mlflow server --app-name basic-auth` in the background; returns once it answers /health."""
    try:
        import flask_wtf  # noqa: F401  (the basic-auth app's forms)
        import psycopg  # noqa: F401  (SQLAlchemy's postgresql driver)
    except ImportError as missing:
        raise ServerError(
            f"{missing.name} is missing; install cnnlab[server] (pip install -e '.[server]', or `make` with EXTRAS "
            "including server)"
        ) from None
    if not _port_free(listening.port):
        raise ServerError(f"port {listening.port} is taken; stop what runs there or pass --port")
    layout.artifacts.mkdir(parents=True, exist_ok=True)
    write_auth_config(layout, db_port)
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--app-name",
        "basic-auth",
        "--host",
        listening.host,
        "--port",
        str(listening.port),
        "--workers",
        str(WORKERS),
        "--backend-store-uri",
        backend_uri(db_port),
        "--serve-artifacts",
        "--artifacts-destination",
        str(layout.artifacts.resolve()),
    ]
    if allowed_hosts:
        command += ["--allowed-hosts", allowed_hosts]
    if listening.cert and key:
        command += ["--uvicorn-opts", f"--ssl-certfile {listening.cert} --ssl-keyfile {key.resolve()}"]
    # A client's settings (MLFLOW_TRACKING_URI and the like) are not the server's: it has its own stores.
    env = {k: v for k, v in db_env(layout).items() if not k.startswith("MLFLOW_")}
    env.update(
        MLFLOW_AUTH_CONFIG_PATH=str(layout.auth_config.resolve()),
        # Read by the auth app only while its user table is empty, to create the admin.
        MLFLOW_AUTH_ADMIN_PASSWORD=secret(layout.admin_password),
        # Signs the UI's CSRF tokens: the same across restarts and workers, or open pages stop working.
        MLFLOW_FLASK_SERVER_SECRET_KEY=secret(layout.secrets / "flask-secret-key"),
        # MLflow 3's job runner (GenAI scorers, trace roll-ups) starts eight more processes; runs use none of it.
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
    )
    with open(layout.log, "ab") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    layout.pid_file.write_text(str(server.pid))
    layout.state.write_text(json.dumps({"host": listening.host, "port": listening.port, "cert": listening.cert}))
    _wait_healthy(layout, server, listening)
    return server


def _wait_healthy(layout: ServerLayout, server: subprocess.Popen, listening: Listening) -> None:
    context = ssl.create_default_context(cafile=listening.cert) if listening.cert else None
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise ServerError(f"mlflow server exited with {server.returncode}; see {layout.log}")
        try:
            with direct.open(f"{listening.uri}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except urllib.error.HTTPError:
            return  # it answers (and asks for a login)
        except OSError:
            time.sleep(0.5)
    stop_mlflow(layout)
    last = (layout.log.read_text(errors="replace").strip().splitlines() or ["(empty)"])[-1]
    raise ServerError(
        f"mlflow server did not answer on {listening.uri} within {START_TIMEOUT_S:.0f} s; "
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


# --- Users and permissions, through MLflow's own client as the admin -----------------------------------------


def listening_of(layout: ServerLayout) -> Listening:
    if not layout.state.is_file() or not layout.pid_file.is_file():
        raise ServerError(f"no server is running from {layout.root}; start it first (make mlflow-server)")
    state = json.loads(layout.state.read_text())
    return Listening(state["host"], state["port"], state["cert"])


@contextlib.contextmanager
def as_admin(layout: ServerLayout) -> Iterator[Listening]:
    """MLflow's clients made inside point at the server, logged in as its admin (the environment restored
    after: the caller's own login, if any, is not the admin's)."""
    listening = listening_of(layout)
    login = {"MLFLOW_TRACKING_USERNAME": ADMIN, "MLFLOW_TRACKING_PASSWORD": secret(layout.admin_password)}
    if listening.cert:
        login["MLFLOW_TRACKING_SERVER_CERT_PATH"] = listening.cert
    from mlflow.exceptions import MlflowException

    with temporary_environment(**login):
        try:
            yield listening
        except MlflowException as refused:  # an unknown user, a taken name, a server that is down: one line
            reason = (str(refused).strip().splitlines() or [type(refused).__name__])[0][:200]
            raise ServerError(f"the server at {listening.uri} refused: {reason}") from None


def _auth_client(uri: str) -> Any:
    with warnings.catch_warnings():  # importing the server's modules warns of its web framework's deprecations
        warnings.simplefilter("ignore")
        from mlflow.server import get_app_client

        return get_app_client("basic-auth", tracking_uri=uri)


def add_user(layout: ServerLayout, name: str) -> Path:
    password_file = layout.user_password(name)
    if password_file.is_file():
        raise ServerError(f"{name} was added already (password in {password_file}); pick another name")
    password = secrets.token_urlsafe(18)
    with as_admin(layout) as listening:
        _auth_client(listening.uri).create_user(name, password)
    write_secret(password_file, password + "\n")
    return password_file


def grant(layout: ServerLayout, name: str, permission: str, study: str | None, model: str | None) -> str:
    from mlflow import MlflowClient

    with as_admin(layout) as listening:
        auth = _auth_client(listening.uri)
        if model is not None:
            auth.grant_user_permission(name, "registered_model", model, permission)
            return f"registered model {model}"
        assert study is not None
        tracking = MlflowClient(tracking_uri=listening.uri)
        experiment = tracking.get_experiment_by_name(study)
        # Created now if no run made it yet, so a grant can come before the study's first run: as the stages
        # create a study, opening on the UI's view of training runs.
        experiment_id = (
            experiment.experiment_id
            if experiment
            else tracking.create_experiment(study, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        )
        auth.grant_user_permission(name, "experiment", experiment_id, permission)
        # A study's runs register their models as <study>.<experiment>: writing a run there needs them too.
        models = [m.name for m in tracking.search_registered_models(f"name LIKE '{study}.%'")]
        for registered in models:
            auth.grant_user_permission(name, "registered_model", registered, permission)
    return f"study {study} (experiment {experiment_id}) and its {len(models)} registered model(s)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="cluster, artifacts, secrets and logs")
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("start", help="PostgreSQL and the MLflow server, in the background")
    start.add_argument("--host", default="127.0.0.1", help="the interface to listen on (beyond loopback: TLS)")
    start.add_argument("--port", type=int, default=DEFAULT_PORT)
    start.add_argument("--db-port", type=int, default=DEFAULT_DB_PORT, help="PostgreSQL's port on 127.0.0.1")
    start.add_argument("--tls-cert", type=Path, help="the server's certificate chain (PEM)")
    start.add_argument("--tls-key", type=Path, help="its private key (PEM)")
    start.add_argument("--tls-self-signed", action="store_true", help="make one into DIR/tls (for a trial)")
    start.add_argument("--allowed-hosts", help="Host headers to accept, for the names clients use (MLflow's)")
    commands.add_parser("stop")
    commands.add_parser("status")
    user = commands.add_parser("user", help="add a login (its password generated into DIR/secrets/users)")
    user.add_argument("action", choices=("add",))
    user.add_argument("name")
    granting = commands.add_parser("grant", help="give a user a permission on a study or registered model")
    granting.add_argument("name")
    granting.add_argument("study", nargs="?", help="a study (MLflow experiment), created if it has no run yet")
    granting.add_argument("permission", choices=PERMISSIONS)
    granting.add_argument("--model", help="a registered model instead of a study")
    args = parser.parse_args(argv)
    layout = ServerLayout(args.dir)
    try:
        if args.command == "start":
            _start(args, layout)
        elif args.command == "stop":
            stop_mlflow(layout)
            stop_postgres(layout)
        elif args.command == "status":
            running = layout.pid_file.is_file() and layout.state.is_file()
            postgres = (layout.cluster / "PG_VERSION").is_file() and _pg_running(layout)
            where = f" at {listening_of(layout).uri}" if running else ""
            print(
                f"mlflow server: {'running' + where if running else 'stopped'}; "
                f"PostgreSQL: {'running' if postgres else 'stopped'}"
            )
        elif args.command == "user":
            password_file = add_user(layout, args.name)
            print(
                f"added {args.name}; the password is in {password_file}. Give it to them for ~/.mlflow/credentials:\n"
                f"  [mlflow]\n  mlflow_tracking_username = {args.name}\n  mlflow_tracking_password = <that password>"
            )
        else:
            if (args.study is None) == (args.model is None):
                raise ServerError("name either a STUDY or --model REGISTERED_MODEL to grant on")
            target = grant(layout, args.name, args.permission, args.study, args.model)
            print(f"{args.name}: {args.permission} on {target}")
    except ServerError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None


def _start(args: argparse.Namespace, layout: ServerLayout) -> None:
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ServerError("--tls-cert and --tls-key go together; pass both (or --tls-self-signed)")
    check_exposure(args.host, bool(args.tls_cert or args.tls_self_signed))
    args.dir.mkdir(parents=True, exist_ok=True)
    cert, key = (args.tls_cert, args.tls_key) if args.tls_cert else (None, None)
    if args.tls_self_signed:
        cert, key = self_signed_certificate(layout, args.host)
    listening = Listening(args.host, args.port, str(cert.resolve()) if cert else None)
    start_postgres(layout, args.db_port)
    start_mlflow(layout, listening, args.db_port, key, args.allowed_hosts)
    trust = f"\n  export MLFLOW_TRACKING_SERVER_CERT_PATH={listening.cert}" if args.tls_self_signed else ""
    print(
        f"MLflow server with logins on PostgreSQL: export MLFLOW_TRACKING_URI={listening.uri}{trust}\n"
        f"  admin: {ADMIN}, password in {layout.admin_password}; add users with "
        f"`python -m cnnlab_tools.mlflow_server user add NAME`\n"
        f"  artifacts in {layout.artifacts}, log {layout.log}; stop with "
        f"`python -m cnnlab_tools.mlflow_server --dir {args.dir} stop`"
    )


if __name__ == "__main__":
    main()
