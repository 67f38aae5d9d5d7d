"""A PiXYZ Scheduler pipeline against the embedded simulator: convert a CAD file to glTF,
render its thumbnails, and download them, the archive of the first job included.

    python examples/pixyz_pipeline.py [--out DIR]

Against a real scheduler, replace the simulator with
``Pixyz(api_key=os.environ["PIXYZ_API_KEY"], base_url="http://scheduler:8001")``.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pollkit
from pollkit import PixyzClient
from pollkit.policies import DownloadPolicy
from pollkit.providers.pixyz import Pixyz
from pollkit.sim import Scenario, Simulator

# Jobs take 30–60 simulated seconds, the archive 5: a few real milliseconds at this scale.
SCENARIO = Scenario(
    time_scale=1000.0, queue_delay=(1.0, 3.0), render_time=(30.0, 60.0), archive_delay=5.0
)


def prepare(out: str) -> Path:
    """A CAD file to send (any bytes do: the simulator fakes the geometry)."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "bracket.step"
    model.write_bytes(b"ISO-10303-21;\n" + b"\x00" * 4096)
    return model


async def main(model: Path) -> int:
    folder = model.parent
    cadence = pollkit.Cadence(initial=0.01, maximum=0.2, timeout=60)
    # Files are saved under their own names (iso.png…), the archive is extracted beside it.
    policy = DownloadPolicy(
        name_template="{name}{ext}",
        extract_archives=True,
        not_ready=pollkit.Cadence(initial=0.01, maximum=0.1, timeout=30),
    )
    async with Simulator(SCENARIO) as sim:
        provider = Pixyz(api_key=sim.api_key, base_url=sim.urls["pixyz"])
        async with PixyzClient(provider, cadence=cadence, download=policy) as pixyz:
            print(await pixyz.welcome(), "processes:", ", ".join(await pixyz.processes()))
            convert = await pixyz.submit(
                {"process": "convert_file", "file": str(model), "params": {"extension": "glb"}}
            )
            thumbs = await pixyz.submit(
                {
                    "process": "generate_thumbnails",
                    "file": str(model),
                    "params": {"width": 64, "height": 64},
                    "name": "bracket-thumbs",
                }
            )
            converted = await pixyz.check_result(
                convert.job_id, download_directory=folder / "converted"
            )
            rendered = await pixyz.check_result(
                thumbs.job_id, download_directory=folder / "thumbnails"
            )
            archive = await pixyz.download_archive(convert.job_id, folder / "archives")
    for result in (converted, rendered):
        result.raise_for_status()
        print(f"job {result.job_id}: {result.status} after {result.polls} polls")
        for path in result.downloaded_paths:
            print(f"  {path}")
    print(f"archive {archive.path} ({archive.size} bytes): {len(archive.extracted)} files")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="pollkit-pixyz-example")
    raise SystemExit(asyncio.run(main(prepare(parser.parse_args().out))))
