"""The clients: `AsyncClient`, the engine that waits for one job, the blocking `Client`,
the per-API clients (`PixyClient`, `PixyzClient`) and flux0 run streaming.

The sync twin and the per-API clients call the async client; none re-implements it.
"""
