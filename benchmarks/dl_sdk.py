"""Child process of the download benchmark: the official magic-hour SDK's download helper.

    python benchmarks/dl_sdk.py URL_LIST DIRECTORY

Saves every URL of URL_LIST (one a line) into DIRECTORY with
``magic_hour.helpers.download.download_files_async``, the helper behind the SDK's
``check_result(download_outputs=True)``. It takes objects with a ``url`` attribute, fetches
one file at a time, holds each whole in memory, and names it after the URL's last path segment.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from types import SimpleNamespace

from magic_hour.helpers.download import download_files_async


def main() -> None:
    listing, directory = sys.argv[1:]
    urls = Path(listing).read_text().split()
    downloads = [SimpleNamespace(url=url) for url in urls]
    # The helper is annotated with the SDK's response models; it only reads `.url`.
    asyncio.run(download_files_async(downloads, download_directory=directory))


if __name__ == "__main__":
    main()
