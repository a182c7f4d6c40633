"""Tasks the end-to-end tests run, written on the public SDK as a user would (named in TRAINQ_TASKS)."""

from __future__ import annotations

import json
import os
import time
from typing import Literal

from pydantic import BaseModel, Field

from trainq import Resources, TaskContext, task

if os.environ.get("SAMPLE_IMPORT_LOG"):  # lets a test count how often a worker imports this module
    with open(os.environ["SAMPLE_IMPORT_LOG"], "a") as log:
        log.write(f"{os.getpid()}\n")


class LoopParams(BaseModel):
    steps: int = Field(100, ge=1, le=10**7)
    checkpoint: bool = Field(True, description="checkpoint after every step")
    sleep: float = Field(0.01, ge=0, le=1, description="seconds a step takes")


@task("test-loop", params=LoopParams)
def loop(ctx: TaskContext, params: LoopParams) -> dict:
    """Counts steps, reports each, checkpoints each when asked, and stops when told."""
    state = ctx.restore()
    start = state["step"] if state else 0
    ctx.total_steps = params.steps
    ctx.log.info("starting at step %d (attempt %d)", start, ctx.attempt)
    for step in range(start, params.steps):
        time.sleep(params.sleep)
        ctx.report(step=step + 1, value=float(step + 1))
        if params.checkpoint:
            ctx.checkpoint({"step": step + 1})
        if ctx.should_stop():
            ctx.log.info("stopping at step %d: %s", step + 1, ctx.stop_reason)
            return {}
    ctx.save_artifact("counts.bin", bytes(range(256)) * 4)
    return {"steps": params.steps, "resumed_from": start}


class StepsParams(BaseModel):
    steps: int = Field(100, ge=1, le=10**7)
    sleep: float = Field(0.05, ge=0, le=1, description="seconds a step takes")
    step_log: str = Field(description="file on shared storage the job appends '<attempt> <step> <time>' to per step")


