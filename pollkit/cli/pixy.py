"""`pollkit pixy generate|get|list|update|delete`: the Pixy API from the shell.

Every action prints JSON on stdout and errors on stderr, and exits with a documented status
(`ExitCode`). The key comes from ``--api-key`` or ``$PIXY_API_KEY`` and is never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pollkit.cli._common import ExitCode, exit_code_for, fail, key_from
from pollkit.client._pixy import PixyClient
from pollkit.errors import (
    ConfigurationError,
    PollkitError,
)
from pollkit.models import JobState, Result, Status
from pollkit.policies import Cadence, RetryPolicy
from pollkit.providers.pixy import KINDS, Pixy

__all__ = ["ExitCode", "register"]  # ExitCode: pollkit.cli._common's, for callers


_EPILOG = """exit status:
  0   done (generate --wait: the job completed and its outputs were saved)
  1   generate --wait: the job ended in error
  2   bad usage: invalid arguments or properties, empty API key, malformed URL
      (nothing was sent)
  3   generate --wait: the job was canceled (or deleted before it finished)
  4   generate --wait: the deadline (--timeout) passed first
  6   the API refused a request (other 4xx/5xx, after retries)
  7   no usable reply from the API (connection failure, timeout, malformed reply)
  8   an output could not be downloaded or saved
  9   the API key was refused (the key check or a 401/403)
  10  no such job (unknown, deleted or not yours)
  11  the server does not support the operation (update where PATCH answers 405)

