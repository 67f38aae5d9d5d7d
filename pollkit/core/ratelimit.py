"""A token bucket: how long to wait before sending more bytes under a bandwidth cap."""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    """`rate` tokens per second, holding at most `burst`.

    Pure: the caller passes the time in and sleeps for what `reserve` answers.
    """

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self.burst = burst if burst is not None else rate  # one second of traffic
        self._tokens = self.burst
        self._at: float | None = None

    def reserve(self, amount: float, now: float) -> float:
        """Take `amount` tokens at time `now`; return the seconds to wait before using them.

        Tokens may go negative: a large request is granted and later ones wait for it, so a
        chunk bigger than the burst never blocks forever.
        """
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= amount
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate
