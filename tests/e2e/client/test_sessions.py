"""Who closes the HTTP session: pollkit closes what it created, never what it was given."""

from __future__ import annotations

import gc
import warnings

import aiohttp

from pollkit import AsyncClient, MagicHour
from pollkit.sim import Simulator
from tests.helpers import FROZEN


async def _drop_a_used_client(
    sim: Simulator, session: aiohttp.ClientSession | None = None
) -> aiohttp.ClientSession:
    """Make a client do a real request (a pooled connection stays open), then drop it.

    Returns the session the client used; the client itself is gone when this returns.
    """
    async with (
        aiohttp.ClientSession() as seed,
        seed.post(
            f"{sim.url}/v1/ai-image-generator",
            json={"image_count": 1, "style": {"prompt": "x"}},
            headers={"Authorization": f"Bearer {sim.api_key}"},
        ) as reply,
    ):
        job_id = (await reply.json())["id"]
    client = AsyncClient(MagicHour(api_key=sim.api_key, base_url=sim.url), session=session)
    await client.get(job_id, kind="image")
    return client._transport.session


async def test_a_client_never_closed_closes_its_session_when_collected() -> None:
    async with Simulator(FROZEN) as sim:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            session = await _drop_a_used_client(sim)
            gc.collect()
        assert session.closed
        assert not [w for w in caught if "Unclosed" in str(w.message)]


async def test_a_session_of_the_users_stays_open_when_the_client_is_collected() -> None:
    async with Simulator(FROZEN) as sim, aiohttp.ClientSession() as mine:
        used = await _drop_a_used_client(sim, session=mine)
        gc.collect()
        assert used is mine
        assert not mine.closed
        async with mine.get(f"{sim.url}/_sim/stats") as reply:
            assert reply.status == 200  # still usable
