"""The blocking client: submit a video job to the simulator, wait, download.

    python examples/check_result_sync.py [--out DIR]

`pollkit.Client` runs the async client on a private loop in a background thread, so the same
code also works inside a Jupyter cell.
"""

from __future__ import annotations

import argparse

import pollkit
from pollkit.sim import SCENARIOS, ThreadedSimulator


def main(out: str) -> int:
    with ThreadedSimulator(SCENARIOS["fast"]) as sim:
        provider = pollkit.MagicHour(api_key=sim.api_key, base_url=sim.url)
        cadence = pollkit.Cadence(initial=0.01, maximum=0.2, timeout=60)
        with pollkit.Client(provider, cadence=cadence) as client:
            job = client.submit(
                {"tool": "text-to-video", "end_seconds": 5, "style": {"prompt": "a paper boat"}}
            )
            result = client.check_result(
                job.job_id, download_directory=out, kind=job.kind, progress=True
            )
    result.raise_for_status()
    print(f"job {result.job_id}: {result.status} after {result.polls} polls")
    for path in result.downloaded_paths:
        print(f"  {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="pollkit-example")
    raise SystemExit(main(parser.parse_args().out))
