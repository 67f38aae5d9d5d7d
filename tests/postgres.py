"""A real PostgreSQL server for the tests: started once per session, stopped at its end.

Debian's ``postgresql`` package puts ``initdb`` and ``pg_ctl`` in ``/usr/lib/postgresql/N/bin``
(not on ``PATH``); ``pg_ctl`` refuses to run as root, so as root the server runs as the
``postgres`` user (``runuser``) in a temporary data directory it owns. It listens on a free
port of 127.0.0.1 only, with durability off (fsync, full-page writes): a test server trades a
power cut for start-up speed. Each test that wants a journal gets a fresh database of its own.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from tests.helpers import free_port

_INSTALL = (
    "PostgreSQL's server binaries (initdb, pg_ctl) were not found in /usr/lib/postgresql/*/bin"
    " or on PATH: install them (Debian/Ubuntu: apt-get install -y postgresql; .ci/run does)"
)


def find_bin_dir() -> Path:
    """The directory of ``initdb`` and ``pg_ctl``, the newest version's when several."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).parent
    raise RuntimeError(_INSTALL)


class PostgresServer:
    """One throw-away server; `start` it, make databases, `stop` it (also on failure)."""

    def __init__(self) -> None:
        self.bin = find_bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="pollkit-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.user = "pollkit"
        self._as: list[str] = []
        if os.geteuid() == 0:
            # pg_ctl refuses root: the server runs as an unprivileged user that owns its files.
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise RuntimeError("as root, the server needs a 'postgres' user") from exc
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            os.chmod(self.root, 0o755)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            self.user,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        )

    def _run(self, tool: str, *args: str) -> None:
        command = [*self._as, str(self.bin / tool), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr[-2000:]}\n{log}")

    @property
    def dsn(self) -> str:
        """The server's maintenance database (``postgres``)."""
        return self.dsn_of("postgres")

    def dsn_of(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = (
            f"-k {self.root} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c full_page_writes=off -c synchronous_commit=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop: ``fast`` (connections cut, every commit kept: a restart loses nothing even
        with ``synchronous_commit=off``), or ``immediate`` (a crash) when the data goes."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def new_database(self) -> str:
        """A fresh, empty database; its DSN."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.dsn, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.dsn_of(name)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
