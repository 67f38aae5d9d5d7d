"""`Client`: the blocking twin of `AsyncClient`.

Every call runs the async method on a private event loop in a background thread and waits for
it. That is why it also works where an event loop is already running in the calling thread (a
Jupyter cell), where ``asyncio.run`` would refuse.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import (
    AsyncGenerator,
    Callable,
    Coroutine,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

from pollkit._loopthread import LoopThread
from pollkit.batch._scheduler import BatchItem
from pollkit.batch.journal._open import JournalArgument
from pollkit.client._async import AsyncClient
from pollkit.display._progress import ProgressSink
from pollkit.download._downloader import SavedFile
from pollkit.errors import ConfigurationError
from pollkit.models import Event, JobState, Output, Result
from pollkit.policies import Cadence
from pollkit.providers.base import Provider, Request, Response, Submission
from pollkit.transport._http import UploadProgress

__all__ = ["Client"]

T = TypeVar("T")


def _shutdown(runner: LoopThread, client: AsyncClient) -> None:
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
        self._runner = LoopThread("pollkit-loop", owner="a pollkit Client")
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

    def start(self) -> None:
        """See `AsyncClient.start`."""
        self._run(self._async.start())

    def submit(
        self,
        spec: Mapping[str, Any],
        *,
        on_upload: UploadProgress | None = None,
        base_url: str | None = None,
    ) -> Submission:
        """See `AsyncClient.submit`."""
        return self._run(self._async.submit(spec, on_upload=on_upload, base_url=base_url))

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
        interval: float | None = None,
        on_state: Callable[[JobState], None] | None = None,
        base_url: str | None = None,
    ) -> JobState:
        """See `AsyncClient.wait`."""
        return self._run(
            self._async.wait(
                job_id,
                kind=kind,
                timeout=timeout,
                cadence=cadence,
                interval=interval,
                on_state=on_state,
                base_url=base_url,
            )
        )

    def send(
        self, request: Request | Sequence[Request], *, on_upload: UploadProgress | None = None
    ) -> Response:
        """See `AsyncClient.send`."""
        return self._run(self._async.send(request, on_upload=on_upload))

    def download(
        self,
        output: Output,
        directory: str | os.PathLike[str],
        *,
        name: str | None = None,
        job_id: str | None = None,
        progress: bool | ProgressSink = False,
    ) -> SavedFile:
        """See `AsyncClient.download`."""
        return self._run(
            self._async.download(output, directory, name=name, job_id=job_id, progress=progress)
        )

    def cancel(self, job_id: str, *, kind: str | None = None, base_url: str | None = None) -> None:
        """See `AsyncClient.cancel`."""
        self._run(self._async.cancel(job_id, kind=kind, base_url=base_url))

    def delete(
        self, job_id: str, *, kind: str | None = None, base_url: str | None = None
    ) -> JobState | None:
        """See `AsyncClient.delete`."""
        return self._run(self._async.delete(job_id, kind=kind, base_url=base_url))

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
        submitted_at: datetime | None = None,
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
                submitted_at=submitted_at,
                base_url=base_url,
            )
        )

    def events(
        self,
        items: Iterable[BatchItem],
        *,
        download_directory: str | os.PathLike[str],
        journal: JournalArgument = True,
        concurrency: int = 16,
        rate: float | None = None,
        timeout: float | None = None,
        cadence: Cadence | None = None,
        download_outputs: bool = True,
        resubmit_ambiguous: bool = False,
        on_event: Callable[[Event], None] | None = None,
        progress: bool | ProgressSink = False,
        join: bool = False,
    ) -> Iterator[Event]:
        """See `AsyncClient.events`: every event of a batch, as it happens.

        Stopping the iteration early (``break``) stops the batch; its journal stays consistent.
        """
        return self._iterate(
            self._async.events(
                items,
                download_directory=download_directory,
                journal=journal,
                concurrency=concurrency,
                rate=rate,
                timeout=timeout,
                cadence=cadence,
                download_outputs=download_outputs,
                resubmit_ambiguous=resubmit_ambiguous,
                on_event=on_event,
                progress=progress,
                join=join,
            )
        )

    def run(
        self,
        items: Iterable[BatchItem],
        *,
        download_directory: str | os.PathLike[str],
        journal: JournalArgument = True,
        concurrency: int = 16,
        rate: float | None = None,
        timeout: float | None = None,
        cadence: Cadence | None = None,
        download_outputs: bool = True,
        resubmit_ambiguous: bool = False,
        on_event: Callable[[Event], None] | None = None,
        progress: bool | ProgressSink = False,
        join: bool = False,
    ) -> Iterator[Result]:
        """See `AsyncClient.run`: yields results as jobs finish.

        Stopping the iteration early (``break``) stops the batch; its journal stays consistent.
        """
        return self._iterate(
            self._async.run(
                items,
                download_directory=download_directory,
                journal=journal,
                concurrency=concurrency,
                rate=rate,
                timeout=timeout,
                cadence=cadence,
                download_outputs=download_outputs,
                resubmit_ambiguous=resubmit_ambiguous,
                on_event=on_event,
                progress=progress,
                join=join,
            )
        )

    def _iterate(self, stream: AsyncGenerator[T, None]) -> Iterator[T]:
        if not self._finalizer.alive:
            raise ConfigurationError("this Client is closed")
        return self._runner.iterate(stream)

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
