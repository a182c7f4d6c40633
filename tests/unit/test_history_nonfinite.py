"""A long history's downsampled curve keeps where a metric stopped being finite (issue 23, item 15)."""

from __future__ import annotations

from api.service.history import downsample


def test_downsampling_keeps_where_a_metric_stopped_being_finite():
    entries = [{"step": n, "loss": 1.0 / n} for n in range(1, 1001)]
    entries[700]["loss"] = "NaN"
    kept = downsample(entries, 20)
    assert len(kept) < 60 and {"step": 701, "loss": "NaN"} in kept
