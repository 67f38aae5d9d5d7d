"""The bad-input catalogue: every way a caller, a server or a disk can hand pollkit something
wrong, in one place, each case named after what it is and the exact error type it must raise.

Every case also proves three things: it ends (a 20 s cap on each test, far above what any
needs), the API key appears neither in the error (``str``, ``repr``, its causes) nor in any log
line captured at DEBUG, and no corrupt file is left behind (no partial final file; a ``.part``
only where resuming is the documented behaviour: an interrupted download of a file the server
can resume). Where bytes move the real simulator serves them; reply shapes the simulator never
produces come from `aioresponses`.

=======================  ===============================================  ====================
family / case            expected                                         test
=======================  ===============================================  ====================
API keys
  empty or blank key     ConfigurationError naming the variable           test_empty_key
  wrong key              AuthenticationError (HTTP 401)                   test_wrong_key
  key with a line break  ConfigurationError (Pixy: AuthenticationError,   test_key_with_a_line_
                         its key check sends the key in a JSON body)      break
  (flux0 has no key: nothing to get wrong)
Job ids
  unknown id             NotFound; PiXYZ: PollTimeout with its hint (it   test_unknown_job_id
                         reads PENDING forever); flux0: InvalidRequest
  malformed id           ConfigurationError, nothing sent                 test_malformed_job_id
Replies (aioresponses, every provider)
  malformed JSON         ProtocolError "reply is not JSON"                test_bad_reply
  JSON of the wrong      ProtocolError naming the expected shape          test_bad_reply
  shape (null, list,
  string, wrong types)
  HTML 502 from a proxy  ServerError (retried) with the page's title      test_bad_reply
  HTML of unclosed tags  ServerError, its message found in bounded time   test_bad_reply
  HTML page on a 200     ProtocolError naming text/html                   test_bad_reply
  binary on a 200        ProtocolError naming the content type            test_bad_reply
  JSON sent as text/     accepted: the body decides, not the header       test_json_body_with_
  plain                                                                   a_text_content_type
  unknown status         no error: non-terminal, kept, logged once        test_unknown_status
Archives (simulator)
  ``../`` entry          UnsafePath naming the entry                      test_hostile_archive
  absolute path          UnsafePath                                       test_hostile_archive
  symbolic link          UnsafePath                                       test_hostile_archive
  zip bomb (ratio cap)   UnsafePath "expands N×"                          test_hostile_archive
  zip bomb (size cap)    UnsafePath "expands past"                        test_hostile_archive
  lying sizes            DownloadError "corrupt"                          test_hostile_archive
Content-Disposition      (never used for names) saved under the template  test_content_
  ``../x``, ``a/b``,     name inside the directory; a template that uses  disposition_...
  ``C:\\x``              the URL's hostile name: UnsafePath, no request
Download directory
  a file                 StorageError "not a directory"                   test_download_
  under a file           StorageError "Not a directory"                   directory_unusable
  read-only (not root)   StorageError "Permission denied"                 test_read_only_...
  disk full (ENOSPC)     StorageError "No space left on device"           test_disk_full_...
  disk full mid-file     StorageError; `.part` kept and resumed later     test_disk_full_mid_
                                                                          file_...
Specs, every provider    ConfigurationError naming the field, nothing     test_invalid_spec
                         sent
Timeouts and intervals
  policy fields ≤ 0/NaN  pydantic.ValidationError naming the field (the   test_bad_policy_field
                         policies are pydantic models, as
                         tests/unit/core/test_cadence.py documents)
  call arguments ≤ 0,    ConfigurationError, nothing sent (NaN used to    test_bad_timeout_
  NaN, ∞                 wait forever; ∞ raised OverflowError)            argument
JSONL batches
  library reader         ConfigurationError naming every bad line         test_batch_reader_...
  ``pollkit run``        exit 2, the lines named, nothing sent or made    test_pollkit_run_...
=======================  ===============================================  ====================
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from pollkit import (
    AsyncClient,
    AuthenticationError,
    Cadence,
    ConfigurationError,
    DownloadError,
    DownloadPolicy,
    Flux0,
    InvalidRequest,
    MagicHour,
    NotFound,
    Output,
    Pixy,
    Pixyz,
    PollTimeout,
    ProtocolError,
    Provider,
    RetryPolicy,
    ServerError,
    Status,
    StorageError,
    UnsafePath,
)
from pollkit.batch._jsonl import read_batch
from pollkit.cli import main
from pollkit.models import JobState
from pollkit.sim import Simulator, ThreadedSimulator
from pollkit.sim.transfer._blobs import blob_sha256
from tests.fakenet import aioresponses
from tests.helpers import FROZEN

pytestmark = pytest.mark.timeout(20)

KEY = "mhk_catalogue_secret_5e1f"
WRONG_KEY = "mhk_wrong_secret_0b7c"
MiB = 1 << 20
UID = "00000000-0000-4000-8000-00000000000a"
ONCE = RetryPolicy(max_attempts=1)
QUICK = Cadence(initial=0.001, maximum=0.002, jitter=0.0, timeout=5)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(FROZEN, api_key=KEY) as simulator:
        yield simulator


def check(
    error: BaseException,
    expected: type[BaseException],
    *fragments: str,
    logs: pytest.LogCaptureFixture,
    secrets: tuple[str, ...] = (KEY, WRONG_KEY),
) -> None:
    """`error` is exactly `expected`, one line naming `fragments`, and leaks no secret."""
    assert type(error) is expected, f"{type(error).__name__}: {error}"
    text = str(error)
    assert "\n" not in text
    for fragment in fragments:
        assert fragment in text
    assert_no_leak(error, logs, secrets)


def assert_no_leak(
    error: BaseException | None,
    logs: pytest.LogCaptureFixture,
    secrets: tuple[str, ...] = (KEY, WRONG_KEY),
) -> None:
    seen: list[str] = [logs.text]
    while error is not None:
        seen += [str(error), repr(error)]
        error = error.__cause__ or error.__context__
    for secret in secrets:
        assert not any(secret in text for text in seen), f"{secret!r} leaked"


def listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def requests_served(sim: Simulator | ThreadedSimulator) -> int:
    return int(sim.stats()["requests"]["total"])


def providers_for(sim: Simulator, key: str) -> dict[str, Callable[[], Provider]]:
    return {
        "magichour": lambda: MagicHour(api_key=key, base_url=sim.url),
        "pixy": lambda: Pixy(api_key=key, base_url=sim.urls["pixy"]),
        "pixyz": lambda: Pixyz(api_key=key, base_url=sim.urls["pixyz"]),
        "flux0": lambda: Flux0(base_url=sim.urls["flux0"]),
    }


# --- API keys --------------------------------------------------------------------------------

KEYED = [
    (MagicHour, "MAGIC_HOUR_API_KEY"),
    (Pixy, "PIXY_API_KEY"),
    (Pixyz, "PIXYZ_API_KEY"),
]


@pytest.mark.parametrize(("provider", "variable"), KEYED, ids=lambda v: getattr(v, "name", v))
@pytest.mark.parametrize("key", ["", "   "], ids=["empty", "blank"])
def test_empty_key(
    provider: type[Provider], variable: str, key: str, logs: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ConfigurationError) as info:
        provider(api_key=key)  # type: ignore[call-arg]
    check(info.value, ConfigurationError, "no API key", variable, logs=logs)


# Where each provider first sends the key, and what its refusal says.
WRONG_KEY_CASES = [
    pytest.param("magichour", "get project job cmissing: HTTP 401", id="magichour"),
    pytest.param("pixy", "verify API key: HTTP 401: Invalid API key", id="pixy"),
    pytest.param("pixyz", f"get job {UID}: HTTP 401: Invalid token", id="pixyz"),
]


@pytest.mark.parametrize(("name", "message"), WRONG_KEY_CASES)
async def test_wrong_key(
    sim: Simulator, name: str, message: str, logs: pytest.LogCaptureFixture
) -> None:
    job = "cmissing" if name == "magichour" else UID
    with pytest.raises(AuthenticationError) as info:
        async with AsyncClient(providers_for(sim, WRONG_KEY)[name](), retry=ONCE) as client:
            await client.get(job)
    check(info.value, AuthenticationError, message, logs=logs)


KEY_WITH_A_LINE_BREAK = f"{KEY}\r\nX-Injected: 1"
LINE_BREAK_CASES = [
    pytest.param("magichour", ConfigurationError, "get project: cannot send", id="magichour"),
    # The key check posts the key in a JSON body, where a line break is just a character.
    pytest.param("pixy", AuthenticationError, "verify API key: HTTP 401", id="pixy"),
    pytest.param("pixyz", ConfigurationError, "get job: cannot send", id="pixyz"),
]


@pytest.mark.parametrize(("name", "expected", "message"), LINE_BREAK_CASES)
async def test_key_with_a_line_break(
    sim: Simulator,
    name: str,
    expected: type[Exception],
    message: str,
    logs: pytest.LogCaptureFixture,
) -> None:
    """A key pasted with its newline: refused, never sent as a header, never shown."""
    with pytest.raises(expected) as info:
        async with AsyncClient(providers_for(sim, KEY_WITH_A_LINE_BREAK)[name](), retry=ONCE) as c:
            await c.get(UID)
    if expected is ConfigurationError:
        message += " the request: the API key holds a line break or another control character"
        assert requests_served(sim) == 0
    check(info.value, expected, message, logs=logs, secrets=(KEY, KEY_WITH_A_LINE_BREAK))


# --- job ids ---------------------------------------------------------------------------------

UNKNOWN_ID_CASES = [
    pytest.param("magichour", "cmissing", NotFound, "HTTP 404", id="magichour"),
    pytest.param("pixy", UID, NotFound, "HTTP 404", id="pixy"),
    pytest.param("pixyz", UID, PollTimeout, "the job id may be wrong", id="pixyz"),
    pytest.param("flux0", "0123456789/RID(x)", InvalidRequest, "non-existent session", id="flux0"),
]


@pytest.mark.parametrize(("name", "job", "expected", "message"), UNKNOWN_ID_CASES)
async def test_unknown_job_id(
    sim: Simulator,
    name: str,
    job: str,
    expected: type[Exception],
    message: str,
    logs: pytest.LogCaptureFixture,
) -> None:
    async with AsyncClient(providers_for(sim, KEY)[name](), retry=ONCE) as client:
        with pytest.raises(expected) as info:
            await client.wait(job, timeout=0.2, cadence=QUICK)
    check(info.value, expected, message, job, logs=logs)


MALFORMED_ID_CASES = [
    pytest.param("magichour", "a/b", "invalid project id", id="magichour"),
    pytest.param("pixy", "not-a-uid", "is not a uid", id="pixy"),
    pytest.param("pixyz", "123", "must be a uuid", id="pixyz"),
    pytest.param("flux0", "no-slash", "<session id>/<correlation id>", id="flux0"),
]


@pytest.mark.parametrize(("name", "job", "message"), MALFORMED_ID_CASES)
async def test_malformed_job_id(
    sim: Simulator, name: str, job: str, message: str, logs: pytest.LogCaptureFixture
) -> None:
    async with AsyncClient(providers_for(sim, KEY)[name](), retry=ONCE) as client:
        before = requests_served(sim)
        with pytest.raises(ConfigurationError) as info:
            await client.get(job)
        assert requests_served(sim) == before
    check(info.value, ConfigurationError, message, logs=logs)


# --- replies the API would never send (aioresponses) ------------------------------------------

BASE = "http://api.test"
# Per provider: how to build it, the job to read, its status URL, and what its parser says of
# a reply of the wrong shape.
FAKE: dict[str, tuple[Callable[[], Provider], str, str, str]] = {
    "magichour": (
        lambda: MagicHour(api_key=KEY, base_url=BASE),
        "p1",
        rf"{BASE}/v1/image-projects/p1",
        "project reply does not fit the schema",
    ),
    "pixy": (
        lambda: Pixy(api_key=KEY, base_url=BASE),
        UID,
        rf"{BASE}/v1/apps/imagine/imagination/{UID}",
        "reply is not a Pixy item",
    ),
    "pixyz": (
        lambda: Pixyz(api_key=KEY, base_url=BASE, outputs="archive"),
        UID,
        rf"{BASE}/jobs/{UID}",
        "job reply does not fit the schema",
    ),
    "flux0": (
        lambda: Flux0(base_url=BASE),
        "s1/c1",
        rf"{BASE}/api/sessions/s1/events\?.*",
        "list_events reply is not",
    ),
}
KINDS = {"magichour": "image", "pixy": "image"}
NGINX_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
SHAPE = "{shape}"  # stands for the provider's own wrong-shape message
REPLY_CASES = [
    ("malformed-json", {"body": '{"id": "p1", "sta', "content_type": "application/json"},
     ProtocolError, "reply is not JSON (HTTP 200, application/json)"),
    ("json-null", {"body": "null", "content_type": "application/json"}, ProtocolError, SHAPE),
    ("json-list", {"payload": []}, ProtocolError, SHAPE),
    ("json-string", {"payload": "ok"}, ProtocolError, SHAPE),
    ("wrong-field-types", {"payload": dict.fromkeys(("id", "uid", "uuid", "status",
     "task_status", "data"), 5)}, ProtocolError, SHAPE),
    ("html-502-from-a-proxy", {"status": 502, "body": NGINX_502, "content_type": "text/html"},
     ServerError, "HTTP 502: 502 Bad Gateway (an HTML page, not the API's reply)"),
    ("html-page-of-unclosed-tags", {"status": 503, "body": "<head" * 20_000, "content_type":
     "text/html"}, ServerError, "HTTP 503: <head<head"),  # read in bounded time
    ("html-page-on-a-200", {"body": "<html><p>Down for maintenance</p></html>",
     "content_type": "text/html"}, ProtocolError, "reply is not JSON (HTTP 200, text/html)"),
    ("binary-on-a-200", {"body": b"\x89PNG\r\n\x1a\n\xff", "content_type":
     "application/octet-stream"}, ProtocolError,
     "reply is not JSON (HTTP 200, application/octet-stream)"),
]  # fmt: skip


@pytest.mark.parametrize("name", list(FAKE))
@pytest.mark.parametrize(
    ("reply", "expected", "message"),
    [pytest.param(*case[1:], id=case[0]) for case in REPLY_CASES],
)
async def test_bad_reply(
    name: str,
    reply: dict[str, Any],
    expected: type[Exception],
    message: str,
    logs: pytest.LogCaptureFixture,
) -> None:
    make, job, url, shape = FAKE[name]
    retry = RetryPolicy(max_attempts=2, initial=0.001, maximum=0.002)
    with aioresponses() as mocked:
        mocked.post(f"{BASE}/api_key/verify", payload={"valid": True})
        mocked.get(re.compile(f"^{url}$"), repeat=True, **reply)
        async with AsyncClient(make(), retry=retry) as client:
            with pytest.raises(expected) as info:
                await client.get(job, kind=KINDS.get(name))
        polls = sum(len(v) for k, v in mocked.requests.items() if k[0] == "GET")
    assert polls == (retry.max_attempts if expected is ServerError else 1)
    check(info.value, expected, message.replace(SHAPE, shape), logs=logs)


async def test_json_body_with_a_text_content_type(logs: pytest.LogCaptureFixture) -> None:
    """Lenient on purpose: a JSON body is read whatever the header says."""
    project = {"id": "p1", "status": "queued"}
    make, job, url, _ = FAKE["magichour"]
    with aioresponses() as mocked:
        mocked.get(url, body=json.dumps(project), content_type="text/plain")
        async with AsyncClient(make(), retry=ONCE) as client:
            state = await client.get(job, kind="image")
    assert (state.status, state.native_status) == (Status.QUEUED, "queued")
    assert_no_leak(None, logs)


# Per provider: a reply with an unknown status, then one that completes the job.
UNKNOWN_STATUS = {
    "magichour": (
        {"id": "p1", "status": "upscaling"},
        {"id": "p1", "status": "complete", "downloads": []},
    ),
    "pixy": (
        {"uid": UID, "task_status": "upscaling"},
        {"uid": UID, "task_status": "completed"},
    ),
    "pixyz": (
        {"uuid": UID, "status": "upscaling"},
        {"uuid": UID, "status": "SUCCESS"},
    ),
    "flux0": (
        {"data": [{"offset": 0, "source": "ai_agent", "type": "status",
                   "data": {"status": "upscaling"}}]},
        {"data": [{"offset": 0, "source": "ai_agent", "type": "status",
                   "data": {"status": "upscaling"}},
                  {"offset": 1, "source": "ai_agent", "type": "message",
                   "data": {"type": "message", "parts": [{"type": "content", "content": "hi"}]}}]},
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(FAKE))
async def test_unknown_status(name: str, logs: pytest.LogCaptureFixture) -> None:
    """Rule 1 of the status mapping: not an error, not terminal, kept on the state, and one
    warning however many polls see it."""
    make, job, url, _ = FAKE[name]
    unknown, complete = UNKNOWN_STATUS[name]
    seen: list[JobState] = []
    with aioresponses() as mocked:
        mocked.post(f"{BASE}/api_key/verify", payload={"valid": True})
        for _ in range(3):
            mocked.get(re.compile(f"^{url}$"), payload=unknown)
        mocked.get(re.compile(f"^{url}$"), payload=complete)
        async with AsyncClient(make(), retry=ONCE) as client:
            final = await client.wait(
                job, kind=KINDS.get(name), cadence=QUICK, on_state=seen.append
            )
    assert final.status is Status.COMPLETE
    assert len(seen) == 4
    assert all(not s.is_terminal and s.native_status == "upscaling" for s in seen[:3])
    warnings = [r for r in logs.records if "'upscaling'" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "unknown status" in warnings[0].getMessage()
    assert_no_leak(None, logs)


# --- downloads: archives, names, directories, disks --------------------------------------------


def download_client(sim: Simulator, **policy: Any) -> AsyncClient:
    return AsyncClient(
        MagicHour(api_key=KEY, base_url=sim.url),
        retry=ONCE,
        download=DownloadPolicy(**policy),
    )


ARCHIVE_CASES = [
    ("traversal", UnsafePath, "archive entry '../evil.txt' leaves the target directory"),
    ("absolute", UnsafePath, "archive entry '/tmp/pollkit-evil.txt' has an absolute path"),
    ("symlink", UnsafePath, "is a symbolic link"),
    ("bomb", UnsafePath, "archive entry 'bomb.bin' expands"),  # 64 MiB of zeros from 64 KiB
    ("ratio", UnsafePath, "archive expands past 67108864 bytes"),  # 200 × 1 MiB, 64 MiB cap
    ("lying", DownloadError, "is corrupt"),  # its headers claim 10 bytes, it inflates to 8 MiB
]


@pytest.mark.parametrize(
    ("kind", "expected", "message"),
    [pytest.param(*case, id=case[0]) for case in ARCHIVE_CASES],
)
async def test_hostile_archive(
    sim: Simulator,
    tmp_path: Path,
    kind: str,
    expected: type[Exception],
    message: str,
    logs: pytest.LogCaptureFixture,
) -> None:
    """The archive is the job's output: it is saved, verified, and nothing comes out of it."""
    target = tmp_path / "out"
    output = Output(url=f"{sim.url}/_sim/archives/{kind}.zip", is_archive=True)
    policy = {"extract_archives": True, "max_extract_bytes": 64 * MiB}
    async with download_client(sim, **policy) as client:
        with pytest.raises(expected) as info:
            await client.download(output, target, job_id="j1")
    check(info.value, expected, message, logs=logs)
    if kind == "bomb":
        assert re.search(r"expands \d+× \(limit 200×\)", str(info.value))
    assert listing(tmp_path) == ["out", "out/j1-0.zip"]  # no folder, no staging, no .part
    assert not Path("/tmp/pollkit-evil.txt").exists()


