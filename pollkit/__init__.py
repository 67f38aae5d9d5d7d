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
    from pollkit.client import AsyncClient
    from pollkit.models import ErrorInfo, JobState, Output, Result, Status
    from pollkit.notebook import Results
    from pollkit.pixy_client import PixyClient
    from pollkit.pixyz_ops import PixyzClient
    from pollkit.policies import Cadence, DownloadPolicy, RetryPolicy, SubmitPolicy
    from pollkit.progress import NullProgress, ProgressSink, TqdmProgress
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
    from pollkit.status_stream import StatusStream
    from pollkit.sync import Client
    from pollkit.webhooks import WebhookReceiver

# Each name is imported from its module when first used (see pollkit._lazy): a command that
# needs only the downloader does not load the webhook server, the journal or every provider.
_SOURCES = {
    "pollkit.client": ("AsyncClient",),
    "pollkit.models": (
        "ErrorInfo",
        "JobState",
        "Output",
        "Result",
        "Status",
    ),
    "pollkit.notebook": ("Results",),
    "pollkit.pixy_client": ("PixyClient",),
    "pollkit.pixyz_ops": ("PixyzClient",),
    "pollkit.policies": (
        "Cadence",
        "DownloadPolicy",
        "RetryPolicy",
        "SubmitPolicy",
    ),
    "pollkit.progress": (
        "NullProgress",
        "ProgressSink",
        "TqdmProgress",
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
    "pollkit.status_stream": ("StatusStream",),
    "pollkit.sync": ("Client",),
    "pollkit.webhooks": ("WebhookReceiver",),
}
__getattr__, __dir__ = exports(__name__, globals(), _SOURCES)

__all__ = [
    "APIError",
    "AmbiguousSubmit",
    "AsyncClient",
    "AuthenticationError",
    "Cadence",
    "ChecksumMismatch",
    "Client",
    "ConfigurationError",
    "ConnectError",
    "DownloadError",
    "DownloadPolicy",
    "ErrorInfo",
    "Flux0",
    "ImageGenProperties",
    "IncompleteDownload",
    "InvalidRequest",
    "JobCanceled",
    "JobFailed",
    "JobOutcomeError",
    "JobState",
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
]
