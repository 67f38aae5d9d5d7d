"""What every `pollkit` command shares: exit statuses, where a key comes from, errors → exit.

Each command documents the statuses it uses in its ``--help``; a value means the same thing in
every command that uses it. (`pollkit pixyz` keeps the statuses of the upstream PiXYZ client it
mirrors.)
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

from pollkit.errors import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    DownloadError,
    NotFound,
    PollTimeout,
    TransportError,
    UnsupportedOperation,
)

__all__ = ["ExitCode", "exit_code_for", "fail", "key_from", "run_until_interrupted"]

_T = TypeVar("_T")


class ExitCode(enum.IntEnum):
    """The exit statuses of pollkit's commands."""

    OK = 0
    COMPLETE = 0  # check-result's name for OK: the job completed
    JOB_ERROR = 1  # a job ended in error; for run, some job of the batch did not complete
    USAGE = 2  # bad arguments or input; nothing was sent
    JOB_CANCELED = 3
    TIMEOUT = 4  # the deadline passed before the job finished
    NOT_FINISHED = 5  # not waited for, and not finished yet
    API_ERROR = 6  # the API refused a request (a refused key too, where 9 is not used)
    NETWORK_ERROR = 7  # no usable reply: connection, timeout or a malformed reply
    DOWNLOAD_FAILED = 8
    AUTH_FAILED = 9
    NOT_FOUND = 10
    UNSUPPORTED = 11  # the API or the server cannot do that
    JOURNAL_BUSY = 75  # another live run holds the journal (sysexits' EX_TEMPFAIL: retry later)
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)


# Most specific first: the first class an error is an instance of decides.
_BY_ERROR: tuple[tuple[type[BaseException], ExitCode], ...] = (
    (UnsupportedOperation, ExitCode.UNSUPPORTED),  # a ConfigurationError too
    (ConfigurationError, ExitCode.USAGE),
    (PollTimeout, ExitCode.TIMEOUT),
    (DownloadError, ExitCode.DOWNLOAD_FAILED),
    (TransportError, ExitCode.NETWORK_ERROR),
    (AuthenticationError, ExitCode.AUTH_FAILED),
    (NotFound, ExitCode.NOT_FOUND),
    (APIError, ExitCode.API_ERROR),
)
_DETAILED = frozenset({ExitCode.UNSUPPORTED, ExitCode.AUTH_FAILED, ExitCode.NOT_FOUND})


def exit_code_for(error: BaseException, *, detailed: bool = True) -> ExitCode:
    """The status a command exits with for `error`.

    Args:
        error: What stopped the command.
        detailed: Tell a refused key (9), an unknown id (10) and an unsupported operation (11)
            apart; False reports the first two as API_ERROR (6) and the last as USAGE (2), as
            check-result always has.
    """
    for kind, code in _BY_ERROR:
        if isinstance(error, kind) and (detailed or code not in _DETAILED):
            return code
    return ExitCode.API_ERROR


def key_from(given: str | None, variable: str) -> str:
    """The API key: the one given on the command line, else the environment's (or "")."""
    return given or os.environ.get(variable, "")


def fail(command: str, error: BaseException | str, code: ExitCode) -> int:
    """Print ``pollkit <command>: <error>`` on stderr; return `code` for the command to exit."""
    print(f"pollkit {command}: {error}", file=sys.stderr)
    return int(code)


def run_until_interrupted(coro: Coroutine[Any, Any, _T]) -> _T:
    """``asyncio.run(coro)``, where Ctrl-C cancels `coro` and lets it clean up on every Python.

    From 3.11 `asyncio.run` does this itself; 3.10's raises KeyboardInterrupt wherever the loop
    happens to be and then cancels every task at once, the ones a batch shields to let its
    submits on the wire finish included. Here SIGINT cancels only the main task, which stops
    the batch as it would stop on any error, and KeyboardInterrupt is raised once it has.

    Raises:
        KeyboardInterrupt: Ctrl-C came (after `coro` finished cleaning up).
    """

    async def main() -> _T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        interrupted = False

        def interrupt() -> None:
            nonlocal interrupted
            interrupted = True
            task.cancel()

        handled = False
        # Not on Windows event loops: there Ctrl-C stays a KeyboardInterrupt, as it was.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, interrupt)
            handled = True
        try:
            return await coro
        except asyncio.CancelledError:
            if interrupted:
                raise KeyboardInterrupt from None
            raise
        finally:
            if handled:
                loop.remove_signal_handler(signal.SIGINT)

    return asyncio.run(main())
