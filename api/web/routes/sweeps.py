"""``/api/sweeps``: create, list, read, stop sweeps (``api.service.sweeps``)."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, url_for

from api.record.sweep_tables import Sweep
from api.service import sweeps
from api.web import sweep_schemas as s
from api.web.auth import current_user
from api.web.openapi import operation

bp = Blueprint("sweeps", __name__, url_prefix="/api/sweeps")


def render(sweep: Sweep, counts: dict[str, int] | None = None) -> dict[str, Any]:
    if counts is None:
        counts = sweeps.counts([sweep.id]).get(sweep.id, {})
    return {**sweep.to_dict(), "trial_counts": counts}


def detail(sweep: Sweep) -> dict[str, Any]:
    trials = sweeps.trials(sweep)
    best = sweeps.best(sweep, trials)
    return {**render(sweep), "trials": [t.to_dict() for t in trials], "best": best.to_dict() if best else None}


@bp.post("")
@operation("Start a sweep: a search over a task's params, each trial a job", {201: s.SweepCreated},
           body=s.SweepRequest)
def create_sweep(body: s.SweepRequest):
    sweep = sweeps.create(
        body.task, body.space, params=body.params,
        objective=body.objective.model_dump() if body.objective else None, sampler=body.sampler,
        pruner=body.pruner, max_trials=body.max_trials, parallel=body.parallel,
        name=body.name.strip() if body.name else None,
        resources=body.resources.model_dump(exclude_none=True) if body.resources else None, seed=body.seed,
        owner=current_user())
    message = f"Sweep {sweep.id} started: up to {sweep.max_trials} trials, {sweep.parallel} at once"
    return {"sweep": detail(sweep), "message": message}, 201, {"Location": url_for("sweeps.get_sweep",
                                                                                   sweep_id=sweep.id)}


@bp.get("")
@operation("List sweeps, newest first", {200: s.SweepList}, query=s.SweepsQuery)
def list_sweeps(query: s.SweepsQuery):
    found = sweeps.list_sweeps(owner=query.owner or None)
    counts = sweeps.counts([sweep.id for sweep in found])
    return {"sweeps": [render(sweep, counts.get(sweep.id, {})) for sweep in found]}


@bp.get("/<uuid:sweep_id>")
@operation("A sweep, with its trials and its best trial", {200: s.SweepDetail})
def get_sweep(sweep_id: uuid.UUID):
    return detail(sweeps.get(sweep_id))


@bp.get("/<uuid:sweep_id>/curves")
@operation("Each trial's objective curve, as it reported it", {200: s.SweepCurves})
def sweep_curves(sweep_id: uuid.UUID):
    sweep = sweeps.get(sweep_id)
    return {"metric": sweep.objective_metric, "curves": sweeps.curves(sweep)}


@bp.delete("/<uuid:sweep_id>")
@operation("Stop a sweep: no new trial starts, its running trials are cancelled", {200: s.SweepStopped},
           errors=(409,))
def stop_sweep(sweep_id: uuid.UUID):
    sweep = sweeps.stop(sweep_id, current_user())
    return {"success": True, "message": f"Sweep {sweep.id} {sweep.state}: {sweep.stop_reason}",
            "sweep": detail(sweep)}
