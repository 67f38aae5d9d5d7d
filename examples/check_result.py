"""Submit one image job to the embedded simulator, wait for it, and download the images.

    python examples/check_result.py [--out DIR]

Against the real API, replace the simulator with
``MagicHour(api_key=os.environ["MAGIC_HOUR_API_KEY"])``.
"""

from __future__ import annotations

import argparse
import asyncio

import pollkit
from pollkit.sim import SCENARIOS, Simulator


async def main(out: str) -> int:
    async with Simulator(SCENARIOS["fast"]) as sim:
        provider = pollkit.MagicHour(api_key=sim.api_key, base_url=sim.url)
        cadence = pollkit.Cadence(initial=0.01, maximum=0.2, timeout=60)
        async with pollkit.AsyncClient(provider, cadence=cadence) as client:
            job = await client.submit(
                {"tool": "ai-image-generator", "image_count": 2, "style": {"prompt": "a harbour"}}
            )
            result = await client.check_result(
                job.job_id,
                wait_for_completion=True,
                download_outputs=True,
                download_directory=out,
                kind=job.kind,
            )
    result.raise_for_status()
    print(f"job {result.job_id}: {result.status} after {result.polls} polls")
    for path, digest in zip(result.downloaded_paths, result.sha256, strict=True):
        print(f"  {path}  sha256={digest[:16]}…")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="pollkit-example")
    raise SystemExit(asyncio.run(main(parser.parse_args().out)))