@task("test-steps", params=StepsParams)
def steps(ctx: TaskContext, params: StepsParams) -> dict:
    """The job's own log of steps: each step (resumed from the newest checkpoint) appends its attempt, step and the
    wall time to ``step_log`` (one write, O_APPEND) before it reports and checkpoints, whatever the network does."""
    state = ctx.restore()
    start = state["step"] if state else 0
    ctx.total_steps = params.steps
    fd = os.open(params.step_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for step in range(start, params.steps):
            time.sleep(params.sleep)
            os.write(fd, f"{ctx.attempt} {step + 1} {time.time():.6f}\n".encode())
            ctx.report(step=step + 1)
            ctx.checkpoint({"step": step + 1})
            if ctx.should_stop():
                return {}
    finally:
        os.close(fd)
    return {"steps": params.steps, "resumed_from": start}


class LongStepParams(BaseModel):
    seconds: float = Field(120, ge=0, le=3600, description="how long the one long step blocks")


@task("test-long-step", params=LongStepParams)
def long_step(ctx: TaskContext, params: LongStepParams) -> dict:
    """One step that takes ``seconds`` (the training thread blocked in it, as in a long forward pass or a data
    wait), between two quick ones: a healthy job that reports nothing for that long."""
    ctx.total_steps = 3
    ctx.report(step=1)
    time.sleep(params.seconds)
    ctx.report(step=2)
    ctx.report(step=3)
    return {"long_step_seconds": params.seconds}


class Nothing(BaseModel):
    pass


@task("test-raise", params=Nothing)
def raises(ctx: TaskContext, params: Nothing) -> dict:
    """Raises after one report."""
    ctx.report(step=1, loss=1.0)
    raise ValueError("the data is not what I expected")


class ReturnParams(BaseModel):
    kind: Literal["string", "text-metric", "list"] = "string"


@task("test-returns", params=ReturnParams)
def returns(ctx: TaskContext, params: ReturnParams) -> object:
    """Returns something that is not a dict of numbers."""
    return {"string": "done", "text-metric": {"val_loss": "low"}, "list": [0.1, 0.2]}[params.kind]


class StrictParams(BaseModel):
    lr: float = Field(0.1, gt=0, le=1)


@task("test-strict", params=StrictParams)
def strict(ctx: TaskContext, params: StrictParams) -> dict:
    """Returns its learning rate."""
    return {"lr": params.lr}


class DevicesParams(BaseModel):
    seconds: float = Field(60, ge=0, le=3600, description="how long it holds its devices (it stops when told)")
    alloc_mb: int = Field(0, ge=0, le=65536, description="memory it fills and keeps")
    report_dir: str = Field("", max_length=500, description="a folder to write what it saw into, as "
                            "<job>-<attempt>.json (the soak test reads it)")


@task("test-devices", params=DevicesParams, resources=Resources(gpus=1))
def devices(ctx: TaskContext, params: DevicesParams) -> dict:
    """Logs the devices it sees, holds them (and ``alloc_mb`` of memory) for a while or until told to stop."""
    import torch

    kept = bytearray(params.alloc_mb * 2**20)
    for i in range(0, len(kept), 4096):  # touched: resident, not only reserved
        kept[i] = 1
    ctx.log.info("sees CUDA_VISIBLE_DEVICES=%s OMP_NUM_THREADS=%s torch_threads=%d affinity=%s device=%s",
                 os.environ.get("CUDA_VISIBLE_DEVICES"), os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads(),
                 ",".join(map(str, sorted(os.sched_getaffinity(0)))), ctx.device)
    if params.report_dir:
        seen = {"job": ctx.job_id, "attempt": ctx.attempt, "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "worker": os.environ.get("RQ_WORKER_ID"), "pid": os.getpid()}
        path = os.path.join(params.report_dir, f"{ctx.job_id}-{ctx.attempt}.json")
        with open(path + ".tmp", "w") as out:
            json.dump(seen, out)
        os.replace(path + ".tmp", path)
    deadline = time.monotonic() + params.seconds
    while time.monotonic() < deadline and not ctx.should_stop():
        time.sleep(0.05)
    return {"held_mb": len(kept) / 2**20}


class DivergeParams(BaseModel):
    steps: int = Field(5, ge=1, le=1000)
    bad_at: int = Field(3, ge=1, le=1000, description="the step from which the loss is not finite")
    value: Literal["nan", "inf", "-inf"] = "nan"


@task("test-diverge", params=DivergeParams, metric="loss")
def diverge(ctx: TaskContext, params: DivergeParams) -> dict:
    """Reports a loss per step (and epoch) that becomes NaN (or an infinity) at step ``bad_at``; returns the last."""
    loss = 1.0
    for step in range(1, params.steps + 1):
        loss = float(params.value) if step >= params.bad_at else 1.0 / step
        ctx.report(step=step, epoch=step, loss=loss, accuracy=step / params.steps)
    return {"loss": loss}


@task("test-diverge-strict", params=DivergeParams, fail_on_nan=True)
def diverge_strict(ctx: TaskContext, params: DivergeParams) -> dict:
    """``test-diverge``, declared ``fail_on_nan``."""
    return diverge(ctx, params)


class SweepParams(BaseModel):
    x: float = Field(0.5, ge=0, le=1, description="the searched value: the loss is least at 0.3")
    epochs: int = Field(3, ge=1, le=100_000)
    sleep: float = Field(0.05, ge=0, le=5, description="seconds an epoch takes")
    fail_above: float = Field(2.0, ge=-1, le=2, description="raise when x is above this")


@task("test-sweep", params=SweepParams, metric="loss", mode="min")
def sweep_trial(ctx: TaskContext, params: SweepParams) -> dict:
    """A sweep's trial in miniature: loss (x - 0.3)² + 1/epoch, reported every epoch; raises above ``fail_above``."""
    if params.x > params.fail_above:
        raise ValueError(f"x {params.x} is above {params.fail_above}")
    ctx.total_epochs = params.epochs
    loss = 0.0
    for epoch in range(1, params.epochs + 1):
        time.sleep(params.sleep)
        loss = (params.x - 0.3) ** 2 + 1 / epoch
        ctx.report(epoch=epoch, loss=loss)
        if ctx.should_stop():
            ctx.log.info("stopping at epoch %d: %s", epoch, ctx.stop_reason)
            return {}
    return {"loss": loss}