environment: PIXY_API_KEY, PIXY_BASE_URL and PIXY_SSO_URL stand in for --api-key,
--base-url and --sso-url. Output is JSON on stdout; errors go to stderr."""

_PROPERTY_FLAGS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("--engine", "engine", {}),
    ("--aspect-ratio", "aspect_ratio", {"help": "image: width:height, e.g. 16:9"}),
    ("--delineation", "delineation", {"help": "image: the prompt"}),
    ("--context", "context", {"type": json.loads, "help": "image: JSON list of objects"}),
    ("--enhance-prompt", "enhance_prompt", {"action": argparse.BooleanOptionalAction}),
    ("--user-prompt", "user_prompt", {"help": "video: the prompt"}),
    ("--image-url", "image_url", {"help": "video: the image to animate"}),
    ("--url", "url", {"help": "subtitle: the media to transcribe"}),
    ("--source-language", "source_language", {"help": "subtitle: auto or a language"}),
    ("--target-language", "target_language", {"help": "subtitle: a language"}),
    ("--diarization", "diarization", {"action": argparse.BooleanOptionalAction}),
    ("--enhanced", "enhanced", {"action": argparse.BooleanOptionalAction}),
    ("--meta-data", "meta_data", {"type": json.loads, "help": "video/subtitle: JSON object"}),
    ("--webhook-url", "webhook_url", {"help": "video/subtitle: POSTed the item on each save"}),
)


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--api-key", default=None, help="API key (default: $PIXY_API_KEY)")
    common.add_argument("--base-url", default=None, help="media API URL ($PIXY_BASE_URL)")
    common.add_argument(
        "--sso-url", default=None, help="key-check host ($PIXY_SSO_URL; default: see Pixy)"
    )
    common.add_argument("--retries", type=int, default=None, help="retries of a failed request")
    return common


def _with_type(parser: argparse.ArgumentParser, required: bool) -> None:
    parser.add_argument(
        "--type",
        choices=KINDS,
        default="image" if required else None,
        help="job type" + (" (default: image)" if required else " (default: try each)"),
    )


def register(sub: Any) -> None:
    """Add the `pixy` command to the `pollkit` parser."""
    pixy: argparse.ArgumentParser = sub.add_parser(
        "pixy",
        help="generate, read, list, update and delete Pixy jobs",
        description="The Pixy API (images, videos, subtitles). JSON on stdout.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = pixy.add_subparsers(dest="pixy_action", metavar="ACTION", required=True)
    common = _common()
    fmt = argparse.RawDescriptionHelpFormatter

    def action(name: str, text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(
            name, parents=[common], help=text, description=text, epilog=_EPILOG,
            formatter_class=fmt,
        )  # fmt: skip
        parser.set_defaults(func=run)
        return parser

    generate = action("generate", "create a job; with --wait, wait for it and save its outputs")
    _with_type(generate, required=True)
    generate.add_argument("--json", default=None, help="properties as a JSON object, or @FILE")
    for flag, dest, extra in _PROPERTY_FLAGS:
        generate.add_argument(flag, dest=f"prop_{dest}", default=None, **extra)
    generate.add_argument("--wait", action="store_true", help="wait until the job finishes")
    generate.add_argument("--download-dir", default=None, help="save outputs here (implies --wait)")
    generate.add_argument("--timeout", type=float, default=None, help="give up after N seconds")
    generate.add_argument("--poll-interval", type=float, default=None, help="first poll wait, s")
    generate.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars on stderr (default: when stderr is a terminal)",
    )

    get = action("get", "read one job")
    get.add_argument("uid", metavar="UID")
    _with_type(get, required=False)

    listing = action("list", "list jobs of a type, newest first")
    _with_type(listing, required=True)
    listing.add_argument("--offset", type=int, default=0)
    listing.add_argument("--limit", type=int, default=10, help="1–100 (default 10)")
    listing.add_argument("--from", dest="created_from", default=None, help="created at or after")
    listing.add_argument("--to", dest="created_to", default=None, help="created at or before")
    listing.add_argument("--all", action="store_true", help="every page (--limit per page)")

    update = action("update", "change fields of a job (PATCH)")
    update.add_argument("uid", metavar="UID")
    _with_type(update, required=False)
    update.add_argument("--json", required=True, help="the changes as a JSON object, or @FILE")

    delete = action("delete", "soft-delete a job")
    delete.add_argument("uid", metavar="UID")
    _with_type(delete, required=False)


# -- helpers -----------------------------------------------------------------------------------


def _json_object(text: str, what: str) -> dict[str, Any]:
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise ConfigurationError(f"{what}: cannot read {text[1:]}: {exc.strerror}") from exc
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"{what}: not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise ConfigurationError(f"{what}: must be a JSON object")
    return value


def _spec(args: argparse.Namespace) -> dict[str, Any]:
    props = _json_object(args.json, "--json") if args.json else {}
    props.pop("type", None)
    for _, dest, _extra in _PROPERTY_FLAGS:
        value = getattr(args, f"prop_{dest}")
        if value is not None:
            props[dest] = value
    return {"type": args.type, **props}


def _state_json(state: JobState) -> dict[str, Any]:
    return {
        "uid": state.job_id,
        "type": state.kind,
        "status": state.status.value,
        "native_status": state.native_status,
        "progress": state.progress,
        "error": str(state.error) if state.error else None,
        "item": dict(state.raw),
    }


def _policies(args: argparse.Namespace) -> tuple[Cadence, RetryPolicy]:
    try:
        cadence = Cadence()
        interval = getattr(args, "poll_interval", None)
        if interval is not None:
            cadence = Cadence(initial=interval, maximum=max(interval, cadence.maximum))
        retry = (
            RetryPolicy() if args.retries is None else RetryPolicy(max_attempts=args.retries + 1)
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigurationError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from exc
    return cadence, retry


def _provider(args: argparse.Namespace) -> Pixy:
    # The provider reads $PIXY_BASE_URL and $PIXY_SSO_URL for what was not given.
    key = key_from(args.api_key, Pixy.ENV_API_KEY)
    return Pixy(api_key=key, base_url=args.base_url or None, sso_url=args.sso_url or None)


# -- actions -----------------------------------------------------------------------------------


async def _generate(client: PixyClient, args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    submission = await client.submit(_spec(args))
    if not (args.wait or args.download_dir):
        state = client.pixy.parse_item(
            submission.raw, submission.kind, submission.submitted_at, None
        )
        return _state_json(state), ExitCode.OK
    show = sys.stderr.isatty() if args.progress is None else args.progress
    result: Result = await client.check_result(
        submission.job_id,
        download_outputs=args.download_dir is not None,
        download_directory=args.download_dir,
        kind=submission.kind,
        timeout=args.timeout,
        progress=show,
        submitted_at=submission.submitted_at,
    )
    out = _state_json(result.state)
    out["polls"] = result.polls
    out["files"] = [str(p) for p in result.downloaded_paths]
    out["sha256"] = list(result.sha256)
    codes = {Status.ERROR: ExitCode.JOB_ERROR, Status.CANCELED: ExitCode.JOB_CANCELED}
    return out, codes.get(result.state.status, ExitCode.OK)


async def _list(client: PixyClient, args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    dates = {"created_at_from": args.created_from, "created_at_to": args.created_to}
    if args.all:
        states = [s async for s in client.list_all(args.type, page_size=args.limit, **dates)]
        return {"items": [_state_json(s) for s in states], "total": len(states)}, ExitCode.OK
    page = await client.list_page(args.type, offset=args.offset, limit=args.limit, **dates)
    out = {
        "items": [_state_json(s) for s in page.items],
        "total": page.total,
        "offset": page.offset,
        "limit": page.limit,
    }
    return out, ExitCode.OK


async def _act(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    cadence, retry = _policies(args)
    provider = _provider(args)
    if args.pixy_action == "generate":
        provider.properties(_spec(args))  # bad properties: usage error, nothing sent
    changes = _json_object(args.json, "--json") if args.pixy_action == "update" else {}
    async with PixyClient(provider, cadence=cadence, retry=retry) as client:
        if args.pixy_action == "generate":
            return await _generate(client, args)
        if args.pixy_action == "list":
            return await _list(client, args)
        if args.pixy_action == "get":
            state = await client.get(args.uid, kind=args.type)
        elif args.pixy_action == "update":
            state = await client.update(args.uid, changes, kind=args.type)
        else:
            state = await client.delete(args.uid, kind=args.type)
        return _state_json(state), ExitCode.OK


def run(args: argparse.Namespace) -> int:
    """Run one `pollkit pixy` action; return its exit status (see the epilog)."""
    try:
        out, code = asyncio.run(_act(args))
    except PollkitError as exc:
        return fail(f"pixy {args.pixy_action}", exc, exit_code_for(exc))
    print(json.dumps(out, indent=2))
    return int(code)
