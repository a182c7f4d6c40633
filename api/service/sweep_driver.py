"""The sweep driver: keeps each running sweep's ``parallel`` trials going. One step of a sweep, under its lock
(``locks.Namespace.SWEEP``): tell Optuna how its ended trials ended, stop it if its first trials all failed or
it is done, and ask Optuna's sampler for trials until ``parallel`` run, each submitted as an ordinary job.

It runs in the active reconciler (one active at a time: ``locks.Namespace.RECONCILER``), woken by the
NOTIFY a job's end sends, and right after a sweep is created. Its state is PostgreSQL's alone (the sweep's row,
its trials' jobs, Optuna's study), so a restart anywhere neither loses a trial nor runs one twice:

- Optuna's ``ask`` commits a trial before its job exists. A trial Optuna holds as running with no job (the
  driver died between the two) is submitted on the next step with the params Optuna gave it: never lost.
- The job's row carries its sweep and trial number in the INSERT that creates it, before anything reaches RQ, and
  the pair is unique: a trial is never submitted twice.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import optuna
from flask import current_app
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload, selectinload

from api.record import locks, sweep_study
from api.record.status import TERMINAL, JobStatus
from api.record.sweep_tables import Sweep, SweepState
from api.record.tables import TrainingJob
from api.service import jobs
from api.service.catalogue import TaskRejected
from api.service.limits import LimitExceeded
from api.stores import db

log = logging.getLogger(__name__)

TrialState = optuna.trial.TrialState


@contextmanager
def sweep_lock(sweep_id: uuid.UUID) -> Iterator[None]:
    """One step (or stop) of this sweep at a time, in any process."""
    key = locks.job_key(sweep_id)
    with db.engine.connect() as conn:
        locks.lock(conn, locks.Namespace.SWEEP, key)
        conn.commit()
        try:
            yield
        finally:
            locks.unlock(conn, locks.Namespace.SWEEP, key)
            conn.commit()


def trials_of(sweep_id: uuid.UUID) -> list[TrainingJob]:
    return list(db.session.scalars(select(TrainingJob).where(TrainingJob.sweep_id == sweep_id)
                                   .options(selectinload(TrainingJob.reservation)).order_by(TrainingJob.trial_number)))


def objective_value(sweep: Sweep, job: TrainingJob) -> float | None:
    value = (job.metrics or {}).get(sweep.objective_metric)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def settle(sweep: Sweep, study: optuna.Study, trials: list[TrainingJob],
           asked: list[optuna.trial.FrozenTrial] | None = None) -> None:
    """Tell Optuna how each ended trial ended (once: only trials it still holds as running). ``asked``: the study's
    trials read after ``trials`` (the driver's step reads them once, for this and for what it asks next); read here
    when not given."""
    if asked is None:
        asked = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    running = {t.number for t in asked if t.state == TrialState.RUNNING}
    for job in trials:
        if job.trial_number not in running or job.status not in TERMINAL:
            continue
        value = objective_value(sweep, job)
        if job.status == JobStatus.COMPLETED and value is not None:
            sweep_study.tell(study, job.trial_number, value)
        elif job.status == JobStatus.PRUNED:
            sweep_study.tell(study, job.trial_number, state=TrialState.PRUNED)
        else:
            sweep_study.tell(study, job.trial_number, state=TrialState.FAIL)


def finish(sweep_id: uuid.UUID, state: SweepState, reason: str) -> bool:
    """running -> ``state`` (conditionally: a sweep ends once); True when this call ended it."""
    done = db.session.execute(update(Sweep).where(Sweep.id == sweep_id, Sweep.state == SweepState.RUNNING).values(
        state=state, stop_reason=reason, finished_at=func.now(), updated_at=func.now())).rowcount
    db.session.commit()
    if done:
        sweep_study.forget(sweep_id)
        log.info("sweep %s: %s (%s)", sweep_id, state, reason)
    return bool(done)


def _failure_stop(sweep: Sweep, trials: list[TrainingJob]) -> str | None:
    """Why to stop: its first N trials all failed (N: SWEEP_STOP_AFTER_FAILURES)."""
    n = current_app.config["SWEEP_STOP_AFTER_FAILURES"]
    first = trials[:n]
    if n < 1 or len(first) < n or any(job.status != JobStatus.FAILED for job in first):
        return None
    last = (first[-1].status_reason or "").strip()
    return f"the first {n} trials all failed (trial {first[-1].trial_number}: {last[:300]})"


def advance(sweep_id: uuid.UUID) -> None:
    """One step of one sweep (see the module's docstring)."""
    with sweep_lock(sweep_id):
        db.session.expire_all()
        # with its owner, who submits the trials (``get`` would refresh the expired row without it)
        sweep = db.session.scalar(select(Sweep).options(joinedload(Sweep.owner)).where(Sweep.id == sweep_id))
        if sweep is None or sweep.state != SweepState.RUNNING:
            db.session.commit()
            sweep_study.forget(sweep_id)
            return
        try:
            _step(sweep)
        except BaseException:
            sweep_study.forget(sweep_id)  # the next step loads the study afresh
            raise


def _rows(sweep_id: uuid.UUID) -> list[TrainingJob]:
    """Its trials' rows in trial order, as the step reads them (``trials_of`` less their placements)."""
    return list(db.session.scalars(select(TrainingJob).where(TrainingJob.sweep_id == sweep_id)
                                   .order_by(TrainingJob.trial_number)))


def _step(sweep: Sweep) -> None:
    sweep_id, parallel, max_trials = sweep.id, sweep.parallel, sweep.max_trials  # a submit's commit expires them
    trials = _rows(sweep_id)
    study = sweep_study.kept(sweep, sweep_study.storage(db.engine))
    study.sampler = sweep_study.sampler(sweep, 0)  # what its tells' after_trial sees, as in a freshly loaded study
    asked = study.get_trials(deepcopy=False)  # after the rows: a running trial without a row is an orphan
    settle(sweep, study, trials, asked)
    why = _failure_stop(sweep, trials)
    if why is not None:
        finish(sweep_id, SweepState.FAILED, why)
        for job in trials:
            if job.status not in TERMINAL:
                jobs.cancel(job.id)
        return
    known = {job.trial_number for job in trials}
    active = sum(job.status not in TERMINAL for job in trials)
    # a trial Optuna gave out whose job was never written (the driver stopped between the two): its job now. The
    # states in ``asked`` are as read before settle's tells, which only ended trials with rows (``known``).
    for orphan in (t for t in asked if t.state == TrialState.RUNNING and t.number not in known):
        if active >= parallel:
            break
        if not _submit(sweep, orphan.number, orphan.params, study):
            return
        active += 1
    total = len(asked)
    while active < parallel and total < max_trials:
        study.sampler = sweep_study.sampler(sweep, total)  # a seeded sampler's draws follow the trial count
        trial = study.ask(sweep_study.distributions(sweep.space))
        total += 1
        if not _submit(sweep, trial.number, trial.params, study):
            return
        active += 1
    if active == 0 and total >= max_trials:
        db.session.expire_all()
        ended = _rows(sweep_id)
        if all(job.status in TERMINAL for job in ended):
            finish(sweep_id, SweepState.COMPLETED, f"all {len(ended)} trials ended")


def _submit(sweep: Sweep, number: int, params: dict[str, Any], study: optuna.Study) -> bool:
    """The trial's job (tagged with the sweep and trial number in its INSERT); False: stop this step (the owner's
    queued-jobs limit, retried on the next step; or the task refused it, which ends the sweep)."""
    sweep_id, name = sweep.id, f"{sweep.name} #{number}"
    try:
        jobs.submit(sweep.task, {**sweep.params, **params}, name[:200], owner=sweep.owner,
                    resources=sweep.resources, trial=(sweep.id, number))
    except IntegrityError:  # another step wrote it first (cannot happen under the sweep's lock; harmless)
        db.session.rollback()
        return True
    except LimitExceeded as exc:
        db.session.rollback()
        log.info("sweep %s: trial %s waits: %s", sweep_id, number, exc)
        return False
    except TaskRejected as exc:
        db.session.rollback()
        sweep_study.tell(study, number, state=TrialState.FAIL)
        finish(sweep_id, SweepState.FAILED, f"trial {number} could not be submitted: {exc.message}")
        return False
    log.info("sweep %s: trial %s submitted %s", sweep_id, number, params)
    return True


def running_sweeps() -> list[uuid.UUID]:
    ids = list(db.session.scalars(select(Sweep.id).where(Sweep.state == SweepState.RUNNING)
                                  .order_by(Sweep.created_at)))
    db.session.commit()
    return ids


def drive() -> bool:
    """A step of every running sweep (the reconciler's, at each wake-up); whether there was any. One sweep's
    failure is logged and the others go on."""
    running = running_sweeps()
    sweep_study.keep_only(running)
    for sweep_id in running:
        try:
            advance(sweep_id)
        except Exception:  # noqa: BLE001 - a bad sweep must not stop the reconciler or the other sweeps
            db.session.rollback()
            log.exception("sweep %s: driver step failed; the next wake-up retries", sweep_id)
    return bool(running)
