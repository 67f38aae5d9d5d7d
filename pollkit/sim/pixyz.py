"""The PiXYZ Scheduler dialect (APIS.md section 3): processes, jobs, outputs and archives.

Served under ``/pixyz`` on the simulator (see `pollkit.sim.Simulator.urls`).
"""

from __future__ import annotations

from aiohttp import web

__all__ = ["DIALECT", "PREFIX", "add_routes"]

DIALECT = "pixyz"
PREFIX = "/pixyz"


def add_routes(app: web.Application) -> None:
    """Register the dialect's routes on `app` (which holds `STATE` and `FAULTS`)."""
