"""The stage threads behind `pollkit.transport._bodysink`: order per sink, and what a failure stops.

The end-to-end behaviour (faults, a full disk, cancellation) is tested through the simulator in
test_download_faults.py and test_bad_input.py; this pins the rule those rely on, which a full
disk cannot show deterministically: after a stage fails on an item, no later item of that sink
reaches any stage, earlier ones still go through every stage, and other sinks are untouched.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from pollkit.transport._bodysink import _Item, _Stages


@dataclass
class FakeSink:
    """Stands in for a `BodySink`: what the stage threads read and call on it."""

    name: str
    stages: tuple[object, ...] = ()
    failed_at: int | None = None
    reports: list[tuple[int, str]] = field(default_factory=list)
    expected: int = 0
    all_reported: threading.Event = field(default_factory=threading.Event)

    def report(self, item: _Item, error: BaseException | None, done: bool) -> None:
        outcome = "done" if done else ("failed" if error is not None else "dropped")
        self.reports.append((item.seq, outcome))
        if len(self.reports) == self.expected:
            self.all_reported.set()


def test_a_failed_stage_stops_the_sinks_later_items_and_no_other_sink() -> None:
    written: list[tuple[str, bytes]] = []
    hashed: list[tuple[str, bytes]] = []
    queued = threading.Event()

    def write(name: str, view: memoryview) -> None:
        queued.wait(5)  # every item is queued before the first one is written
        if name == "a" and bytes(view) == b"2":
            raise OSError(28, "No space left on device")
        written.append((name, bytes(view)))

    def digest(name: str, view: memoryview) -> None:
        hashed.append((name, bytes(view)))

    stages = _Stages(2)
    sinks = {
        name: FakeSink(
            name,
            stages=(lambda v, n=name: write(n, v), lambda v, n=name: digest(n, v)),
            expected=5,
        )
        for name in ("a", "b")
    }
    for seq in range(1, 6):
        for sink in sinks.values():
            stages.put(_Item(sink, seq, memoryview(str(seq).encode()), None))  # type: ignore[arg-type]
    queued.set()
    for sink in sinks.values():
        assert sink.all_reported.wait(5)

    a, b = sinks["a"], sinks["b"]
    assert a.failed_at == 2
    assert sorted(a.reports) == [(1, "done"), (2, "failed"), (3, "dropped"), (4, "dropped"),
                                 (5, "dropped")]  # fmt: skip
    assert [d for n, d in written if n == "a"] == [b"1"]  # nothing after the failed write
    assert [d for n, d in hashed if n == "a"] == [b"1"]
    assert b.failed_at is None
    assert b.reports == [(seq, "done") for seq in range(1, 6)]
    expected_b = [str(seq).encode() for seq in range(1, 6)]
    assert [d for n, d in written if n == "b"] == expected_b  # in order
    assert [d for n, d in hashed if n == "b"] == expected_b
