"""What a user can do with a sweep: create one (its space checked against the task's published schema), list
them, read one with its trials and best trial, stop one (its running trials cancelled through the jobs' cancel).
Owners act on their own sweeps, admins on any; anyone may read, as with jobs. The driver (``sweep_driver``)
keeps a running sweep's trials going."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from api.record import sweep_study
from api.record.status import TERMINAL, JobStatus
from api.record.sweep_tables import Sweep, SweepState
from api.record.tables import TrainingJob, User
from api.service import capacity, catalogue, jobs, sweep_driver, sweep_space, users
from api.service.catalogue import TaskRejected
from api.service.users import Forbidden
from api.stores import db
from trainq.resources import resolve

log = logging.getLogger(__name__)

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("none", "median", "asha")


class SweepNotFound(LookupError):
    pass


class SweepConflict(Exception):
    def __init__(self, message: str, sweep: Sweep) -> None:
        super().__init__(message)
        self.message, self.sweep = message, sweep


def _refuse(field: str, message: str) -> TaskRejected:
    return TaskRejected("invalid_sweep", f"{field}: {message}", field)


def create(task: str, space: Any, *, params: Any = None, objective: dict[str, str] | None = None,
           sampler: str = "tpe", pruner: str = "none", max_trials: int = 20, parallel: int = 1,
           name: str | None = None, resources: dict[str, Any] | None = None, seed: int | None = None,
           owner: User | None = None) -> Sweep:
    """Check the sweep (a 422 naming the field otherwise), write it, create its Optuna study, and start its first
    ``parallel`` trials. ``objective`` defaults to the task's declared primary metric."""
    owner = owner or users.first_admin()
    if owner is None:
        raise ValueError("a sweep needs an owner: create an admin first")
    spec = catalogue.find(task)
    parsed = sweep_space.parse(space)
    fixed = sweep_space.check_against(spec, params, parsed)
    if sampler not in SAMPLERS:
        raise _refuse("sampler", f"must be one of {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise _refuse("pruner", f"must be one of {', '.join(PRUNERS)}")
    if objective is None:
        if not spec.metric:
            raise _refuse("objective", f"required: task {spec.name} declares no primary metric "
                          "(give {\"metric\": ..., \"mode\": \"min\" | \"max\"})")
        objective = {"metric": spec.metric, "mode": spec.metric_mode or "min"}
    if not 1 <= parallel <= 256:
        raise _refuse("parallel", "must be between 1 and 256")
    cap = current_app.config["SWEEP_MAX_TRIALS"]
    if not 1 <= max_trials <= cap:
        raise _refuse("max_trials", f"must be between 1 and {cap} (SWEEP_MAX_TRIALS)")
    if sampler == "grid":
        sweep_space.grid_needs_steps(parsed)
        max_trials = min(max_trials, sweep_space_size(parsed))
    needs = resolve(resources, spec.resources)
    capacity.refuse_impossible(spec.name, needs)
    sweep_id = uuid.uuid4()
    now = db.session.scalar(select(func.now()))
    sweep = Sweep(id=sweep_id, name=name or f"{spec.name} sweep", owner_id=owner.id, task=spec.name, params=fixed,
                  space=sweep_space.as_json(parsed), objective_metric=objective["metric"],
                  objective_mode=objective["mode"], sampler=sampler, pruner=pruner, seed=seed,
                  max_trials=max_trials, parallel=parallel, resources=resources, state=SweepState.RUNNING,
                  study_name=sweep_study.study_name(sweep_id), created_at=now, updated_at=now)
    sweep_study.create(sweep, sweep_study.storage(db.engine))  # before the row: the driver finds its study
    db.session.add(sweep)
    db.session.commit()
    log.info("sweep %s: created (task %s, %s trials, %s at once)", sweep_id, spec.name, max_trials, parallel)
    sweep_driver.advance(sweep_id)
    return get(sweep_id)


def sweep_space_size(parsed: dict[str, Any]) -> int:
    return sweep_study.grid_size(sweep_space.as_json(parsed))


def get(sweep_id: str | uuid.UUID) -> Sweep:
    try:
        key = uuid.UUID(str(sweep_id))
    except ValueError:
        raise SweepNotFound(str(sweep_id)) from None
    sweep = db.session.scalar(select(Sweep).options(selectinload(Sweep.owner)).where(Sweep.id == key))
    if sweep is None:
        raise SweepNotFound(str(sweep_id))
    return sweep


def list_sweeps(owner: str | None = None, limit: int = 100) -> list[Sweep]:
    query = select(Sweep).options(selectinload(Sweep.owner)).order_by(Sweep.created_at.desc()).limit(limit)
    if owner:
        query = query.where(Sweep.owner_id == select(User.id).where(User.name == owner).scalar_subquery())
    found = list(db.session.scalars(query))
    db.session.commit()
    return found


def counts(sweep_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, int]]:
    """Each sweep's trials by status."""
    rows = db.session.execute(select(TrainingJob.sweep_id, TrainingJob.status, func.count())
                              .where(TrainingJob.sweep_id.in_(sweep_ids))
                              .group_by(TrainingJob.sweep_id, TrainingJob.status)).all()
    found: dict[uuid.UUID, dict[str, int]] = {}
    for sweep_id, status, n in rows:
        found.setdefault(sweep_id, {})[status] = n
    return found


