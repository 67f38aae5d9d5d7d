"""The durations cache file: where it lives, what it holds, and that it survives bad days."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from pollkit.client import _duration_cache as cache


def test_the_path_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("POLLKIT_CACHE_DIR", str(tmp_path / "mine"))
    assert cache.cache_path() == tmp_path / "mine" / "durations.json"
    monkeypatch.delenv("POLLKIT_CACHE_DIR")
    monkeypatch.setattr(cache.sys, "platform", "linux")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_path() == tmp_path / "xdg" / "pollkit" / "durations.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_path() == tmp_path / "home" / ".cache" / "pollkit" / "durations.json"


@pytest.mark.parametrize(
    ("value", "enabled"), [(None, True), ("0", True), ("1", False), ("yes", False)]
)
def test_opt_out(monkeypatch: pytest.MonkeyPatch, value: str | None, enabled: bool) -> None:
    if value is not None:
        monkeypatch.setenv("POLLKIT_NO_CACHE", value)
    assert cache.enabled() is enabled


def test_saves_merge_with_the_file_and_keep_the_latest(tmp_path: Path) -> None:
    where = tmp_path / "durations.json"
    assert cache.load(where) == {}
    cache.save({"magichour:image": [1.0, 2.0]}, where)
    cache.save({"magichour:image": [3.0], "pixy:-": [4.0]}, where)
    assert cache.load(where) == {"magichour:image": [1.0, 2.0, 3.0], "pixy:-": [4.0]}
    cache.save({"g": [float(i + 1) for i in range(cache.MAX_PER_GROUP + 10)]}, where)
    kept = cache.load(where)["g"]
    assert len(kept) == cache.MAX_PER_GROUP
    assert kept[-1] == cache.MAX_PER_GROUP + 10  # the most recent ones
    assert [p.name for p in tmp_path.iterdir()] == ["durations.json"]  # no temporary left


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"version": 99, "groups": {"g": [1.0]}}),
        "",
    ],
)
def test_a_corrupt_file_is_ignored_then_replaced(tmp_path: Path, text: str) -> None:
    where = tmp_path / "durations.json"
    where.write_text(text)
    assert cache.load(where) == {}
    cache.save({"g": [2.5]}, where)
    assert cache.load(where) == {"g": [2.5]}


def test_bad_values_in_a_file_are_dropped(tmp_path: Path) -> None:
    where = tmp_path / "durations.json"
    groups = {"g": [1.0, -2, "x", True, float("inf"), 3], "h": "nope", "i": []}
    where.write_text(json.dumps({"version": 1, "groups": groups}))
    assert cache.load(where) == {"g": [1.0, 3.0]}


def test_concurrent_saves_lose_no_group_and_never_break_the_file(tmp_path: Path) -> None:
    where = tmp_path / "durations.json"
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        start.wait()
        for i in range(20):
            cache.save({f"group-{n}": [float(i + 1)]}, where)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    found = cache.load(where)
    # Each writer's last save re-read the file first: the file is whole and every group that
    # wrote last is there (a concurrent save may drop another's latest samples, not the file).
    assert found
    assert all(name.startswith("group-") for name in found)
    assert json.loads(where.read_text())["version"] == 1


def test_an_unwritable_place_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cache.save({"g": [1.0]}, blocker / "durations.json")  # its parent is a file
    assert "could not save" in caplog.text


def test_clear(tmp_path: Path) -> None:
    where = tmp_path / "durations.json"
    cache.save({"g": [1.0]}, where)
    assert cache.clear(where) is True
    assert cache.clear(where) is False
    assert cache.load(where) == {}
