"""User-facing policies: how often to poll (`Cadence`), how to retry a failed request
(`RetryPolicy`) and which failed submits may be sent again (`SubmitPolicy`). All are frozen;
`model_copy(update=...)` or a call's keyword arguments override a client's defaults. Durations
are seconds, as a float or a `datetime.timedelta`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pollkit.errors import ConfigurationError

__all__ = ["Cadence", "DownloadPolicy", "RetryPolicy", "SubmitPolicy"]

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


def _seconds(value: Any) -> Any:
    return value.total_seconds() if isinstance(value, timedelta) else value


def _status_patterns(value: Any) -> Any:
    """HTTP statuses from codes, digit strings and ``"5XX"``-style patterns."""
    if isinstance(value, (str, int)):
        value = [value]
    if not isinstance(value, (list, tuple, set, frozenset)):
        return value
    codes: set[Any] = set()
    for item in value:
        text = item.strip().upper() if isinstance(item, str) else None
        if text is not None and len(text) == 3 and text[0].isdigit() and text[1:] == "XX":
            first = int(text[0]) * 100
            codes.update(range(first, first + 100))
        elif text is not None and text.isdigit():
            codes.add(int(text))
        else:
            codes.add(item)
    return frozenset(codes)


def _http_statuses(value: frozenset[int]) -> frozenset[int]:
    bad = sorted(code for code in value if not 100 <= code <= 599)
    if bad:
        raise ValueError(f"not HTTP statuses: {bad}")
    return value


_P = TypeVar("_P", bound="_Policy")


class _Policy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def model_copy(self: _P, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> _P:
        """A copy with `update` applied, validated like a new policy (pydantic's own copy
        skips validation, so a call's bad keyword argument, a NaN timeout say, would slip
        through and the wait would never end).

        Raises:
            ConfigurationError: An updated value is invalid; the message names the field.
        """
        name = type(self).__name__
        unknown = sorted(set(update or ()) - set(type(self).model_fields))
        if unknown:
            raise ConfigurationError(f"{name} has no field {unknown[0]!r}")
        if not update:
            return super().model_copy(deep=deep)
        values = {field: getattr(self, field) for field in type(self).model_fields}
        try:
            copied = type(self).model_validate({**values, **update})
        except ValidationError as exc:
            first = exc.errors()[0]
            message = first["msg"].removeprefix("Value error, ")
            if first["loc"]:
                where = ".".join(str(p) for p in first["loc"])
                message = f"{where}: {message}, got {first.get('input')!r}"
            raise ConfigurationError(f"{name}: {message}") from exc
        return copied.model_copy(deep=True) if deep else copied


class Cadence(_Policy):
    """How often to ask about a job that is not finished.

    The wait before poll *n* (1-based, after the first, immediate, poll) is
    ``initial × multiplier^(n-1)``, capped at `maximum`, spread by ±`jitter` (a fraction), never
    shorter than a server's Retry-After hint, and never past the deadline `timeout`: the last poll
    lands on the deadline itself.

    Attributes:
        initial: First wait, seconds.
        maximum: Longest wait, seconds.
        multiplier: Growth factor per poll (1 means a fixed interval).
        jitter: Fraction of random spread, 0 ≤ jitter < 1.
        timeout: Deadline of a wait in seconds from its start; None waits forever.
        push_window: While a push source (`AsyncClient(push=...)`) is live, a job is polled
            only after this many seconds without a notification about it (its next poll on
            the cadence above, if later); the first poll still comes at once, except for a
            job this client submitted while the source was live (its notifications all reach
            the wait, so the first one stands in).
    """

    initial: float = Field(default=1.0, gt=0)
    maximum: float = Field(default=30.0, gt=0)
    multiplier: float = Field(default=1.5, ge=1)
    jitter: float = Field(default=0.1, ge=0, lt=1)
    timeout: float | None = Field(default=3 * 3600.0, gt=0)
    push_window: float = Field(default=60.0, gt=0)

    _to_seconds = field_validator("initial", "maximum", "timeout", "push_window", mode="before")(
        _seconds
    )

    @model_validator(mode="after")
    def _maximum_not_below_initial(self) -> Cadence:
        if self.maximum < self.initial:
            raise ValueError(f"maximum ({self.maximum}) must be ≥ initial ({self.initial})")
        return self


class RetryPolicy(_Policy):
    """What to do when one request fails with a transient error.

    Retried: connection errors and timeouts (when `retry_connection_errors`), and the HTTP
    statuses in `statuses` (429 and 5xx gateway errors by default). A 429's or 503's Retry-After
    is honoured: the wait is never shorter. Everything else fails at once, and when the retries
    run out the last error is raised.

    The wait before retry *n* (0-based) is ``initial × multiplier^n`` capped at `maximum`,
    spread by ±`jitter` (a fraction), plus a uniform random ``0…jitter_seconds``, and capped at
    `maximum` again when `jitter_seconds` is set. Retrying stops at whichever limit comes first:
    `max_attempts` or `max_elapsed` (at least one must be set).

    Attributes:
        max_attempts: Total attempts, the first included (1 disables retries); None: no count,
            only `max_elapsed` limits the retries.
        initial: First wait, seconds.
        maximum: Longest wait, seconds.
        multiplier: Growth factor per attempt.
        jitter: Fraction of random spread, 0 ≤ jitter < 1.
        jitter_seconds: Random seconds (0 up to this) added to every wait.
        max_elapsed: Give up once this many seconds passed since the first attempt; None: no limit.
        statuses: HTTP statuses worth retrying; ``"5XX"``-style patterns are expanded.
        retry_connection_errors: Whether connection errors and timeouts are retried.
    """

    max_attempts: int | None = Field(default=5, ge=1)
    initial: float = Field(default=0.5, ge=0)
    maximum: float = Field(default=30.0, ge=0)
    multiplier: float = Field(default=2.0, ge=1)
    jitter: float = Field(default=0.2, ge=0, lt=1)
    jitter_seconds: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    max_elapsed: float | None = Field(default=120.0, gt=0)
    statuses: frozenset[int] = _RETRY_STATUSES
    retry_connection_errors: bool = True

    _to_seconds = field_validator(
        "initial", "maximum", "max_elapsed", "jitter_seconds", mode="before"
    )(_seconds)

    _expand_patterns = field_validator("statuses", mode="before")(_status_patterns)
    _http_statuses = field_validator("statuses")(_http_statuses)

    @model_validator(mode="after")
    def _limits(self) -> RetryPolicy:
        if self.maximum < self.initial:
            raise ValueError(f"maximum ({self.maximum}) must be ≥ initial ({self.initial})")
        if self.max_attempts is None and self.max_elapsed is None:
            raise ValueError("set max_attempts or max_elapsed: retries must end")
        return self

    @classmethod
    def from_backoff(
        cls,
        *,
        initial_interval: float,
        max_interval: float,
        exponent: float,
        max_elapsed_time: float,
        retry_connection_errors: bool = False,
        strategy: str = "backoff",
    ) -> RetryPolicy:
        """The policy of a flux0-style (Speakeasy) ``RetryConfig(strategy, BackoffStrategy(…),
        retry_connection_errors)``; the times are in **milliseconds**, as there.

        The mapping: ``initial_interval`` → `initial`, ``max_interval`` → `maximum`,
        ``exponent`` → `multiplier`, ``max_elapsed_time`` → `max_elapsed` (each ÷ 1000); no
        attempt count (`max_attempts` None); their uniform 0–1 s added to each wait →
        `jitter_seconds` = 1 with `jitter` 0; statuses 429, 500, 502, 503, 504. A strategy
        other than ``"backoff"`` means a single attempt.

        Raises:
            pydantic.ValidationError: A value is out of range.
        """
        if strategy != "backoff":
            return cls(max_attempts=1, statuses=_RETRY_STATUSES)
        return cls(
            max_attempts=None,
            initial=initial_interval / 1000,
            maximum=max_interval / 1000,
            multiplier=exponent,
            jitter=0.0,
            jitter_seconds=1.0,
            max_elapsed=max_elapsed_time / 1000,
            statuses=_RETRY_STATUSES,
            retry_connection_errors=retry_connection_errors,
        )

    @classmethod
    def from_retry_config(cls, config: Any) -> RetryPolicy:
        """The policy of a flux0-style ``RetryConfig`` object (read by attribute: ``strategy``,
        ``backoff.initial_interval`` …, ``retry_connection_errors``); see `from_backoff`.

        Raises:
            ConfigurationError: The object lacks one of those attributes.
        """
        try:
            strategy = str(config.strategy)
            backoff = config.backoff
            values = {
                name: float(getattr(backoff, name))
                for name in ("initial_interval", "max_interval", "exponent", "max_elapsed_time")
            }
            connection = bool(config.retry_connection_errors)
        except (AttributeError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"not a RetryConfig: {exc}") from exc
        return cls.from_backoff(strategy=strategy, retry_connection_errors=connection, **values)


class SubmitPolicy(_Policy):
    """Which failed submits are sent again, by what the server could have done with them.

    A submit creates a job that may be paid for, so it is retried only when the failure proves
    that no job was created:

    - **never sent** (`retry_unsent`): the connection was never made (refused, DNS failure,
      TLS handshake or certificate refused, connect timeout). Nothing left the machine.
      Retried with the client's `RetryPolicy` backoff, within its `max_attempts` and
      `max_elapsed`; when those run out the spec is reported not submitted (a rerun sends it).
    - **not taken** (`retry_statuses`, 429 and 503 by default): the server answered that it
      did not take the request. Retried after the server's Retry-After (in a batch, the whole
      batch pauses), for as long as the server keeps saying so.
    - **refused** (any other 4xx): the server read the request and said no; nothing was
      created, the spec fails and a rerun sends it again.
    - **ambiguous** (every other 5xx, i.e. 500, 502, 504; a reset or a timeout after the
      request was written; a 2xx reply that cannot be read): the job may exist. Where the API
      can be asked (`look_up`), the batch looks up the tag it gave the submit; otherwise the
      spec is reported ``ambiguous_submit`` and sent again only with
      ``resubmit_ambiguous=True``.

    Attributes:
        retry_statuses: HTTP statuses that prove the server did not take the request. Add one
            (``"502"`` behind a gateway known to answer it before forwarding) or remove 503
            from a server that answers it after creating a job. ``"5XX"`` patterns expand.
        retry_unsent: Retry submits that certainly never left; False fails them at once.
        look_up: Tag every submit (PiXYZ: its ``name``, the spec key unless the spec names
            the job) and resolve an ambiguous one by looking the tag up in the API's job list.
        lookup_window: How long a tag not (yet) in the job list is looked for before the submit
            is taken as never created and sent again, for APIs that list a job only once it
            runs (PiXYZ lists no queued job, and names none before it runs). Longer than the
            longest queue wait you expect; None: a tag not found leaves the submit ambiguous.
    """

    retry_statuses: frozenset[int] = frozenset({429, 503})
    retry_unsent: bool = True
    look_up: bool = True
    lookup_window: float | None = Field(default=60.0, gt=0, allow_inf_nan=False)

    _to_seconds = field_validator("lookup_window", mode="before")(_seconds)
    _expand_patterns = field_validator("retry_statuses", mode="before")(_status_patterns)
    _http_statuses = field_validator("retry_statuses")(_http_statuses)


class DownloadPolicy(_Policy):
    """How outputs are saved.

    Attributes:
        name_template: File name of each output. Fields: ``{job_id}``, ``{index}``, ``{name}``
            (the suggested name without extension), ``{ext}`` (with its dot, from the URL or
            the API's media type), ``{kind}``, and the provider's own fields (Magic Hour:
            ``{project_name}``, ``{type}``); an unknown field fails the download, naming the
            fields there are.
        existing: What to do when a *different* file already has the target name:
            ``"rename"`` saves the new one as ``name (1).ext``, ``"skip"`` keeps the old one
            and downloads nothing, ``"overwrite"`` replaces it. A file with the same size
            (and checksum, when one is known) is always kept and not downloaded again.
        concurrency: Files downloaded at once.
        chunk_size: Bytes written per disk write (1 MiB measured best on 2 cores).
        stall_timeout: Seconds without a byte before the range is retried.
        bandwidth: Cap on the total bytes per second of all downloads; None: no cap.
        extract_archives: Extract zip archive outputs into ``<directory>/<archive name>/``.
        max_extract_bytes: Largest total size an archive may expand to.
        max_extract_ratio: Largest expansion ratio of an archive entry (zip-bomb guard).
        fsync: Flush each finished file to disk before renaming it (≈ 20 % slower).
        not_ready: How to wait for an output the server answers 425 Too Early for (a PiXYZ
            archive being packed): this cadence's intervals, then `NotReady` at its deadline.
        spool_directory: Where outputs bound for an fsspec URL (``s3://…``) wait, verified,
            before they are put there (a folder per destination inside it; a batch's default
            journal goes there too). None: ``$XDG_CACHE_HOME/pollkit/spool`` (``~/.cache``).
        storage_options: Keyword arguments for the fsspec filesystem of such a URL
            (``{"client_kwargs": {"endpoint_url": …}}``); never shown in a repr, they may be
            credentials. Empty: fsspec's own configuration and the store's environment.
    """

    name_template: str = "{job_id}-{index}{ext}"
    existing: Literal["rename", "skip", "overwrite"] = "rename"
    concurrency: int = Field(default=8, ge=1, le=256)
    chunk_size: int = Field(default=1 << 20, ge=16 << 10, le=64 << 20)
    stall_timeout: float = Field(default=30.0, gt=0)
    bandwidth: float | None = Field(default=None, gt=0)
    extract_archives: bool = False
    max_extract_bytes: int = Field(default=4 << 30, gt=0)
    max_extract_ratio: float = Field(default=200.0, gt=1)
    fsync: bool = False
    not_ready: Cadence = Cadence(initial=1.0, maximum=5.0, multiplier=1.5, timeout=600.0)
    spool_directory: Path | None = None
    storage_options: Mapping[str, Any] = Field(default_factory=dict, repr=False)

    _to_seconds = field_validator("stall_timeout", mode="before")(_seconds)

    @field_validator("name_template")
    @classmethod
    def _well_formed(cls, value: str) -> str:
        import string

        if not value.strip():
            raise ValueError("must not be empty")
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
        except ValueError as exc:
            raise ValueError(f"malformed template: {exc}") from exc
        bad = [f for f in fields if not f.isidentifier()]
        if bad:
            raise ValueError(f"fields must be plain names, got {bad}")
        return value