HOSTILE_NAMES = [
    pytest.param("..%2Fx.bin", "../x.bin", "x.bin", id="dot-dot-slash"),
    pytest.param("a%2Fb.bin", "a/b.bin", "b.bin", id="slash"),
    pytest.param("C%3A%5Cx.bin", "C:\\\\x.bin", None, id="drive-and-backslash"),
]


@pytest.mark.parametrize(("segment", "disposition", "named"), HOSTILE_NAMES)
async def test_content_disposition_with_path_separators(
    sim: Simulator,
    tmp_path: Path,
    segment: str,
    disposition: str,
    named: str | None,
    logs: pytest.LogCaptureFixture,
) -> None:
    """The server suggests a name with a path in it. pollkit never reads Content-Disposition:
    the default template names the file; a template using ``{name}`` takes the URL's last
    segment, its directories dropped, and refuses one that still is not a plain name before
    sending anything."""
    url = f"{sim.url}/_sim/blobs/{segment}?size=1000"
    async with aiohttp.ClientSession() as http, http.head(url) as reply:
        assert reply.headers["Content-Disposition"] == f'attachment; filename="{disposition}"'
    target = tmp_path / "out"
    async with download_client(sim) as client:
        saved = await client.download(Output(url=url), target)
    assert saved.path == target / "download-0.bin"
    async with download_client(sim, name_template="{name}{ext}") as client:
        if named is None:
            before = sim.stats()["requests"]["blob_bytes_served"]
            with pytest.raises(UnsafePath) as info:
                await client.download(Output(url=url), target)
            check(info.value, UnsafePath, "unsafe file name 'C:\\\\x.bin'", logs=logs)
            assert sim.stats()["requests"]["blob_bytes_served"] == before
        else:
            assert (await client.download(Output(url=url), target)).path == target / named
    expected = ["out", "out/download-0.bin"] + ([f"out/{named}"] if named else [])
    assert listing(tmp_path) == sorted(expected)
    assert_no_leak(None, logs)


