"""`make bench-report` rewrites the sections it makes from bench/results and keeps what was written by hand."""

from __future__ import annotations

from pathlib import Path

from bench import report


def test_hand_written_sections_and_notes_are_kept(monkeypatch) -> None:
    monkeypatch.setattr(report, "load", lambda name: None)  # no results: every made section says "Not run yet"
    existing = "\n".join([
        "# Benchmarks", "", "old intro", "",
        "## 1. Cancel latency", "", "an old table", "",
        "## 11. The scheduler", "", "a side-by-side run, by hand", "",
        "## 13. Sweeps", "", "an old table", "", report.HAND, "", "why a target was missed", "",
    ])
    out = report.render(existing)
    headings = [line for line in out.splitlines() if line.startswith("## ")]
    assert headings.index("## 1. Cancel latency") < headings.index("## 11. The scheduler") \
        < headings.index("## 13. Sweeps")
    assert "a side-by-side run, by hand" in out and "why a target was missed" in out
    assert "an old table" not in out and "old intro" not in out
    sweeps = out.split("## 13. Sweeps", 1)[1]
    assert sweeps.index("Not run yet.") < sweeps.index(report.HAND) < sweeps.index("why a target was missed")


def test_the_committed_file_is_what_the_report_makes_of_it(monkeypatch) -> None:
    monkeypatch.setattr(report, "plot", lambda name, draw: f"bench/results/{name}.png")  # no PNG rewritten
    committed = (Path(report.REPO) / "BENCHMARKS.md").read_text()
    assert report.render(committed) == committed
