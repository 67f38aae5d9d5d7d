"""What a simulated service does: durations, outcomes, faults and file sizes, all from one seed."""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["SCENARIOS", "LogNormal", "Scenario"]

# The standard normal's 95th percentile: p95 = median * exp(sigma * _Z95).
_Z95 = 1.6448536269514722


class LogNormal(BaseModel):
    """A log-normal duration, given by its median and 95th percentile (simulated seconds).

    Real render times have a long right tail: most jobs take about the median, a few take
    several times longer. In a scenario, write ``LogNormal(median=8, p95=30)`` or, in JSON,
    ``{"lognormal": {"median": 8, "p95": 30}}``.

    Attributes:
        median: Half of the durations are shorter than this.
        p95: 95% of the durations are shorter than this; equal to `median` means a constant.
        maximum: No duration is longer than this: the distribution is truncated there (drawn
            again, in effect, so no value piles up at the cap). None: no cap.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    median: float = Field(gt=0, allow_inf_nan=False)
    p95: float = Field(gt=0, allow_inf_nan=False)
    maximum: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _check_order(self) -> LogNormal:
        if self.p95 < self.median:
            raise ValueError(f"p95 must be >= median, got median={self.median}, p95={self.p95}")
        if self.maximum is not None and self.maximum < self.median:
            raise ValueError(
                f"maximum must be >= median, got median={self.median}, maximum={self.maximum}"
            )
        return self

    @property
    def mu(self) -> float:
        """Mean of the underlying normal distribution (the log of the median)."""
        return math.log(self.median)

    @property
    def sigma(self) -> float:
        """Standard deviation of the underlying normal distribution."""
        return math.log(self.p95 / self.median) / _Z95

    def quantile(self, q: float) -> float:
        """The duration below which a share `q` (0 < q < 1) of the draws fall.

        Raises:
            ValueError: `q` is not strictly between 0 and 1.
        """
        if not 0 < q < 1:
            raise ValueError(f"q must be between 0 and 1 (exclusive), got {q}")
        if self.sigma == 0:
            return self.median
        normal = NormalDist(self.mu, self.sigma)
        if self.maximum is not None:
            q *= normal.cdf(math.log(self.maximum))
        return min(math.exp(normal.inv_cdf(q)), self.maximum or math.inf)


#: A duration as a scenario stores it: a uniform range ``(low, high)`` or a log-normal.
Duration = tuple[float, float] | LogNormal


def _as_duration(value: Any) -> Any:
    # A single number means a constant duration; keep one representation internally.
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value), float(value))
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, dict) and set(value) == {"lognormal"}:
        return LogNormal.model_validate(value["lognormal"])
    return value


class Scenario(BaseModel):
    """How the simulator behaves. Everything random derives from `seed`.

    Durations are in simulated seconds; the simulator's clock runs `time_scale` simulated
    seconds per real second, so with ``time_scale=1000`` a 30 s render takes 30 ms.

    Attributes:
        seed: Seed of every random choice (durations, outcomes, file bytes, ids, faults).
        time_scale: Simulated seconds per real second.
        queue_delay: Time a job stays `queued`: drawn uniformly from a range ``(low, high)``, a
            single number for a constant, or a `LogNormal` (``{"lognormal": {"median": …,
            "p95": …}}`` in JSON).
        render_time: Time a job stays `rendering`, given the same ways.
        failure_rate: Probability that a job ends in `error`.
        cancel_rate: Probability that a job ends in `canceled`.
        url_ttl: Simulated seconds a download URL stays valid after the GET that issued it.
        image_size: Width and height of generated PNG images.
        video_bytes: Size of each generated video file.
        http_error_rate: Probability that an API request answers a random 500/502/503/504.
        rate_limit_rate: Probability that an API request starts a burst of 429s with
            ``Retry-After``.
        rate_limit_burst: Length of each such burst: that request and the next ones, up to a
            number drawn uniformly from ``(low, high)`` (a single number: always that many),
            answer 429 — consecutive API requests in the order the server receives them, as a
            rate limiter's window does, not independent draws.
        retry_after: Value of that ``Retry-After`` header, in real seconds.
        api_reset_rate: Probability that an API request's connection is reset (TCP RST)
            before any answer, the way a load balancer drops it; the handler never runs.
        deleted_read: What a GET of a deleted project shows: the project with
            ``enabled: false`` (``"disabled"``) or 404 (``"not_found"``).
        basename: Download URL file names: ``"per_project"`` (``output-0.png`` in every
            project, so naive clients collide) or ``"unique"`` (``<id>-0.png``).
        truncate_rate: Probability that a download body ends early: the headers promise the
            whole length, about half is sent, then the connection is closed.
        reset_rate: Probability that a download is reset (TCP RST) after about half its body.
        stall_rate: Probability that a download body pauses `stall_seconds` after about half.
        stall_seconds: Length of those pauses, in real seconds.
        slow_rate: Probability that a download body is paced at `slow_bandwidth` (drawn apart
            from the three faults above, so a slow body may also break).
        slow_bandwidth: Bytes per real second of those slow bodies.
        range_support: False makes downloads ignore ``Range`` and ``If-Range`` (always 200 with
            the whole body) and drop ``Accept-Ranges``, like a server without range support.
        etag_changes: True gives every download response a fresh ``ETag`` and
            ``Last-Modified``, as if the file were re-uploaded between requests (the bytes stay
            the same), so an ``If-Range`` with an older validator never matches.
        bandwidth: Bytes per real second of each download body; None is unlimited.
        pixy_update: Whether Pixy's ``PATCH`` route exists (``"enabled"``: 200 with the item)
            or not (``"disabled"``: 405, as the published image service answers).
        archive_delay: Simulated seconds PiXYZ takes to pack a job's outputs archive after the
            first request for it (which answers 425, as does every request until it is packed).
        unknown_status_rate: Probability that a job, partway through its render, shows for a
            while a native status its API might add one day but clients do not know (Magic
            Hour ``paused``, Pixy ``postprocessing``, PiXYZ ``PROGRESS``) in status reads
            (single and listed), then goes on as before. The window starts between 30% and 60%
            of the render and lasts a fifth of it, so a client polling a few times per render
            sees it for a poll or two; it never hides a terminal status.

    The download switches apply to output files, blobs and archives (``/_sim/files/``,
    ``/_sim/blobs/``, ``/_sim/archives/``) and to PiXYZ's file and archive routes, never to
    control routes; they draw from their own random stream, so turning them on does not change
    job outcomes or API faults. Likewise slow bodies and unknown statuses have streams of their
    own: a scenario without them draws exactly what it drew before they existed.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 0
    time_scale: float = Field(default=1.0, gt=0)
    queue_delay: Duration = (1.0, 3.0)
    render_time: Duration = (5.0, 20.0)
    failure_rate: float = Field(default=0.0, ge=0, le=1)
    cancel_rate: float = Field(default=0.0, ge=0, le=1)
    url_ttl: float = Field(default=86400.0, gt=0)
    image_size: tuple[int, int] = (256, 256)
    video_bytes: int = Field(default=256 * 1024, ge=64)
    http_error_rate: float = Field(default=0.0, ge=0, le=1)
    rate_limit_rate: float = Field(default=0.0, ge=0, le=1)
    rate_limit_burst: tuple[int, int] = (1, 1)
    retry_after: float = Field(default=1.0, ge=0)
    api_reset_rate: float = Field(default=0.0, ge=0, le=1)
    deleted_read: Literal["disabled", "not_found"] = "disabled"
    basename: Literal["per_project", "unique"] = "per_project"
    truncate_rate: float = Field(default=0.0, ge=0, le=1)
    reset_rate: float = Field(default=0.0, ge=0, le=1)
    stall_rate: float = Field(default=0.0, ge=0, le=1)
    stall_seconds: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    slow_rate: float = Field(default=0.0, ge=0, le=1)
    slow_bandwidth: float = Field(default=256 * 1024, gt=0, allow_inf_nan=False)
    range_support: bool = True
    etag_changes: bool = False
    bandwidth: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    pixy_update: Literal["disabled", "enabled"] = "disabled"
    archive_delay: Duration = (1.0, 3.0)
    unknown_status_rate: float = Field(default=0.0, ge=0, le=1)

    @field_validator("queue_delay", "render_time", "archive_delay", mode="before")
    @classmethod
    def _coerce_duration(cls, value: Any) -> Any:
        return _as_duration(value)

    @field_validator("queue_delay", "render_time", "archive_delay")
    @classmethod
    def _check_range(cls, value: Duration) -> Duration:
        if isinstance(value, LogNormal):
            return value
        low, high = value
        if low < 0 or high < low:
            raise ValueError(
                f"must be a number >= 0 or a range (low, high) with 0 <= low <= high, got {value}"
            )
        return value

    @field_validator("rate_limit_burst", mode="before")
    @classmethod
    def _coerce_burst(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return (value, value)
        return tuple(value) if isinstance(value, list) else value

    @field_validator("rate_limit_burst")
    @classmethod
    def _check_burst(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if low < 1 or high < low:
            raise ValueError(
                f"must be a count >= 1 or a range (low, high), 1 <= low <= high: {value}"
            )
        return value

    @field_validator("image_size")
    @classmethod
    def _check_size(cls, value: tuple[int, int]) -> tuple[int, int]:
        width, height = value
        if not (1 <= width <= 8192 and 1 <= height <= 8192):
            raise ValueError(f"width and height must be between 1 and 8192, got {value}")
        return value

    @model_validator(mode="after")
    def _check_rates(self) -> Scenario:
        # Each draw picks at most one outcome / one fault, so the probabilities must fit in 1.
        if self.failure_rate + self.cancel_rate > 1:
            raise ValueError("failure_rate + cancel_rate must not exceed 1")
        if self.http_error_rate + self.rate_limit_rate + self.api_reset_rate > 1:
            raise ValueError("http_error_rate + rate_limit_rate + api_reset_rate must not exceed 1")
        if self.truncate_rate + self.reset_rate + self.stall_rate > 1:
            raise ValueError("truncate_rate + reset_rate + stall_rate must not exceed 1")
        return self

    def replace(self, **changes: Any) -> Scenario:
        """A copy with some fields changed, validated like a new scenario.

        Raises:
            pydantic.ValidationError: A changed value is invalid.
        """
        return Scenario(**{**self.model_dump(), **changes})


SCENARIOS: dict[str, Scenario] = {
    # Close to the real service: seconds in the queue, tens of seconds rendering.
    "default": Scenario(),
    # For tests: the same shape, a thousand times faster (a job takes 6–23 ms).
    "fast": Scenario(time_scale=1000.0),
    # For the README demo: jobs take about 1–4 real seconds and some fail, so a dozen jobs
    # show progress bars moving at different speeds and a few failures.
    "demo": Scenario(
        time_scale=5.0, queue_delay=(1.0, 4.0), render_time=(4.0, 16.0), failure_rate=0.15
    ),
    # For retry logic: fast, with transient server errors and rate limiting.
    "flaky": Scenario(
        time_scale=1000.0, http_error_rate=0.05, rate_limit_rate=0.03, retry_after=0.05
    ),
    # For download engines: fast, with bodies that end early, resets and two-second stalls
    # mid-body, on a server that otherwise behaves (ranges honoured, stable validators).
    "downloads-flaky": Scenario(
        time_scale=1000.0,
        truncate_rate=0.05,
        reset_rate=0.02,
        stall_rate=0.02,
        stall_seconds=2.0,
        etag_changes=False,
    ),
    # For the batch benchmark: real time, render times with a long tail (median 8 s, p95
    # 30 s, none over a minute, so a thousand jobs end within about a minute), tiny outputs so
    # that downloads cost little next to polling, and no failures.
    "batch": Scenario(
        queue_delay=(0.5, 2.0),
        render_time=LogNormal(median=8.0, p95=30.0, maximum=60.0),
        image_size=(64, 64),
        video_bytes=64 * 1024,
    ),
    # For benchmarks that track many jobs at once: real time, renders of 10–20 minutes, so
    # every job stays in flight for the whole measuring window.
    "long": Scenario(
        queue_delay=(0.5, 2.0),
        render_time=(600.0, 1200.0),
        image_size=(64, 64),
        video_bytes=64 * 1024,
    ),
    # Everything at once, for end-to-end runs of every provider (tests/e2e/test_chaos.py,
    # benchmarks/bench_chaos.py). On API requests: 5% 5xx, 2% connection resets, and 429
    # bursts (1% of requests start one of 3–6 consecutive 429s, Retry-After 50 ms). On
    # download bodies: 3% truncated, 2% reset, 2% stalled for a second, 5% slowed to
    # 256 KiB/s. Jobs: 5% fail, 2% are canceled, 5% show an unknown native status for a while
    # mid-render. PiXYZ archives take 20–60 s to pack, so they answer 425 several times.
    #
    # URLs expire 30 simulated seconds after the reply that issued them, as asked of the
    # scenario. Time runs 20× real time, so that is 1.5 s of real time, and renders of 5–20
    # simulated seconds take 0.25–1 s: a URL used at once never expires, one used after a
    # stall, a slow or broken first attempt, or a wait for a download slot sometimes does,
    # and the client must re-read the job for a fresh one. Faster clocks make expiry the rule
    # rather than the exception: at 100× (0.3 s) a thousand-job run on two cores, where the
    # CPU-bound client queues downloads for a second or two, met an expired URL on most of
    # its downloads; at 1000× (30 ms) nearly every one would.
    "chaos": Scenario(
        time_scale=20.0,
        queue_delay=(1.0, 3.0),
        render_time=(5.0, 20.0),
        failure_rate=0.05,
        cancel_rate=0.02,
        url_ttl=30.0,
        image_size=(128, 128),
        video_bytes=128 * 1024,
        http_error_rate=0.05,
        api_reset_rate=0.02,
        rate_limit_rate=0.01,
        rate_limit_burst=(3, 6),
        retry_after=0.05,
        truncate_rate=0.03,
        reset_rate=0.02,
        stall_rate=0.02,
        stall_seconds=1.0,
        slow_rate=0.05,
        slow_bandwidth=256 * 1024,
        archive_delay=(20.0, 60.0),
        unknown_status_rate=0.05,
    ),
}
