"""A batch of Pixy images against the embedded simulator: submit, poll (through the list
endpoint), download.

    python examples/pixy_batch.py [--out DIR]

Against the real API, drop the simulator and use
``Pixy(api_key=os.environ["PIXY_API_KEY"])``: the key is checked once, before anything else.
"""

from __future__ import annotations

import argparse
import asyncio

import pollkit
from pollkit.providers.pixy import ImageGenProperties, Pixy
from pollkit.sim import SCENARIOS, Simulator

PROMPTS = ["a red kite over the sea", "a lighthouse at dusk", "a paper boat", "a harbour"]


async def main(out: str) -> int:
    specs = [ImageGenProperties(engine="flux_schnell", delineation=p).as_spec() for p in PROMPTS]
    # Midjourney answers with four images.
    specs.append(
        ImageGenProperties(engine="midjourney", delineation="a fox", aspect_ratio="16:9").as_spec()
    )
    async with Simulator(SCENARIOS["fast"]) as sim:
        provider = Pixy(api_key=sim.api_key, base_url=sim.urls["pixy"])
        cadence = pollkit.Cadence(initial=0.01, maximum=0.2, timeout=60)
        async with pollkit.AsyncClient(provider, cadence=cadence) as client:
            results = [r async for r in client.run(specs, download_directory=out)]
    failed = 0
    for result in results:
        if not result.ok:
            failed += 1
        engine = result.state.raw.get("engine")
        print(f"job {result.job_id} ({engine}): {result.status} after {result.polls} polls")
        for path in result.downloaded_paths:
            print(f"  {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="pollkit-pixy-example")
    raise SystemExit(asyncio.run(main(parser.parse_args().out)))
