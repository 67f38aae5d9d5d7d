"""The `pollkit pixyz` subcommands: argument handling and printing around `PixyzClient`.

Human output goes to stdout, progress bars and errors to stderr. In batch mode (``exec -b``)
stdout carries only the job uuid (and, with ``-r``, the details JSON after it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

from pollkit import __version__
from pollkit.cli._common import ExitCode, key_from
from pollkit.client._pixyz import PixyzClient
from pollkit.display._progress import NullProgress, TqdmProgress
from pollkit.errors import ConfigurationError, InvalidRequest, NotReady, PollkitError, PollTimeout
from pollkit.models import JobState
from pollkit.policies import Cadence, DownloadPolicy
from pollkit.providers.pixyz import Pixyz

__all__ = ["BATCH_EXIT_CODES", "CLIENT_VERSION", "COMMANDS"]

#: What the original client prints for `version`.
CLIENT_VERSION = "pixyz-scheduler-client v0.0.8"
#: ``exec -b -w``'s exit code by final native status, else 17 (docs/apis/pixyz.md#exit-codes).
BATCH_EXIT_CODES = {
    "SUCCESS": 0,
    "FAILURE": 10,
    "REVOKED": 11,
    "RETRY": 12,
    "PENDING": 13,
    "STARTED": 14,
    "RECEIVED": 15,
    "REJECTED": 16,
}
_OTHER_STATUS = 17
# The original asks for the archive once, then up to 30 more times while it answers 425.
_ARCHIVE_RETRIES = 30


class _Failure(Exception):
    """Ends a command with a message on stderr and a status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _dump(payload: Any) -> str:
    return json.dumps(payload, indent=2)


def _token(args: argparse.Namespace) -> str:
    token = key_from(getattr(args, "token", None), Pixyz.ENV_API_KEY)
    if not token.strip():
        raise _Failure(
            f"a token is required: -t TOKEN or ${Pixyz.ENV_API_KEY}", code=ExitCode.USAGE
        )
    return str(token)


@contextlib.asynccontextmanager
async def _connect(
    args: argparse.Namespace, *, auth: bool = True, archive_interval: float | None = None
) -> AsyncIterator[PixyzClient]:
    # Routes without auth never send the key, so a placeholder satisfies the provider.
    key = _token(args) if auth else "unused"
    provider = Pixyz(api_key=key, base_url=args.url, poll_details=True)
    policy = DownloadPolicy(existing="overwrite")
    if archive_interval is not None:
        not_ready = Cadence(
            initial=archive_interval,
            maximum=archive_interval,
            multiplier=1.0,
            jitter=0.0,
            timeout=archive_interval * _ARCHIVE_RETRIES,
        )
        policy = DownloadPolicy(existing="overwrite", not_ready=not_ready)
    async with PixyzClient(provider, download=policy) as pixyz:
        yield pixyz


def _params(args: argparse.Namespace) -> dict[str, Any]:
    raw = getattr(args, "params", None)
    if raw is None:
        return {}
    try:
        params = json.loads(raw)
    except ValueError as exc:
        raise _Failure(f"-p is not valid JSON: {exc}") from exc
    if not isinstance(params, dict):
        raise _Failure(f"-p must be a JSON object, got {type(params).__name__}")
    return params


def _spec(args: argparse.Namespace, process: str, **extra: Any) -> dict[str, Any]:
    config = {
        "entrypoint": getattr(args, "entrypoint", None) or "main",
        "queue": args.queue,
        "time_limit": args.time_limit or 3600,
    }
    spec: dict[str, Any] = {"process": process, "params": _params(args), "config": config}
    if args.alias:
        spec["name"] = args.alias
    if getattr(args, "input", None):
        spec["file"] = args.input
    return spec | extra


def _bar(args: argparse.Namespace, **kwargs: Any) -> Any:
    from tqdm import tqdm

    return tqdm(file=sys.stderr, disable=not args.progress, dynamic_ncols=True, **kwargs)


