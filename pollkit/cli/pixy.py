"""`pollkit pixy …`: the pixy command family."""

from __future__ import annotations

from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the `pixy` command to the `pollkit` parser."""