@pytest.mark.parametrize(
    ("where", "message"),
    [
        pytest.param("file", "cannot use download directory: it is not a directory", id="a-file"),
        pytest.param("file/sub", "cannot use download directory: Not a directory", id="under"),
    ],
)
async def test_download_directory_unusable(
    sim: Simulator, tmp_path: Path, where: str, message: str, logs: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "file").write_bytes(b"mine")
    async with download_client(sim) as client:
        with pytest.raises(StorageError) as info:
            await client.download(
                Output(url=f"{sim.url}/_sim/blobs/x.bin?size=10"), tmp_path / where
            )
    check(info.value, StorageError, message, str(tmp_path / where), logs=logs)
    assert listing(tmp_path) == ["file"]
    assert (tmp_path / "file").read_bytes() == b"mine"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
async def test_read_only_download_directory(
    sim: Simulator, tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "out"
    target.mkdir()
    target.chmod(0o555)
    try:
        async with download_client(sim) as client:
            with pytest.raises(StorageError) as info:
                await client.download(Output(url=f"{sim.url}/_sim/blobs/x.bin?size=10"), target)
        assert listing(target) == []
    finally:
        target.chmod(0o755)
    check(info.value, StorageError, "cannot write: Permission denied", logs=logs)


async def test_disk_full_from_the_first_byte(
    sim: Simulator, tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    """ENOSPC from the kernel, unprivileged: the `.part` is a window onto ``/dev/full``, which
    takes no byte. Nothing was kept, so the `.part` goes and no final file appears."""
    (tmp_path / "big.bin.part").symlink_to("/dev/full")
    async with download_client(sim) as client:
        with pytest.raises(StorageError) as info:
            await client.download(
                Output(url=f"{sim.url}/_sim/blobs/big.bin?size={MiB}"), tmp_path, name="big.bin"
            )
    check(info.value, StorageError, "No space left on device", "big.bin.part", logs=logs)
    assert listing(tmp_path) == []


# Run in a child process so the file-size limit binds nothing but the download.
FILLING_CHILD = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead
limit = int(sys.argv[4])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
import asyncio, json, logging
from pollkit import AsyncClient, MagicHour, Output, PollkitError, RetryPolicy
logging.basicConfig(level=logging.DEBUG)
async def run(base, url, directory):
    provider = MagicHour(api_key=sys.argv[5], base_url=base)
    async with AsyncClient(provider, retry=RetryPolicy(max_attempts=1)) as client:
        try:
            await client.download(Output(url=url), directory, name="big.bin")
        except PollkitError as exc:
            print(json.dumps({"type": type(exc).__name__, "str": str(exc), "repr": repr(exc)}))
asyncio.run(run(*sys.argv[1:4]))
"""


async def test_disk_full_mid_file_keeps_the_part_and_a_rerun_resumes(
    sim: Simulator, tmp_path: Path, logs: pytest.LogCaptureFixture
) -> None:
    """A disk that fills after some megabytes. A small filesystem needs root (tmpfs) and
    mocking the writes would not prove what the kernel does, so a child process downloads
    under ``RLIMIT_FSIZE``: the kernel refuses the write that crosses the limit (EFBIG, the
    same path through the writer as ENOSPC), unprivileged and on any Linux CI. The `.part`
    keeps what reached the disk, as documented for resumable files, and a rerun fetches only
    the rest."""
    size, limit = 12 * MiB, 4 * MiB
    url = f"{sim.url}/_sim/blobs/big.bin?size={size}"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FILLING_CHILD, sim.url, url, str(tmp_path), str(limit), KEY,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await child.communicate()
    assert child.returncode == 0, err.decode()
    reported = json.loads(out)
    assert reported["type"] == "StorageError"
    assert reported["str"].startswith("download: disk refused: File too large")
    assert reported["str"].endswith("big.bin.part)")
    assert KEY not in out.decode() + err.decode()
    part = tmp_path / "big.bin.part"
    kept = part.stat().st_size
    assert 0 < kept <= limit
    assert listing(tmp_path) == ["big.bin.part", "big.bin.part.json"]  # no final file
    before = sim.stats()["requests"]["blob_bytes_served"]
    async with download_client(sim) as client:
        saved = await client.download(Output(url=url), tmp_path, name="big.bin")
    assert saved.sha256 == blob_sha256(size, 0)
    assert sim.stats()["requests"]["blob_bytes_served"] - before == size - kept
    assert listing(tmp_path) == ["big.bin"]
    assert_no_leak(None, logs)


# --- specs -----------------------------------------------------------------------------------

IMAGE = {"tool": "ai-image-generator", "image_count": 1, "style": {"prompt": "a fox"}}
PIXY_IMAGE = {"type": "image", "engine": "photon_flash", "delineation": "a fox"}
SPEC_CASES = [
    ("magichour", ["not", "a", "mapping"], "magichour spec must be a mapping, got list"),
    ("magichour", {"image_count": 1}, "'tool' must name a create endpoint"),
    ("magichour", {"tool": "../v2/x"}, "'tool' must name a create endpoint"),
    ("magichour", {**IMAGE, "image_count": 0}, "image_count: Input should be greater than"),
    ("magichour", {**IMAGE, "style": {"prompt": ""}}, "style.prompt: String should have at"),
    ("magichour", {**IMAGE, "seed": math.nan}, "not JSON: Out of range float values"),
    ("magichour", {**IMAGE, "tags": {"a"}}, "not JSON: Object of type set"),
    ("pixy", {"engine": "photon_flash"}, "pixy spec: 'type' must be one of"),
    ("pixy", {**PIXY_IMAGE, "engine": "nope"}, "pixy image spec: engine: Input should be"),
    ("pixy", {**PIXY_IMAGE, "delineation": ""}, "delineation: String should have at least"),
    ("pixy", {**PIXY_IMAGE, "colour": "red"}, "colour: Extra inputs are not permitted"),
    ("pixy", {**PIXY_IMAGE, "context": [{"at": object()}]}, "not JSON: Unable to serialize"),
    ("pixyz", {"process": "x", "script": "s.py", "mode": 1}, "pixyz spec: unknown key 'mode'"),
    ("pixyz", {"process": "custom"}, "script: required when process is 'custom'"),
    ("pixyz", {"process": "x", "file": "no-such.step"}, "file: no such file 'no-such.step'"),
    ("pixyz", {"process": "x", "params": [1]}, "params: must be an object, got list"),
    ("pixyz", {"process": "x", "params": {"w": math.inf}}, "params: not JSON-serialisable"),
    ("flux0", "hello", "flux0 spec must be a mapping, got str"),
    ("flux0", {"content": "hi"}, "needs a 'session_id'"),
    ("flux0", {"session_id": "s", "content": ""}, "needs a 'content'"),
    ("flux0", {"session_id": "s", "content": ["hi"]}, "needs a 'content'"),
]


@pytest.mark.parametrize(
    ("name", "spec", "message"),
    [pytest.param(*case, id=f"{case[0]}-{i}") for i, case in enumerate(SPEC_CASES)],
)
async def test_invalid_spec(
    sim: Simulator, name: str, spec: Any, message: str, logs: pytest.LogCaptureFixture
) -> None:
    async with AsyncClient(providers_for(sim, KEY)[name](), retry=ONCE) as client:
        before = requests_served(sim)
        with pytest.raises(ConfigurationError) as info:
            await client.submit(spec)
        assert requests_served(sim) == before
    check(info.value, ConfigurationError, message, logs=logs)


# --- timeouts and intervals ------------------------------------------------------------------

POLICY_CASES = [
    (Cadence, {"initial": 0}, "initial"),
    (Cadence, {"initial": -1.0}, "initial"),
    (Cadence, {"maximum": 0}, "maximum"),
    (Cadence, {"timeout": 0}, "timeout"),
    (Cadence, {"timeout": -5}, "timeout"),
    (Cadence, {"timeout": math.nan}, "timeout"),
    (RetryPolicy, {"initial": -1}, "initial"),
    (RetryPolicy, {"maximum": -1}, "maximum"),
    (RetryPolicy, {"max_elapsed": 0}, "max_elapsed"),
    (RetryPolicy, {"max_attempts": 0}, "max_attempts"),
    (DownloadPolicy, {"stall_timeout": 0}, "stall_timeout"),
    (DownloadPolicy, {"stall_timeout": -1}, "stall_timeout"),
    (DownloadPolicy, {"stall_timeout": math.nan}, "stall_timeout"),
]


@pytest.mark.parametrize(
    ("policy", "values", "field"),
    [pytest.param(*c, id=f"{c[0].__name__}-{next(iter(c[1].items()))}") for c in POLICY_CASES],
)
def test_bad_policy_field(policy: type[Any], values: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        policy(**values)
    assert type(info.value) is ValidationError
    assert info.value.errors()[0]["loc"] == (field,)
    # The same value through a copy (how a call's keyword argument reaches a policy).
    with pytest.raises(ConfigurationError, match=f"{policy.__name__}: {field}: "):
        policy().model_copy(update=values)


TIMEOUT_CASES = [
    ("check_result", 0, "timeout must be > 0 seconds, got 0"),
    ("check_result", -1.0, "timeout must be > 0 seconds, got -1.0"),
    ("check_result", math.nan, "timeout must be > 0 seconds, got nan"),
    ("check_result", math.inf, "timeout must be > 0 seconds, got inf"),
    ("wait", -1, "timeout must be > 0 seconds, got -1"),
    ("wait", "5", "timeout must be > 0 seconds, got '5'"),
    ("run", 0, "timeout must be > 0 seconds, got 0"),
    ("client", 0, "timeout must be > 0 and finite, got 0"),
    ("client", -1, "timeout must be > 0 and finite, got -1"),
    ("client", math.nan, "timeout must be > 0 and finite, got nan"),
    ("client", math.inf, "timeout must be > 0 and finite, got inf"),
]


async def pass_timeout(sim: Simulator, directory: Path, call: str, timeout: float) -> None:
    provider = MagicHour(api_key=KEY, base_url=sim.url)
    if call == "client":
        AsyncClient(provider, timeout=timeout)
        return
    async with AsyncClient(provider, retry=ONCE) as client:
        if call == "check_result":
            await client.check_result("cx", timeout=timeout, download_directory=directory)
        elif call == "wait":
            await client.wait("cx", timeout=timeout)
        else:
            batch = client.run(
                [IMAGE], download_directory=directory, journal=False, timeout=timeout
            )
            _ = [result async for result in batch]


@pytest.mark.parametrize(
    ("call", "timeout", "message"),
    [pytest.param(*c, id=f"{c[0]}-{c[1]}") for c in TIMEOUT_CASES],
)
async def test_bad_timeout_argument(
    sim: Simulator,
    tmp_path: Path,
    call: str,
    timeout: float,
    message: str,
    logs: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(ConfigurationError) as info:
        await pass_timeout(sim, tmp_path, call, timeout)
    check(info.value, ConfigurationError, message, logs=logs)
    assert requests_served(sim) == 0
    assert listing(tmp_path) == []


# --- JSONL batches ---------------------------------------------------------------------------

GOOD_LINE = json.dumps(
    {"endpoint": "ai-image-generator", "body": {"image_count": 1, "style": {"prompt": "a fox"}}}
)
BROKEN_BATCH = "\n".join(
    [
        GOOD_LINE,
        "{not json",
        "[1, 2]",
        json.dumps({"endpoint": "ai-image-generator", "body": {"image_count": 0}}),
        GOOD_LINE,
        GOOD_LINE[: len(GOOD_LINE) // 2],  # the last line, cut off mid-write
    ]
)


def test_batch_reader_names_every_broken_line(logs: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigurationError) as info:
        read_batch(BROKEN_BATCH, MagicHour(api_key=KEY, base_url=BASE))
    text = str(info.value)
    assert type(info.value) is ConfigurationError
    assert text.startswith("4 bad lines:")
    assert "line 2: Expecting property name" in text
    assert "line 3: a line must be a JSON object" in text
    assert "line 4: magichour ai-image-generator spec: image_count" in text
    assert "line 6: Unterminated string" in text
    assert "line 1:" not in text
    assert "line 5:" not in text
    assert_no_leak(info.value, logs)


def test_pollkit_run_refuses_a_broken_batch_before_sending_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], logs: pytest.LogCaptureFixture
) -> None:
    batch = tmp_path / "jobs.jsonl"
    batch.write_text(BROKEN_BATCH)
    out = tmp_path / "out"
    with ThreadedSimulator(FROZEN, api_key=KEY) as sim:
        argv = ["run", str(batch), "--base-url", sim.url, "--api-key", KEY]
        code = main([*argv, "--download-dir", str(out), "--no-progress"])
        assert requests_served(sim) == 0
    captured = capsys.readouterr()
    assert code == 2
    assert "pollkit run: 4 bad lines" in captured.err
    assert "line 2:" in captured.err
    assert "line 6:" in captured.err
    assert KEY not in captured.out + captured.err + logs.text
    assert not out.exists()  # no download directory, no journal
    assert listing(tmp_path) == ["jobs.jsonl"]