async def _submit(pixyz: PixyzClient, args: argparse.Namespace, spec: dict[str, Any]) -> str:
    total = pixyz.provider.submit_request(spec).upload_bytes  # also checks the spec
    with _bar(args, total=total, desc="upload", unit="B", unit_scale=True, leave=False) as bar:
        submission = await pixyz.submit(spec, on_upload=bar.update)
    return submission.job_id


async def _watch(pixyz: PixyzClient, args: argparse.Namespace, job_id: str) -> JobState:
    """Watch with a bar redrawn in place; PollTimeout (with the last state) at --timeout."""
    with _bar(args, total=100, bar_format="{desc} [{elapsed}]") as bar:

        def draw(state: JobState) -> None:
            steps = state.raw.get("steps") or []
            info = steps[-2]["info"] if len(steps) > 1 else ""
            percent = round((state.progress or 0.0) * 100)
            bar.set_description_str(
                f"Job [ {job_id} ] progress: {percent:03d}, status: {state.native_status} ({info})"
            )

        return await pixyz.wait(job_id, interval=args.interval, timeout=args.timeout, on_state=draw)


def _saved(path: Path) -> None:
    print(f"saved {path}")


def _write_text(target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")


# -- commands -------------------------------------------------------------------------------


async def _version(args: argparse.Namespace) -> int:
    print(f"{CLIENT_VERSION} (pollkit {__version__})")
    return 0


async def _list(args: argparse.Namespace) -> int:
    async with _connect(args, auth=False) as pixyz:
        print(_dump({"processes": await pixyz.processes()}))
    return 0


async def _doc(args: argparse.Namespace) -> int:
    async with _connect(args, auth=False) as pixyz:
        try:
            print(await pixyz.process_doc(args.name))
        except InvalidRequest as exc:
            raise _Failure(f"process {args.name!r} not found") from exc
    return 0


async def _jobs(args: argparse.Namespace) -> int:
    async with _connect(args) as pixyz:
        print(_dump({"jobs": await pixyz.jobs()}))
    return 0


async def _details(args: argparse.Namespace) -> int:
    async with _connect(args) as pixyz:
        print(_dump(dict((await pixyz.details(args.job)).raw)))
    return 0


async def _status(args: argparse.Namespace) -> int:
    async with _connect(args) as pixyz:
        if not args.wait:
            print(_dump(dict((await pixyz.details(args.job)).raw)))
            return 0
        try:
            state = await _watch(pixyz, args, args.job)
        except PollTimeout as exc:
            if exc.state is not None:
                print(_dump(dict(exc.state.raw)))
            raise
    if state.raw.get("error"):
        print(f"Error: {state.raw['error']}")
    print(_dump(dict(state.raw)))
    return 0


async def _outputs(args: argparse.Namespace) -> int:
    async with _connect(args) as pixyz:
        print(_dump({"outputs": await pixyz.outputs(args.job)}))
    return 0


async def _download(args: argparse.Namespace) -> int:
    target = Path(args.output)
    async with _connect(args) as pixyz:
        saved = await pixyz.download_file(
            args.job, args.file, target.parent, name=target.name, progress=args.progress
        )
    _saved(saved.path)
    return 0


async def _download_all(args: argparse.Namespace) -> int:
    target = Path(args.output)
    async with _connect(args, archive_interval=args.interval) as pixyz:
        try:
            saved = await pixyz.download_archive(
                args.job, target.parent, name=target.name, progress=args.progress
            )
        except NotReady:
            print("The outputs packaging task job is running")
            return 0
    _saved(saved.path)
    return 0


def _batch_code(native: str) -> int:
    return BATCH_EXIT_CODES.get(native, _OTHER_STATUS)


async def _exec(args: argparse.Namespace) -> int:
    spec = _spec(args, "custom", script=args.script)
    async with _connect(args) as pixyz:
        if not args.batch:
            print(f"PiXYZ Scheduler client (pollkit {__version__}): executing {args.script}")
        job_id = await _submit(pixyz, args, spec)
        print(job_id if args.batch else f"Job [ {job_id} ] started", flush=True)
        if not args.wait:
            return 0
        try:
            state = await _watch(pixyz, args, job_id)
        except PollTimeout as exc:
            if not args.batch or exc.state is None:
                raise
            print(f"pollkit pixyz exec: {exc}", file=sys.stderr)
            state = exc.state
    if state.raw.get("error") and not args.batch:
        print(f"Error: {state.raw['error']}")
    if args.result:
        print(_dump(dict(state.raw)))
    return _batch_code(state.native_status) if args.batch else 0


async def _process(args: argparse.Namespace) -> int:
    spec = _spec(args, args.name)
    async with _connect(args) as pixyz:
        print(f"start {args.name} process")
        job_id = await _submit(pixyz, args, spec)
        if not args.wait:
            print(f"Job [ {job_id} ] submitted")
            return 0
        state = await _watch(pixyz, args, job_id)
    print(f"Job [ {job_id} ] completed")
    print(_dump(dict(state.raw)))
    return 0


async def _run_to_success(
    pixyz: PixyzClient, args: argparse.Namespace, spec: dict[str, Any]
) -> JobState:
    job_id = await _submit(pixyz, args, spec)
    print(f"Job [ {job_id} ] started")
    state = await _watch(pixyz, args, job_id)
    if state.native_status != "SUCCESS":
        reason = state.raw.get("error") or "no error given"
        raise _Failure(f"job {job_id} ended in {state.native_status}: {reason}")
    return state


async def _convert(args: argparse.Namespace) -> int:
    async with _connect(args) as pixyz:
        state = await _run_to_success(pixyz, args, _spec(args, "convert_file"))
        result = state.raw.get("result")
        output = result.get("output") if isinstance(result, dict) else None
        if not args.output:
            print(_dump(dict(state.raw)))
            return 0
        if not isinstance(output, str):
            raise _Failure(f"job {state.job_id}: the result names no output file")
        target = Path(args.output)
        saved = await pixyz.download_file(
            state.job_id, output, target.parent, name=target.name, progress=args.progress
        )
    _saved(saved.path)
    return 0


async def _thumbnails(args: argparse.Namespace) -> int:
    async with _connect(args) as pixyz:
        state = await _run_to_success(pixyz, args, _spec(args, "generate_thumbnails"))
        names = await pixyz.outputs(state.job_id)
        if not args.output:
            print(_dump({"outputs": names}))
            return 0
        folder = Path(args.output)  # created, with its parents, by the downloads
        # One set of bars (total bytes, a bar per file in flight) for all of the files.
        sink = TqdmProgress(jobs=False, file=sys.stderr) if args.progress else NullProgress()
        try:
            saved = await asyncio.gather(
                *(
                    pixyz.download_file(state.job_id, name, folder, name=name, progress=sink)
                    for name in names
                )
            )
        finally:
            sink.close()
        for one in saved:
            _saved(one.path)
    return 0


async def _metadata(args: argparse.Namespace) -> int:
    async with _connect(args) as pixyz:
        state = await _run_to_success(pixyz, args, _spec(args, "generate_metadata"))
    result = state.raw.get("result")
    metadata = result.get("metadata") if isinstance(result, dict) else None
    if metadata is None:
        raise _Failure(f"job {state.job_id}: the result has no metadata")
    text = _dump(metadata)
    if not args.output:
        print(text)
        return 0
    target = Path(args.output)
    await asyncio.to_thread(_write_text, target, text + "\n")
    _saved(target)
    return 0


def _command(
    name: str, body: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return asyncio.run(body(args))
        except _Failure as exc:
            print(f"pollkit pixyz {name}: {exc}", file=sys.stderr)
            return exc.code
        except ConfigurationError as exc:
            print(f"pollkit pixyz {name}: {exc}", file=sys.stderr)
            return 1
        except PollkitError as exc:
            print(f"pollkit pixyz {name}: {exc}", file=sys.stderr)
            return 1

    return run


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    name: _command(name, body)
    for name, body in {
        "version": _version,
        "list": _list,
        "doc": _doc,
        "jobs": _jobs,
        "status": _status,
        "details": _details,
        "outputs": _outputs,
        "download": _download,
        "download_all": _download_all,
        "exec": _exec,
        "process": _process,
        "convert": _convert,
        "thumbnails": _thumbnails,
        "metadata": _metadata,
    }.items()
}
