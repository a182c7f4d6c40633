"""The task context hands every report to a sink's ``track``, before step-only reports are merged for the row."""

from __future__ import annotations

import logging

from api.worker.trackers import flatten, points
from trainq.context import LocalSink, TaskContext


class Coalescing(LocalSink):
    coalesce_seconds = 3600.0  # the row would see one merged step-only report per hour

    def __init__(self) -> None:
        super().__init__(logging.getLogger("test"))
        self.tracked: list[dict] = []
        self.track = self.tracked.append


def test_every_step_is_tracked_though_the_row_gets_them_merged(tmp_path):
    sink = Coalescing()
    ctx = TaskContext(job_id="j", attempt=1, checkpoint_dir=tmp_path / "c", artifact_dir=tmp_path / "a",
                      workdir=tmp_path, log=logging.getLogger("test"), sink=sink)
    for step in range(1, 1001):
        ctx.report(step=step, loss=1.0 / step)
    ctx.report(epoch=1, val_loss=0.5)
    assert len(sink.tracked) == 1001 and [e["step"] for e in sink.tracked[:1000]] == list(range(1, 1001))
    assert len(sink.entries) < 10  # what the row's writer got: merged


def test_points_by_step_else_by_epoch():
    assert points({"step": 3, "loss": 0.5}) == [("loss", 0.5, 3)]
    assert points({"epoch": 2, "val": 1}) == [("val", 1.0, 2)]
    assert points({"step": 7, "epoch": 1, "acc": 0.9}) == [("acc", 0.9, 7), ("epoch", 1.0, 7)]
    assert points({"loss": None, "step": 1}) == []
    assert flatten({"a": {"b": 1}, "c": 2}) == {"a.b": 1, "c": 2}
