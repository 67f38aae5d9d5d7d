"""A batch on a Dask cluster: one runner per worker, PostgreSQL the one source of truth.

`run_on_cluster` (and `run_on_cluster_sync`) load a batch into a shared ``postgresql://``
journal, put one long-lived runner on every Dask worker (`RunnerPlugin` holds each worker's
client, journal and output store) and yield every job's `Result` as any runner finishes it.
Nothing that matters lives in Dask's memory. The guide is docs/guides/cluster.md.

Needs the ``dask`` extra (``pip install 'pollkit[dask]'``) and the ``postgres`` one; importing
this package without Dask raises an `ImportError` that says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pollkit._lazy import exports

try:
    import distributed  # noqa: F401  # only to fail here, with the extra's name
except ImportError as exc:
    raise ModuleNotFoundError(
        "pollkit.cluster runs batches on Dask, which is not installed: pip install 'pollkit[dask]'",
        name="distributed",
    ) from exc

if TYPE_CHECKING:
    from pollkit.batch._settled import result_of
    from pollkit.cluster._driver import run_on_cluster, run_on_cluster_sync
    from pollkit.cluster._plugin import RunnerPlugin, RunnerSettings

__getattr__, __dir__ = exports(
    __name__,
    globals(),
    {
        "pollkit.batch._settled": ("result_of",),
        "pollkit.cluster._driver": ("run_on_cluster", "run_on_cluster_sync"),
        "pollkit.cluster._plugin": ("RunnerPlugin", "RunnerSettings"),
    },
)

__all__ = ["RunnerPlugin", "RunnerSettings", "result_of", "run_on_cluster", "run_on_cluster_sync"]
