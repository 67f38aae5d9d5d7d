"""The servers of the download benchmark: nginx on files written for the run, and the simulator.

Both serve the same bytes: the simulator's blobs (`pollkit.sim.transfer._blobs`, defined by size and
seed), which nginx gets as files on disk. Publishing a set hands back what a client needs and
what a check needs: each file's URL, name, size and sha256.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol

from benchmarks.simprocess import SimProcess, free_port
from pollkit.sim.transfer._blobs import blob_chunks, blob_sha256

__all__ = ["Blob", "FileSet", "Nginx", "Server", "Simulator", "nginx_version"]


@dataclass(frozen=True, slots=True)
class FileSet:
    """`count` files of `size` bytes each."""

    key: str
    count: int
    size: int

    @property
    def label(self) -> str:
        unit, scale = ("GB", 10**9) if self.size >= 10**9 else ("MB", 10**6)
        return f"{self.count} × {self.size / scale:g} {unit}"

    @property
    def total(self) -> int:
        return self.count * self.size

    def names(self) -> list[tuple[str, int]]:
        """(file name, blob seed) of each file."""
        return [(f"{self.key}-{seed:03d}.bin", seed) for seed in range(self.count)]


@dataclass(frozen=True, slots=True)
class Blob:
    """One published file: where to fetch it and what it must be once saved."""

    url: str
    name: str
    size: int
    sha256: str


class Server(Protocol):
    """A started server that can publish a set of files."""

    title: str

    def publish(self, files: FileSet) -> list[Blob]: ...

    def unpublish(self) -> None: ...


def nginx_version() -> str | None:
    """nginx's version (``1.22.1``), or None when nginx is not on PATH."""
    binary = shutil.which("nginx")
    if binary is None:
        return None
    reply = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    return reply.stderr.strip().rpartition("/")[2] or "?"  # "nginx version: nginx/1.22.1"


_NGINX_CONF = """\
daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root}/www;
    }}
}}
"""


class Nginx:
    """nginx on 127.0.0.1 with a generated minimal config (in a temporary directory of its own,
    removed on exit), serving the files of the set it publishes."""

    def __init__(self) -> None:
        self._port = free_port()
        self.title = f"nginx {nginx_version()} (sendfile, access log off, 1 worker)"

    def __enter__(self) -> Nginx:
        self._root = Path(tempfile.mkdtemp(prefix="bench-nginx-"))
        self._www = self._root / "www"
        (self._root / "tmp").mkdir()
        self._www.mkdir()
        # nginx's worker runs as `nobody` when started by root: it must be able to read the files.
        for directory in (self._root, self._www):
            directory.chmod(0o755)
        conf = self._root / "nginx.conf"
        conf.write_text(_NGINX_CONF.format(root=self._root, port=self._port))
        log = self._root / "error.log"
        argv = ["nginx", "-p", str(self._root), "-e", str(log), "-c", str(conf)]
        self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self._port), timeout=1):
                    return self
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    message = log.read_text(errors="replace").strip()
                    self._stop()
                    raise RuntimeError(f"nginx did not start: {message}") from None
                time.sleep(0.05)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self._root, ignore_errors=True)

    def publish(self, files: FileSet) -> list[Blob]:
        """Write the set's blobs as files (hashed as written) and return their URLs."""
        blobs = []
        for name, seed in files.names():
            digest = hashlib.sha256()
            path = self._www / name
            with path.open("wb") as out:
                for chunk in blob_chunks(files.size, seed):
                    digest.update(chunk)
                    out.write(chunk)
            path.chmod(0o644)
            url = f"http://127.0.0.1:{self._port}/{name}"
            blobs.append(Blob(url=url, name=name, size=files.size, sha256=digest.hexdigest()))
        os.sync()  # no write-back of the sources while clients are measured
        return blobs

    def unpublish(self) -> None:
        """Delete every published file."""
        for path in self._www.iterdir():
            path.unlink()


class Simulator:
    """The simulator in its own process, serving deterministic blobs on ``/_sim/blobs/{name}``."""

    title = "simulator (`/_sim/blobs`, a process of its own)"

    def __enter__(self) -> Simulator:
        self._sim = SimProcess().__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._sim.__exit__(exc_type, exc, tb)

    def _url(self, name: str, size: int, seed: int) -> str:
        return f"{self._sim.url}/_sim/blobs/{name}?size={size}&seed={seed}"

    def publish(self, files: FileSet) -> list[Blob]:
        """The set's URLs; the digests come from the blob generator itself."""
        return [
            Blob(
                url=self._url(name, files.size, seed),
                name=name,
                size=files.size,
                sha256=blob_sha256(files.size, seed),
            )
            for name, seed in files.names()
        ]

    def unpublish(self) -> None:
        """Nothing to do: blobs are generated per request."""
