"""`PixyzClient`: `AsyncClient` plus the PiXYZ Scheduler's routes that are not about waiting.

Submitting, reading, waiting, batches and downloads are the generic client's. The `Pixyz`
provider builds the requests of the other routes and parses their replies (no I/O); this
client sends them through the same session, retries, error mapping and downloader, so that
every PiXYZ route is one awaitable call::

    async with PixyzClient(Pixyz(api_key=key, base_url=url)) as pixyz:
        print(await pixyz.processes())
        job = await pixyz.submit({"process": "convert_file", "file": "part.step"})
        state = await pixyz.wait(job.job_id, interval=1.0)
        await pixyz.download_archive(job.job_id, "out")

The `pollkit pixyz` command is built on it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from pollkit.client._async import AsyncClient
from pollkit.display._progress import ProgressSink
from pollkit.download._downloader import SavedFile
from pollkit.errors import ConfigurationError
from pollkit.models import JobState
from pollkit.providers.pixyz import Pixyz, parse_metrics

__all__ = ["PixyzClient"]


class PixyzClient(AsyncClient):
    """An `AsyncClient` for `Pixyz`, with every other PiXYZ Scheduler route.

    Args:
        provider: The PiXYZ provider.
        **kwargs: As for `AsyncClient`.

    Raises:
        ConfigurationError: `provider` is not a `Pixyz`, or another argument is invalid.
    """

    def __init__(self, provider: Pixyz, **kwargs: Any) -> None:
        if not isinstance(provider, Pixyz):
            raise ConfigurationError(f"PixyzClient needs a Pixyz provider, got {provider!r}")
        super().__init__(provider, **kwargs)
        self.pixyz = provider

    async def welcome(self) -> str:
        """The text of ``GET /`` (``Welcome to PiXYZ API v…!``)."""
        response = await self.send(self.pixyz.welcome_request())
        return response.body.decode("utf-8", "replace").strip()

    async def processes(self) -> list[str]:
        """The names of the server's processes (``GET /processes``)."""
        response = await self.send(self.pixyz.processes_request())
        return self.pixyz.parse_processes(response)

    async def process_doc(self, process: str) -> str:
        """The documentation of one process (``GET /processes/{name}``).

        Raises:
            InvalidRequest: No such process (400 ``Invalid process``).
        """
        response = await self.send(self.pixyz.process_doc_request(process))
        return self.pixyz.parse_doc(response)

    async def jobs(self) -> list[dict[str, Any]]:
        """Every job the backend knows, packaging tasks included (``GET /jobs``)."""
        response = await self.send(self.pixyz.jobs_request())
        return self.pixyz.parse_jobs(response)

    async def details(self, job_id: str) -> JobState:
        """The job's details (``GET /jobs/{uuid}/details``): steps, times and result are in
        ``raw``; ``error`` is the traceback there."""
        response = await self.send(self.pixyz.details_request(job_id))
        return self.pixyz.parse_details(response, datetime.now(timezone.utc))

    async def outputs(self, job_id: str) -> list[str]:
        """The names in the job's outputs directory (``GET /jobs/{uuid}/outputs``).

        An unknown uuid lists nothing (and the server creates its directory).
        """
        response = await self.send(self.pixyz.outputs_list_request(job_id))
        return self.pixyz.parse_output_names(response)

    async def download_file(
        self,
        job_id: str,
        path: str,
        directory: str | os.PathLike[str],
        *,
        name: str | None = None,
        progress: bool | ProgressSink = False,
    ) -> SavedFile:
        """Download one output file (``GET /jobs/{uuid}/outputs/{path}``) into `directory`.

        Args:
            job_id: The job.
            path: The file's path in the job's outputs directory.
            directory: Where to save it (created if missing).
            name: The file name (default: the path's last part); never a path.
            progress: True for tqdm bars, or a sink.

        Raises:
            UnsafePath: The name is not a plain file name.
            NotFound: No such file.
        """
        output = self.pixyz.output_file(job_id, path)
        file_name = name or path.rsplit("/", 1)[-1]
        return await self.download(
            output, directory, name=file_name, job_id=job_id, progress=progress
        )

    async def download_archive(
        self,
        job_id: str,
        directory: str | os.PathLike[str],
        *,
        name: str | None = None,
        progress: bool | ProgressSink = False,
    ) -> SavedFile:
        """Download the zip of the job's outputs, waiting while the server packs it (425) on
        the client's `DownloadPolicy.not_ready` cadence; extracted if the policy says so.

        Raises:
            NotReady: Still being packed at that cadence's deadline.
            NotFound: The server has no directory for this job.
        """
        output = self.pixyz.archive_output(job_id)
        return await self.download(
            output, directory, name=name or output.name, job_id=job_id, progress=progress
        )

    async def task_meta(self, job_id: str) -> dict[str, Any]:
        """The backend's raw record of the job (``GET /backend/get_task_meta/{uuid}``)."""
        response = await self.send(self.pixyz.task_meta_request(job_id))
        return self.pixyz.parse_task_meta(response)

    async def callback(self, payload: Mapping[str, Any]) -> None:
        """Post a JSON object to the development echo (``POST /dev/callback``)."""
        await self.send(self.pixyz.callback_request(payload))

    async def metrics_text(self) -> str:
        """The Prometheus text of ``GET /metrics``."""
        response = await self.send(self.pixyz.metrics_request())
        return response.body.decode("utf-8", "replace")

    async def metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """``GET /metrics``, parsed: samples ``(labels, value)`` by metric name."""
        return parse_metrics(await self.metrics_text())
