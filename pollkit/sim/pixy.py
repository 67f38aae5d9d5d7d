"""The Pixy dialect (APIS.md section 2): image, video and subtitle generation.

Served under ``/pixy`` on the simulator (see `pollkit.sim.Simulator.urls`).
"""

from __future__ import annotations

from aiohttp import web

__all__ = ["DIALECT", "PREFIX", "add_routes"]

DIALECT = "pixy"
PREFIX = "/pixy"


def add_routes(app: web.Application) -> None:
    """Register the dialect's routes on `app` (which holds `STATE` and `FAULTS`)."""