@dataclass(frozen=True)
class Trial:
    job: TrainingJob
    number: int
    params: dict[str, Any]
    value: float | None

    def to_dict(self) -> dict[str, Any]:
        job = self.job
        return {"number": self.number, "job_id": str(job.id), "params": self.params, "status": job.status,
                "status_reason": job.status_reason, "objective": self.value, "epoch": job.epoch, "step": job.step,
                "pruned_at": job.pruned_at if job.status == JobStatus.PRUNED else None,
                "started_at": job.started_at.isoformat() if job.started_at else None,
                "finished_at": job.finished_at.isoformat() if job.finished_at else None}


def trials(sweep: Sweep) -> list[Trial]:
    """Its trials in trial order: the searched params, and the objective's value (the final one when completed,
    else the newest reported)."""
    found = []
    for job in sweep_driver.trials_of(sweep.id):
        found.append(Trial(job, job.trial_number or 0, {k: job.params.get(k) for k in sweep.space},
                           sweep_driver.objective_value(sweep, job)))
    db.session.commit()
    return found


def curves(sweep: Sweep) -> list[dict[str, Any]]:
    """Each trial's objective as it reported it: (x, value) on the epoch axis where its reports have epochs, else
    the step (a pruned trial's curve ends where it was stopped)."""
    metric, found = sweep.objective_metric, []
    for job in sweep_driver.trials_of(sweep.id):
        entries = [e for e in job.history or [] if isinstance(e.get(metric), int | float)]
        axis = "epoch" if entries and all(isinstance(e.get("epoch"), int) for e in entries) else "step"
        points = [[e[axis], e[metric]] for e in entries if isinstance(e.get(axis), int)]
        found.append({"number": job.trial_number or 0, "job_id": str(job.id), "status": job.status, "axis": axis,
                      "points": points})
    db.session.commit()
    return found


def best(sweep: Sweep, found: list[Trial]) -> Trial | None:
    done = [t for t in found if t.job.status == JobStatus.COMPLETED and t.value is not None]
    if not done:
        return None
    return (min if sweep.objective_mode == "min" else max)(done, key=lambda t: t.value)


def check_owner(user: User | None, sweep: Sweep) -> None:
    if user is None or user.is_admin or sweep.owner_id == user.id:
        return
    owner = sweep.owner.name if sweep.owner else "another user"
    raise Forbidden(f"sweep {sweep.id} belongs to {owner}: only its owner or an admin may change it", "not_owner")


def stop(sweep_id: str | uuid.UUID, user: User | None = None) -> Sweep:
    """Stop a running sweep: no new trial starts (under the sweep's lock, so the driver's step in flight ends
    first), and its queued and running trials are cancelled through the jobs' cancel (their training stops)."""
    sweep = get(sweep_id)
    check_owner(user, sweep)
    with sweep_driver.sweep_lock(sweep.id):
        who = f"by {user.name}" if user is not None else "by an operator"
        if not sweep_driver.finish(sweep.id, SweepState.STOPPED, f"stopped {who}"):
            db.session.expire_all()
            sweep = get(sweep.id)
            if sweep.state != SweepState.STOPPED:
                raise SweepConflict(f"sweep {sweep.id} already ended ({sweep.state}): nothing to stop", sweep)
            return sweep
        active = [job for job in sweep_driver.trials_of(sweep.id) if job.status not in TERMINAL]
        for job in active:
            try:
                jobs.cancel(job.id)
            except jobs.JobConflict:
                pass  # it ended meanwhile
        db.session.expire_all()
        sweep = get(sweep.id)
        sweep_driver.settle(sweep, sweep_study.load(sweep, sweep_study.storage(db.engine)),
                            sweep_driver.trials_of(sweep.id))
    db.session.expire_all()
    return get(sweep.id)
