"""A sweep trial's pruner, at its reports: each value the task reports for the sweep's objective metric (at an
epoch, else at a step) goes to the trial's Optuna pruner, from a thread of its own (the training thread only puts
it on a queue). Told to prune, the trial stops at its next ``ctx.should_stop()`` (``stop_reason`` "prune"), and
the attempt records it ``pruned`` with the reason a person reads: "pruned at epoch 3 (val_loss 0.81 worse than
the median 0.52)".

Optuna (and numpy, which it needs) is imported only when an attempt is a sweep's trial: a worker host that runs no
sweep needs neither."""

from __future__ import annotations

import logging
import math
import queue
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from api.record.sweep_tables import Sweep
from api.record.tables import TrainingJob

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class Verdict:
    axis: str  # epoch | step
    at: int
    value: float
    reason: str


class Pruning:
    """The pruner of one attempt of a sweep's trial; ``verdict`` is set once it said prune."""

    def __init__(self, sweep: Sweep, trial_number: int, engine: Engine, jlog: logging.LoggerAdapter) -> None:
        self.metric, self.mode, self.pruner_name = sweep.objective_metric, sweep.objective_mode, sweep.pruner
        self.study_name, self.trial_number, self.engine, self.jlog = sweep.study_name, trial_number, engine, jlog
        self.verdict: Verdict | None = None
        self._queue: queue.SimpleQueue[tuple[str, int, float] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="trial-pruner", daemon=True)
        self._ready = threading.Event()  # the study is open (or could not be): reports are judged as they come

    @classmethod
    def of(cls, job: TrainingJob, engine: Engine, jlog: logging.LoggerAdapter) -> Pruning | None:
        """The job's pruning, if it is a trial of a sweep with a pruner."""
        if job.sweep_id is None or job.trial_number is None:
            return None
        with engine.connect() as conn:
            row = conn.execute(select(Sweep.__table__).where(Sweep.id == job.sweep_id)).one_or_none()
        if row is None or row.pruner == "none":
            return None
        return cls(Sweep(**row._mapping), job.trial_number, engine, jlog)

    def offer(self, entry: dict[str, Any]) -> None:
        """A report (the training thread's): queued if it has the objective and an epoch or step."""
        value = entry.get(self.metric)
        axis = "epoch" if entry.get("epoch") is not None else "step" if entry.get("step") is not None else None
        if axis is None or self.verdict is not None or isinstance(value, bool) or not isinstance(value, int | float):
            return
        value = float(value)  # a tensor (not read here: that waits for its device) is not offered
        if math.isfinite(value):
            self._queue.put((axis, int(entry[axis]), value))

    READY_WAIT = 30.0  # seconds the training waits for the study to open (Optuna's import, its storage)

    def start(self) -> Pruning:
        """Open the trial's study before the training starts, so that its first report is judged at once."""
        self._thread.start()
        if not self._ready.wait(self.READY_WAIT):
            self.jlog.warning("the sweep's pruner is not ready after %.0fs; training starts, reports wait for it",
                              self.READY_WAIT)
        return self

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import optuna

        from api.record import sweep_study

        try:
            store = sweep_study.storage(self.engine)  # its agent's, opened before the fork
            study = optuna.load_study(study_name=self.study_name, storage=store,
                                      pruner=sweep_study.pruner(self.pruner_name))
            trial_id = store.get_trial_id_from_study_id_trial_number(
                store.get_study_id_from_name(self.study_name), self.trial_number)
            trial = optuna.trial.Trial(study, trial_id)
            self._ready.set()
            while (item := self._queue.get()) is not None:
                axis, at, value = item
                trial.report(value, at)
                if trial.should_prune():
                    self.verdict = Verdict(axis, at, value, self._reason(study, axis, at, value))
                    self.jlog.info("%s", self.verdict.reason)
                    return
        except Exception as exc:  # noqa: BLE001 - a pruner's trouble never fails the training
            self.jlog.warning("the sweep's pruner is unavailable for this attempt (%s: %s); training goes on",
                              exc.__class__.__name__, exc)
        finally:
            self._ready.set()

    def _reason(self, study: optuna.Study, axis: str, at: int, value: float) -> str:
        from api.record import sweep_study

        said = f"{self.metric} {value:.4g}"
        if self.pruner_name == "median":
            median = sweep_study.median_at(study, at)
            against = f" worse than the median {median:.4g}" if median is not None else ""
            return f"pruned at {axis} {at} ({said}{against})"
        return (f"pruned at {axis} {at} ({said} not among the best 1/{sweep_study.ASHA_REDUCTION} of the trials "
                f"that reached {axis} {at})")
