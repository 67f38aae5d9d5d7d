"""The simulator in a process of its own, for benchmarks.

A client and a simulator sharing one event loop (or one GIL) measure each other's CPU use as
much as the client's behaviour; a separate process, like a real server, does not.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from types import TracebackType
from typing import Any


def free_port() -> int:
    """A TCP port of 127.0.0.1 nothing listens on (until something binds it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class SimProcess:
    """``pollkit sim`` on a free port, stopped with SIGTERM on exit.

    Args:
        scenario: Named scenario of the simulator.
        time_scale: Simulated seconds per real second.
        seed: Seed of every random choice.
        video_bytes: Size of each generated video file; None: the scenario's.
    """

    def __init__(
        self,
        scenario: str = "default",
        *,
        time_scale: float = 1.0,
        seed: int = 0,
        video_bytes: int | None = None,
    ) -> None:
        self._argv = [
            sys.executable,
            "-m",
            "pollkit",
            "sim",
            "--port",
            "0",
            "--scenario",
            scenario,
            "--time-scale",
            str(time_scale),
            "--seed",
            str(seed),
            *([] if video_bytes is None else ["--video-bytes", str(video_bytes)]),
        ]
        self.time_scale = time_scale
        self.url = ""
        self.api_key = ""
        self._anchor = (0.0, 0.0)

    def __enter__(self) -> SimProcess:
        self._proc = subprocess.Popen(self._argv, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        first = self._proc.stdout.readline().split()  # pollkit sim: serving URL api_key=KEY
        self.url, self.api_key = first[3], first[4].split("=", 1)[1]
        stats = self.stats()
        self._anchor = (time.monotonic(), stats["now"])
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._proc.send_signal(signal.SIGTERM)
        self._proc.wait(timeout=10)

    def stats(self) -> dict[str, Any]:
        """The simulator's ``/_sim/stats``."""
        with urllib.request.urlopen(f"{self.url}/_sim/stats", timeout=30) as reply:
            result: dict[str, Any] = json.load(reply)
        return result

    def now(self) -> float:
        """The simulator's clock, read locally (anchored on one stats call at start)."""
        real, simulated = self._anchor
        return simulated + (time.monotonic() - real) * self.time_scale
