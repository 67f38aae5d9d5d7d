"""`Client`: the blocking twin of `AsyncClient`.

Every call runs the async method on a private event loop in a background thread and waits for
it. That is why it also works where an event loop is already running in the calling thread (a
Jupyter cell), where ``asyncio.run`` would refuse.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Coroutine, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, TypeVar

from pollkit.client import AsyncClient
from pollkit.errors import ConfigurationError
from pollkit.models import JobState, Result
from pollkit.policies import Cadence
from pollkit.progress import ProgressSink
from pollkit.providers.base import Provider, Submission
from pollkit.scheduler import BatchItem

__all__ = ["Client"]

T = TypeVar("T")


class _LoopThread:
    """An event loop running forever on a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="pollkit-loop", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise ConfigurationError("a pollkit Client cannot be called from its own loop thread")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # Ctrl-C in the caller stops the work too
            raise

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout=10)


def _shutdown(runner: _LoopThread, client: AsyncClient) -> None:
    try:
        runner.run(client.aclose())
    finally:
        runner.stop()


class Client:
    """Blocking client: the same methods and arguments as `AsyncClient`.

    Use it as ``with Client(provider) as client:``; a forgotten client is closed when it is
    garbage-collected.
    """

    def __init__(self, provider: Provider, **kwargs: Any) -> None:
        self._runner = _LoopThread()
        try:
            self._async = AsyncClient(provider, **kwargs)
        except BaseException:
            self._runner.stop()
            raise
        self._finalizer = weakref.finalize(self, _shutdown, self._runner, self._async)

    @property
    def provider(self) -> Provider:
        """The API this client talks to."""
        return self._async.provider

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session and stop the background loop (idempotent)."""
        self._finalizer()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if not self._finalizer.alive:
            coro.close()
            raise ConfigurationError("this Client is closed")
        return self._runner.run(coro)

    def submit(self, spec: Mapping[str, Any], *, base_url: str | None = None) -> Submission:
        """See `AsyncClient.submit`."""
        return self._run(self._async.submit(spec, base_url=base_url))

    def get(self, job_id: str, *, kind: str | None = None, base_url: str | None = None) -> JobState:
        """See `AsyncClient.get`."""
        return self._run(self._async.get(job_id, kind=kind, base_url=base_url))

    def wait(
        self,
        job_id: str,
        *,
        kind: str | None = None,
        timeout: float | None = None,
        cadence: Cadence | None = None,
        base_url: str | None = None,
    ) -> JobState:
        """See `AsyncClient.wait`."""
        return self._run(
            self._async.wait(job_id, kind=kind, timeout=timeout, cadence=cadence, base_url=base_url)
        )

    def cancel(self, job_id: str, *, kind: str | None = None, base_url: str | None = None) -> None:
        """See `AsyncClient.cancel`."""
        self._run(self._async.cancel(job_id, kind=kind, base_url=base_url))

    def delete(self, job_id: str, *, kind: str | None = None, base_url: str | None = None) -> None:
        """See `AsyncClient.delete`."""
        self._run(self._async.delete(job_id, kind=kind, base_url=base_url))

    def check_result(
        self,
        job_id: str,
        wait_for_completion: bool = True,
        download_outputs: bool = True,
        download_directory: str | os.PathLike[str] | None = None,
        *,
        kind: str | None = None,
        timeout: float | None = None,
        cadence: Cadence | None = None,
        progress: bool | ProgressSink = False,
        base_url: str | None = None,
    ) -> Result:
        """See `AsyncClient.check_result`."""
        return self._run(
            self._async.check_result(
                job_id,
                wait_for_completion,
                download_outputs,
                download_directory,
                kind=kind,
                timeout=timeout,
                cadence=cadence,
                progress=progress,
                base_url=base_url,
            )
        )

    def run(self, items: Iterable[BatchItem], **kwargs: Any) -> Iterator[Result]:
        """See `AsyncClient.run`: the same arguments; yields results as jobs finish.

        Stopping the iteration early (``break``) stops the batch; its journal stays consistent.
        """
        stream = self._async.run(items, **kwargs)

        async def step() -> Result:
            return await stream.__anext__()

        try:
            while True:
                try:
                    yield self._run(step())
                except StopAsyncIteration:
                    return
        finally:
            if self._finalizer.alive:
                self._runner.run(stream.aclose())

    def submit_and_check(
        self,
        spec: Mapping[str, Any],
        download_directory: str | os.PathLike[str] | None = None,
        **kwargs: Any,
    ) -> Result:
        """See `AsyncClient.submit_and_check`."""
        return self._run(self._async.submit_and_check(spec, download_directory, **kwargs))

    def __repr__(self) -> str:
        return f"Client({self.provider!r})"
