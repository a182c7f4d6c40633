"""The sweeps API's requests and answers (``/api/sweeps``), as pydantic models: the same rules as
``api.web.schemas`` (whose ``Model`` they use). A space's params are checked by ``api.service.sweep_space`` (its
own models, against the task's published schema), so its refusals name the field inside it: ``space.lr.high``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, WithJsonSchema

from api.record.status import JobStatus
from api.web.schemas import JobId, Model, Name, ResourcesRequest, Timestamp

SweepState = Literal["running", "completed", "stopped", "failed"]
Metric = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:/-]+$")]

_PARAM_SCHEMA = {"type": "object", "description": "a searched param", "oneOf": [
    {"type": "object", "required": ["type", "low", "high"], "additionalProperties": False, "properties": {
        "type": {"const": "float"}, "low": {"type": "number"}, "high": {"type": "number"},
        "log": {"type": "boolean"}, "step": {"type": ["number", "null"], "exclusiveMinimum": 0}}},
    {"type": "object", "required": ["type", "low", "high"], "additionalProperties": False, "properties": {
        "type": {"const": "int"}, "low": {"type": "integer"}, "high": {"type": "integer"},
        "log": {"type": "boolean"}, "step": {"type": ["integer", "null"], "minimum": 1}}},
    {"type": "object", "required": ["type", "choices"], "additionalProperties": False, "properties": {
        "type": {"const": "choice"}, "choices": {"type": "array", "minItems": 1,
                                                 "items": {"type": ["string", "number", "boolean", "null"]}}}},
]}
Space = Annotated[dict[str, Any], WithJsonSchema({"type": "object", "minProperties": 1,
                                                  "additionalProperties": _PARAM_SCHEMA})]


class Objective(Model):
    metric: Metric = Field(description="a metric the task reports (at each epoch or step, for pruning)")
    mode: Literal["min", "max"] = Field("min", description="min: lower is better")


class SweepRequest(Model):
    """``POST /api/sweeps``."""

    task: str = Field(min_length=1, max_length=64, description="a task from GET /api/tasks")
    params: dict[str, Any] | None = Field(None, description="fixed values, every trial's; the rest its defaults")
    space: Space = Field(description='{"lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": true}, '
                         '"hidden": {"type": "int", "low": 16, "high": 256, "step": 16}, '
                         '"opt": {"type": "choice", "choices": ["sgd", "adam"]}}')
    objective: Objective | None = Field(None, description="left out: the task's declared primary metric")
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    pruner: Literal["none", "median", "asha"] = "none"
    max_trials: int = Field(20, ge=1, le=1_000_000, description="trials in all (at most SWEEP_MAX_TRIALS)")
    parallel: int = Field(1, ge=1, le=256, description="trials running at once")
    name: Name | None = None
    resources: ResourcesRequest | None = Field(None, description="each trial's")
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="the sampler's seed (reproducible draws)")


class Trial(Model):
    number: int
    job_id: JobId
    params: dict[str, Any] = Field(description="the searched params' values")
    status: JobStatus
    status_reason: str | None
    objective: float | None = Field(description="the objective's final value (completed), else the newest reported")
    epoch: int
    step: int
    pruned_at: int | None = Field(description="pruned: the epoch (or step) its pruner stopped it at")
    started_at: Timestamp | None
    finished_at: Timestamp | None


class ObjectiveOut(Model):
    metric: str
    mode: Literal["min", "max"]


class Sweep(Model):
    id: JobId
    name: str
    owner: str | None
    task: str
    params: dict[str, Any]
    space: dict[str, Any]
    objective: ObjectiveOut
    sampler: str
    pruner: str
    seed: int | None
    max_trials: int
    parallel: int
    resources: dict[str, Any] | None
    state: SweepState
    stop_reason: str | None
    created_at: Timestamp
    updated_at: Timestamp
    finished_at: Timestamp | None
    trial_counts: dict[str, int] = Field(description="its trials by status")


class SweepDetail(Sweep):
    trials: list[Trial] = Field(description="in trial order")
    best: Trial | None = Field(description="the completed trial with the best objective")


class Curve(Model):
    number: int
    job_id: JobId
    status: JobStatus
    axis: Literal["epoch", "step"]
    points: list[list[float]] = Field(description="[x, value] pairs, oldest first")


class SweepCurves(Model):
    metric: str = Field(description="the sweep's objective metric")
    curves: list[Curve] = Field(description="each trial's objective as it reported it, in trial order")


class SweepList(Model):
    sweeps: list[Sweep]


class SweepsQuery(Model):
    owner: str | None = Field(None, max_length=64, pattern=r"^[^\x00-\x1f]*$",
                              description="a user's name (no control characters)")


class SweepCreated(Model):
    sweep: SweepDetail
    message: str


class SweepStopped(Model):
    success: bool
    message: str
    sweep: SweepDetail
