"""pollkit.cluster without Dask: a clear error naming the extra; `--dask` checks its input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pollkit.errors import ConfigurationError


def test_importing_the_cluster_without_dask_names_the_extra() -> None:
    probe = """
import json, sys
sys.modules["distributed"] = None  # as if Dask were not installed
import pollkit, pollkit.cli  # the rest of pollkit imports without it
try:
    import pollkit.cluster
except ImportError as exc:
    print(json.dumps({"type": type(exc).__name__, "message": str(exc), "name": exc.name}))
"""
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    report = json.loads(done.stdout)
    assert report["type"] == "ModuleNotFoundError"
    assert report["name"] == "distributed"
    assert "pip install 'pollkit[dask]'" in report["message"]


@pytest.mark.parametrize("target", ["local:0", "local:x", "local:", "local:999"])
def test_a_local_cluster_needs_a_sensible_count(target: str) -> None:
    pytest.importorskip("distributed")
    from pollkit.cluster._connect import parse_local

    with pytest.raises(ConfigurationError, match="local:N"):
        parse_local(target)


def test_local_counts_and_addresses() -> None:
    pytest.importorskip("distributed")
    from pollkit.cluster._connect import parse_local

    assert parse_local("local:4") == 4
    assert parse_local("tcp://10.0.0.1:8786") is None


def test_the_batch_name_and_reprs_never_show_a_secret() -> None:
    pytest.importorskip("distributed")
    from pollkit import MagicHour
    from pollkit.cluster import RunnerPlugin, RunnerSettings
    from pollkit.cluster._driver import batch_name

    settings = RunnerSettings(
        provider=MagicHour(api_key="sk-very-secret", base_url="http://127.0.0.1:1"),
        journal="postgresql://u:pg-secret@db:5432/batch",
        download_directory="s3://bucket/run",
    )
    plugin = RunnerPlugin(settings, batch_name(settings))
    shown = repr(plugin) + repr(settings) + plugin.name
    assert "sk-very-secret" not in shown
    assert "pg-secret" not in shown
    assert "s3://bucket/run" in shown
    assert plugin.name.startswith("pollkit-batch-")
    # What Dask pickles to the workers is the settings, not a worker's live objects.
    assert set(plugin.__getstate__()) == {"settings", "name"}
