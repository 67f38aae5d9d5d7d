"""Which Dask cluster a batch runs on: a scheduler's address, a client of the caller's, or
``local:N`` (a `LocalCluster` of N worker processes made for the batch and closed after it)."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator
from typing import TypeAlias

from distributed import Client, LocalCluster

from pollkit.errors import ConfigurationError

__all__ = ["DaskTarget", "connect", "parse_local"]

_log = logging.getLogger("pollkit.cluster")

#: A scheduler address (``tcp://host:8786``), ``local:N``, or a `distributed.Client`.
DaskTarget: TypeAlias = "Client | str"

_LOCAL = re.compile(r"^local:(\d+)$")


def parse_local(target: str) -> int | None:
    """N for ``local:N`` (1 ≤ N ≤ 256), None for any other address.

    Raises:
        ConfigurationError: ``local:`` followed by anything but such a number.
    """
    if not target.startswith("local:"):
        return None
    match = _LOCAL.match(target)
    count = int(match.group(1)) if match else 0
    if not 1 <= count <= 256:
        raise ConfigurationError(f"dask: {target!r}: write local:N with N workers, 1 to 256")
    return count


@contextlib.asynccontextmanager
async def connect(target: DaskTarget) -> AsyncIterator[Client]:
    """An asynchronous Dask client of `target`, for the length of the block.

    A client of the caller's that is asynchronous is used as it is; a blocking one lends its
    scheduler's address to a client of pollkit's own. What is made here is closed here.

    Raises:
        ConfigurationError: `target` is neither a client nor an address.
    """
    if isinstance(target, Client):
        if target.asynchronous:
            yield target
            return
        target = target.scheduler.address
    if not isinstance(target, str) or not target:
        raise ConfigurationError(f"dask: need a distributed.Client or an address, got {target!r}")
    workers = parse_local(target)
    async with contextlib.AsyncExitStack() as stack:
        if workers is not None:
            cluster = await stack.enter_async_context(
                LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",  # a free port: never fight over 8787
                    asynchronous=True,
                )
            )
            address = cluster.scheduler_address
            _log.info("started a LocalCluster of %d workers at %s", workers, address)
        else:
            address = target
        try:
            # Not `async with Client`: it sets a context variable that must be reset in the
            # same context, which a generator closed by the event loop's finalizer is not.
            client = await Client(address, asynchronous=True, set_as_default=False)
        except OSError as exc:
            raise ConfigurationError(f"dask: no scheduler at {address}: {exc}") from exc
        stack.push_async_callback(client.close)
        yield client
