"""The simulator's clock: simulated seconds that may run faster than real time."""

from __future__ import annotations

import math
import threading
import time
from datetime import datetime, timezone

__all__ = ["SimClock", "iso_millis"]


def iso_millis(epoch_seconds: float) -> str:
    """Format a Unix time as ISO-8601 UTC with milliseconds and ``Z``, as Magic Hour does."""
    moment = datetime.fromtimestamp(epoch_seconds, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class SimClock:
    """Simulated seconds since the clock started, running `time_scale` times real time.

    The simulated timeline maps onto wall time as ``wall_start + now()``. `wall_start` is a
    whole second so that URL expiry times (whole Unix seconds) compare exactly.

    Args:
        time_scale: Simulated seconds per real second.
    """

    def __init__(self, time_scale: float = 1.0) -> None:
        self.time_scale = time_scale
        self._lock = threading.Lock()
        self._offset = 0.0
        self.restart()

    def restart(self) -> None:
        """Set simulated time back to zero and re-anchor it to the current wall time."""
        with self._lock:
            self._t0 = time.monotonic()
            self._offset = 0.0
            self.wall_start = float(math.floor(time.time()))

    def now(self) -> float:
        """Simulated seconds since the clock started."""
        with self._lock:
            return (time.monotonic() - self._t0) * self.time_scale + self._offset

    def advance(self, seconds: float) -> float:
        """Jump simulated time forward, e.g. to expire URLs in a test without waiting.

        Args:
            seconds: Simulated seconds to add (>= 0).

        Returns:
            The new simulated time.

        Raises:
            ValueError: `seconds` is negative; the clock never runs backwards.
        """
        if seconds < 0:
            raise ValueError("the simulated clock cannot go backwards")
        with self._lock:
            self._offset += seconds
        return self.now()

    def wall(self, sim_seconds: float) -> float:
        """The Unix time that a simulated time corresponds to."""
        return self.wall_start + sim_seconds

    def sim_of_wall(self, epoch_seconds: float) -> float:
        """The simulated time that a Unix time corresponds to."""
        return epoch_seconds - self.wall_start
