"""pollkit: submit, poll and download long-running generation jobs.

async with pollkit.AsyncClient(pollkit.providers.MagicHour(api_key=...)) as client:
    result = await client.check_result(job_id, download_directory="out")
"""

__version__ = "0.1.0"

from typing import TYPE_CHECKING

from pollkit._lazy import exports

# Errors are imported at once: they are small, and what callers catch.
from pollkit.errors import (
    AmbiguousSubmit,
    APIError,
    AuthenticationError,
    ChecksumMismatch,
    ConfigurationError,
    ConnectError,
    DownloadError,
    IncompleteDownload,
    InvalidRequest,
    JobCanceled,
    JobFailed,
    JobOutcomeError,
    JournalBusy,
    NotFound,
    NotReady,
    PollkitError,
    PollTimeout,
    ProtocolError,
    RateLimited,
    ReadTimeout,
    ServerError,
    StorageError,
    TransportError,
    UnsafePath,
    UnsupportedOperation,
    URLExpired,
)

if TYPE_CHECKING:
    from pollkit.batch._scheduler import BatchItem
    from pollkit.batch.journal._protocol import Journal
    from pollkit.batch.journal._sqlite import SQLiteJournal
    from pollkit.client._async import AsyncClient
    from pollkit.client._flux0 import stream_run
    from pollkit.client._pixy import PixyClient
    from pollkit.client._pixyz import PixyzClient
    from pollkit.client._sync import Client
    from pollkit.display._notebook import Results
    from pollkit.display._progress import NullProgress, ProgressSink, TqdmProgress
    from pollkit.download._downloader import SavedFile
    from pollkit.models import ErrorInfo, Event, JobState, Output, Result, Status
    from pollkit.policies import Cadence, DownloadPolicy, RetryPolicy, SubmitPolicy
    from pollkit.providers import (
        Flux0,
        ImageGenProperties,
        MagicHour,
        Pixy,
        Pixyz,
        Provider,
        Submission,
        SubtitleGenProperties,
        VideoGenProperties,
    )
    from pollkit.push._status_stream import StatusStream
    from pollkit.push._webhooks import WebhookReceiver

# Each name is imported from its module when first used (see pollkit._lazy): a command that
# needs only the downloader does not load the webhook server, the journal or every provider.
_SOURCES = {
    "pollkit.batch.journal._protocol": ("Journal",),
    "pollkit.batch.journal._sqlite": ("SQLiteJournal",),
    "pollkit.batch._scheduler": ("BatchItem",),
    "pollkit.client._async": ("AsyncClient",),
    "pollkit.client._flux0": ("stream_run",),
    "pollkit.client._pixy": ("PixyClient",),
    "pollkit.client._pixyz": ("PixyzClient",),
    "pollkit.client._sync": ("Client",),
    "pollkit.display._notebook": ("Results",),
    "pollkit.display._progress": (
        "NullProgress",
        "ProgressSink",
        "TqdmProgress",
    ),
    "pollkit.download._downloader": ("SavedFile",),
    "pollkit.models": (
        "ErrorInfo",
        "Event",
        "JobState",
        "Output",
        "Result",
        "Status",
    ),
    "pollkit.policies": (
        "Cadence",
        "DownloadPolicy",
        "RetryPolicy",
        "SubmitPolicy",
    ),
    "pollkit.providers": (
        "Flux0",
        "ImageGenProperties",
        "MagicHour",
        "Pixy",
        "Pixyz",
        "Provider",
        "Submission",
        "SubtitleGenProperties",
        "VideoGenProperties",
    ),
    "pollkit.push._status_stream": ("StatusStream",),
    "pollkit.push._webhooks": ("WebhookReceiver",),
}
__getattr__, __dir__ = exports(__name__, globals(), _SOURCES)

__all__ = [
    "APIError",
    "AmbiguousSubmit",
    "AsyncClient",
    "AuthenticationError",
    "BatchItem",
    "Cadence",
    "ChecksumMismatch",
    "Client",
    "ConfigurationError",
    "ConnectError",
    "DownloadError",
    "DownloadPolicy",
    "ErrorInfo",
    "Event",
    "Flux0",
    "ImageGenProperties",
    "IncompleteDownload",
    "InvalidRequest",
    "JobCanceled",
    "JobFailed",
    "JobOutcomeError",
    "JobState",
    "Journal",
    "JournalBusy",
    "MagicHour",
    "NotFound",
    "NotReady",
    "NullProgress",
    "Output",
    "Pixy",
    "PixyClient",
    "Pixyz",
    "PixyzClient",
    "PollTimeout",
    "PollkitError",
    "ProgressSink",
    "ProtocolError",
    "Provider",
    "RateLimited",
    "ReadTimeout",
    "Result",
    "Results",
    "RetryPolicy",
    "SQLiteJournal",
    "SavedFile",
    "ServerError",
    "Status",
    "StatusStream",
    "StorageError",
    "Submission",
    "SubmitPolicy",
    "SubtitleGenProperties",
    "TqdmProgress",
    "TransportError",
    "URLExpired",
    "UnsafePath",
    "UnsupportedOperation",
    "VideoGenProperties",
    "WebhookReceiver",
    "__version__",
    "stream_run",
]
