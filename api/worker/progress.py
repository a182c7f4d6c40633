"""A running attempt's progress: the task's reports written to its row by a thread of its own."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from typing import Any

from sqlalchemy import func, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from api.worker.liveness import Beat, this_attempts_row
from trainq.context import resolve_entry


class ProgressWriter:
    """A task's reports, written to the job's row by a thread of its own, at most once per ``interval``: the
    training thread only adds each report to a list under a lock (microseconds), and a new checkpoint is
    written at once. Reports with an ``epoch`` all go into the row's history; step-only reports are sampled,
    the newest per write, so a loop that reports every step still draws a curve without growing the row by a
    point per step. The final numbers come with the completion. Remembers whether the row refused a write.
    Progress is best effort: while PostgreSQL is down it is kept for the next write, and training goes on."""

    def __init__(self, job_id: str, attempt: int, interval: float, engine: Engine,
                 jlog: logging.LoggerAdapter) -> None:
        self.job_id, self.attempt, self.engine, self.jlog = uuid.UUID(job_id), attempt, engine, jlog
        self._lock = threading.Lock()  # the reports below; held for microseconds, never during a write
        self._write_lock = threading.Lock()  # one write at a time, in order
        # reports not yet in the row's history, in order; of consecutive step-only reports, only the newest
        self._pending: list[dict[str, Any]] = []
        self._changed = False  # anything to write since the last write
        self._first_write = True
        self.latest: dict[str, Any] = {}  # every metric's newest value, with the newest step and epoch
        self._total_steps: int | None = None
        self._total_epochs: int | None = None
        self.checkpoint_path: str | None = None
        self.refused = False
        self._thread = Beat(f"job-progress-{job_id}", interval, self.write_if_changed)

    def report(self, entry: dict[str, Any]) -> None:
        with self._lock:
            if "epoch" not in entry and self._pending and "epoch" not in self._pending[-1]:
                self._pending[-1] = entry
            else:
                self._pending.append(entry)
            self.latest.update(entry)
            self._changed = True

    def totals(self, steps: int | None, epochs: int | None) -> None:
        """How many steps and epochs the task said it takes (the progress bar's totals)."""
        with self._lock:
            self._total_steps, self._total_epochs, self._changed = steps, epochs, True

    def checkpointed(self, path: str) -> None:
        with self._lock:
            self.checkpoint_path, self._changed = path, True
        self.write()  # never miss a new checkpoint: a lost attempt resumes from the row's

    def write_if_changed(self) -> None:
        if self._changed:
            self.write()

    def write(self) -> None:
        with self._write_lock:
            with self._lock:  # take what is there; reading CUDA values (waits for the GPU) happens outside
                sent, latest, self._pending, self._changed = self._pending, dict(self.latest), [], False
            values = {**self._fields(sent, latest), "heartbeat_at": func.now(), "updated_at": func.now()}
            try:
                with self.engine.begin() as conn:
                    written = conn.execute(this_attempts_row(self.job_id, self.attempt).values(**values)).rowcount
            except SQLAlchemyError as exc:
                with self._lock:  # kept for the next write
                    self._pending, self._changed = sent + self._pending, True
                self.jlog.warning("progress not saved, database unavailable (%s)", exc.__class__.__name__)
                return
            if sent:
                self._first_write = False
            if not written:
                self.refused = True

    def __enter__(self) -> ProgressWriter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.stop()  # what it has not written comes with the attempt's last transition

    def progress_fields(self, final: dict[str, Any] | None = None) -> dict[str, Any]:
        """The row's progress columns from the reports so far (``final``: the task's final metrics)."""
        with self._lock:
            pending, latest = list(self._pending), dict(self.latest)
        return self._fields(pending, latest, final)

    def outcome_fields(self, final: dict[str, Any]) -> dict[str, Any]:
        """What ``progress_fields`` writes, as plain JSON (``api.record.outcome``): the history entries not yet
        written."""
        with self._lock:
            pending, latest = list(self._pending), dict(self.latest)
        fields = self._fields([], latest, final)
        fields["history"] = [resolve_entry(entry) for entry in pending]
        return fields

    def _fields(self, pending: list[dict[str, Any]], latest: dict[str, Any],
                final: dict[str, Any] | None = None) -> dict[str, Any]:
        latest = resolve_entry(latest)
        metrics = {k: v for k, v in latest.items() if k not in ("step", "epoch")}
        metrics.update(final or {})
        values: dict[str, Any] = {"metrics": metrics or None, "total_steps": self._total_steps,
                                  "total_epochs": self._total_epochs}
        for axis in ("epoch", "step"):
            if axis in latest:
                values[axis] = latest[axis]
        if self.checkpoint_path:
            values["checkpoint_path"] = self.checkpoint_path
        if pending:
            values["history"] = self._history_with([resolve_entry(entry) for entry in pending])
        return values

    def _history_with(self, entries: list[dict[str, Any]]) -> Any:
        """The ``history`` column with ``entries`` appended. An attempt's first write first drops what it
        reports again: a resumed attempt trains again from its checkpoint's epoch (or step)."""
        axis = next((axis for axis in ("epoch", "step") if axis in entries[0]), None)
        if not self._first_write or axis is None:
            return text("training_jobs.history || CAST(:history_entries AS jsonb)").bindparams(
                history_entries=json.dumps(entries))
        return _HISTORY_FROM.bindparams(history_axis=axis, history_from=entries[0][axis],
                                        history_entries=json.dumps(entries))


_HISTORY_FROM = text(
    "COALESCE((SELECT jsonb_agg(e ORDER BY n) FROM jsonb_array_elements(training_jobs.history) WITH ORDINALITY"
    " AS h(e, n) WHERE NOT (e ? CAST(:history_axis AS text) AND (e->>CAST(:history_axis AS text))::numeric"
    " >= :history_from)), '[]'::jsonb) || CAST(:history_entries AS jsonb)"
)
