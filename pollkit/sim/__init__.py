"""pollkit's embedded simulator: real HTTP servers that speak the vendors' job APIs.

Tests, the demo and benchmarks run against it instead of the real services::

    from pollkit.sim import SCENARIOS, Simulator

    async with Simulator(SCENARIOS["fast"]) as sim:
        sim.plan_next(outcome="error")      # the next job fails
        ...                                 # point a client at sim.url with sim.api_key
        sim.stats()                         # what the server saw and did

Dialects: Magic Hour (``/v1/...``), Pixy (``/pixy/...``), the PiXYZ Scheduler
(``/pixyz/...``) and flux0-style event streams (``/flux0/...``); ``sim.urls`` has each base
URL. Control routes live under ``/_sim/``; downloads under
``/_sim/files/`` (signed output files), ``/_sim/blobs/<name>?size=N&seed=S`` (deterministic
bytes of any size, see `pollkit.sim.transfer._blobs`) and ``/_sim/archives/<kind>.zip`` (hostile
zips, see `pollkit.sim.transfer._archives`). The scenario's download switches (truncation, resets,
stalls, bandwidth, no range support, changing ETags) and ``Simulator.inject`` body faults apply to
all three.
"""

from pollkit.sim._clock import SimClock
from pollkit.sim._scenario import SCENARIOS, Scenario
from pollkit.sim._server import Simulator, ThreadedSimulator

__all__ = ["SCENARIOS", "Scenario", "SimClock", "Simulator", "ThreadedSimulator"]
