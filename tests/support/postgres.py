"""A throwaway, real PostgreSQL server for tests: initdb into a temp dir, 127.0.0.1 only, stopped after.

Never a skip: the scale-out stores are part of the suite, so missing binaries are a failure
that says how to get them (scripts/install-postgres.sh installs Debian's package as root).

PostgreSQL refuses to run as root, and CI runs as root: then initdb, the server and pg_ctl
run as the `postgres` system user that Debian's package creates, in a directory made under
the system temp dir (pytest's own temp dirs are private to root) and chowned to it.
Clients connect over TCP to 127.0.0.1 with a password (scram-sha-256), like a real
deployment; the unix socket lives in the temp dir, never in /var/run/postgresql.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parents[2]
SERVER_USER = "postgres"
"""The system user the server runs as when the tests run as root."""


@functools.cache
def postgres_bin_dir() -> Path:
    """Where initdb/postgres/pg_ctl are: $MCP_BROKER_PG_BIN, or what scripts/install-postgres.sh says."""
    given = os.environ.get("MCP_BROKER_PG_BIN")
    if given:
        path = Path(given)
        if not (path / "initdb").is_file():
            raise AssertionError(f"MCP_BROKER_PG_BIN={given} has no initdb")
        return path
    done = subprocess.run(
        [str(REPO / "scripts" / "install-postgres.sh")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise AssertionError(
            f"PostgreSQL is required by the tests and could not be installed:\n{done.stderr[-2000:]}"
        )
    return Path(done.stdout.strip().splitlines()[-1])


class PostgresServer:
    """A running server: connect with `dsn(dbname)`; `stop()` and `start()` it again on the same port."""

    def __init__(self, bin_dir: Path, user: str | None, directory: Path, password: str) -> None:
        self.bin_dir = bin_dir
        self.user = user
        self.directory = directory
        self.data = directory / "data"
        self.password = password
        self.host = "127.0.0.1"
        self.port = 0
        self.pid = 0

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host={self.host} port={self.port} user=postgres password={self.password} dbname={dbname}"

    @property
    def admin_dsn(self) -> str:
        return self.dsn("postgres")

    def create_database(self, prefix: str = "t") -> str:
        """A new, empty database; returns its DSN (each test starts from nothing)."""
        name = f"{prefix}_{secrets.token_hex(6)}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def drop_database(self, dsn: str) -> None:
        name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
        assert isinstance(name, str)
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def start(self, attempts: int = 3) -> None:
        """Start the server: on the port it had (a restart), or on a free one the first time."""
        last = ""
        for _ in range(attempts):  # a free port can be taken between probing and binding
            port = self.port or _free_port()
            options = f"-c listen_addresses=127.0.0.1 -p {port} -k {self.directory} -c max_connections=100"
            log = self.directory / "server.log"
            argv = [str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(log), "-o", options]
            done = _run_as(self.user, [*argv, "-w", "-t", "60", "start"], timeout=90)
            if done.returncode == 0:
                self.port = port
                self.pid = int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
                return
            last = f"{done.stdout}\n{done.stderr}\n{log.read_text()[-2000:] if log.exists() else ''}"
        raise AssertionError(f"PostgreSQL did not start:\n{last}")

    def stop(self) -> None:
        """pg_ctl stop -m fast (clients are disconnected); if that fails, kill the PID we started."""
        if not self.pid:
            return
        done = _run_as(
            self.user,
            [str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
            timeout=60,
        )
        if done.returncode != 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, 9)
        self.pid = 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _run_as(user: str | None, argv: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a server program as `user` (PostgreSQL refuses root), with no standard input (CI has none)."""
    uid = gid = None
    if user is not None:
        entry = pwd.getpwnam(user)
        uid, gid = entry.pw_uid, entry.pw_gid
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
        cwd="/",
        user=uid,
        group=gid,
        extra_groups=[] if uid is not None else None,
    )


def _server_user() -> str | None:
    """None: run as ourselves. As root: the `postgres` system user, which must exist."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise AssertionError(
            f"running as root, PostgreSQL must run as another user, and there is no '{SERVER_USER}' "
            "user (Debian's postgresql package creates it: scripts/install-postgres.sh)"
        ) from None
    return SERVER_USER


@contextlib.contextmanager
def running_postgres(attempts: int = 3) -> Iterator[PostgresServer]:
    """Start a fresh server (initdb + pg_ctl start), yield it, stop it (pg_ctl stop -m fast) and remove it."""
    bin_dir = postgres_bin_dir()
    user = _server_user()
    directory = Path(tempfile.mkdtemp(prefix="mcp-broker-pg-"))
    try:
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(directory, entry.pw_uid, entry.pw_gid)
        data = directory / "data"
        password = secrets.token_urlsafe(18)
        pwfile = directory / "pwfile"
        pwfile.write_text(password + "\n")
        if user is not None:
            os.chown(pwfile, pwd.getpwnam(user).pw_uid, -1)
        os.chmod(pwfile, 0o600)
        done = _run_as(
            user,
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
            ],
            timeout=120,
        )
        if done.returncode != 0:
            raise AssertionError(f"initdb failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        pwfile.unlink()
        server = PostgresServer(bin_dir, user, directory, password)
        server.start(attempts)
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
