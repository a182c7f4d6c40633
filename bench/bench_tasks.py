"""Tasks for the task-SDK benchmark (``make bench-tasks``), loaded by a real worker through
``TRAINQ_TASKS=bench.bench_tasks``. Written on the public SDK like any user's tasks.

- ``bench-loop``: a fixed number of training steps of a small MLP on random data (batch 64), with or without
  ``ctx.report(step=i, loss=loss)`` after every step; returns the loop's own wall time and the time spent
  inside ``ctx.report``. With ``interleave_block`` it alternates blocks of steps without and with reporting
  in one loop; with ``report_calls_seconds`` it times bare ``ctx.report`` calls in a tight loop instead (the
  per-call cost with hot caches, in the horse, through the worker's sink).
- ``bench-entry``: returns ``time.time()`` taken on entering the function (POST -> task entered latency), and
  which heavy modules the horse inherited from the worker.
- ``bench-sleep`` (asks one GPU by default): holds its devices for a while and says when it was entered and
  left, on which fake GPUs and host (``make bench-scheduler``)."""

from __future__ import annotations

import gc
import os
import statistics
import sys
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from trainq import Resources, TaskContext, task


class GcTimer:
    """Counts Python's garbage collections (per generation) and the time spent in them while in the block."""

    def __init__(self) -> None:
        self.count, self.seconds, self._started = [0, 0, 0], 0.0, 0.0

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.count[info["generation"]] += 1
            self.seconds += time.perf_counter() - self._started

    def __enter__(self) -> GcTimer:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def metrics(self) -> dict[str, float]:
        return {"gc_gen0": float(self.count[0]), "gc_gen1": float(self.count[1]), "gc_gen2": float(self.count[2]),
                "gc_seconds": self.seconds, "gc_tracked_objects": float(len(gc.get_objects())),
                "gc_frozen_objects": float(gc.get_freeze_count())}


class LoopParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    report: bool = Field(True, description="call ctx.report(step=i, loss=loss) after every step")
    steps: int = Field(1000, ge=0, le=1_000_000, description="timed steps")
    warmup: int = Field(50, ge=0, le=10_000, description="untimed steps first")
    batch_size: int = Field(64, ge=1, le=4096)
    features: int = Field(128, ge=1, le=4096)
    hidden: int = Field(256, ge=1, le=4096, description="width of both hidden layers")
    classes: int = Field(10, ge=2, le=1000)
    threads: int = Field(1, ge=1, le=64, description="torch.set_num_threads")
    interleave_block: int = Field(0, ge=0, le=100_000,
                                  description="> 0: run 2 x steps in blocks of this many, alternating without and "
                                              "with reporting (ABBA), in one job; report is then ignored")
    report_item: bool = Field(False, description="report loss.item() (the task waits for the step) instead of the "
                                                 "loss tensor (read later on a GPU)")
    report_calls_seconds: float = Field(0.0, ge=0, le=60,
                                        description="> 0: time bare ctx.report calls for this long per form instead")
    seed: int = Field(0, ge=0, le=2**31 - 1)


@task("bench-loop", params=LoopParams)
def bench_loop(ctx: TaskContext, params: LoopParams) -> dict[str, float]:
    """Train a 2-hidden-layer MLP on random batches for a fixed number of steps, reporting each step or not.

    Returns the timed loop's wall time (``loop_s``), the mean step (``step_us``), the time spent inside
    ``ctx.report`` (``in_report_s``) and in its calls slower than 1 ms (the ones that wrote the job's row).
    """
    import torch
    from torch import nn

    torch.set_num_threads(params.threads)
    torch.manual_seed(params.seed)
    if params.report_calls_seconds:
        return _report_cost(ctx, params.report_calls_seconds)
    pool = 16  # pre-made random batches, cycled: data loading is not what is measured
    generator = torch.Generator().manual_seed(params.seed)
    xs = torch.randn(pool, params.batch_size, params.features, generator=generator)
    ys = torch.randint(0, params.classes, (pool, params.batch_size), generator=generator)
    model = nn.Sequential(nn.Linear(params.features, params.hidden), nn.ReLU(),
                          nn.Linear(params.hidden, params.hidden), nn.ReLU(),
                          nn.Linear(params.hidden, params.classes)).to(ctx.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    xs, ys = xs.to(ctx.device), ys.to(ctx.device)

    def step(i: int) -> Any:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(xs[i % pool]), ys[i % pool])
        loss.backward()
        optimizer.step()
        return loss

    for i in range(params.warmup):
        step(i)
    # on a GPU, steps run ahead of the loop: wait for them before reading a clock
    sync = torch.cuda.synchronize if ctx.device.type == "cuda" else (lambda: None)
    if params.interleave_block:
        return _interleaved(ctx, step, params.steps, params.interleave_block, params.report_item, sync)
    ctx.total_steps = params.steps
    report = params.report
    loss = None
    in_report, slow_calls, in_slow_calls = 0.0, 0, 0.0  # slow: > 1 ms, the calls that wrote the row
    with GcTimer() as collections:
        started, cpu = time.perf_counter(), time.thread_time()
        for i in range(params.steps):
            loss = step(i)
            if report:
                called = time.perf_counter()
                # the loss tensor as it is: report() converts it with .item() (on a GPU, that waits for the step)
                ctx.report(step=i + 1, loss=loss.item() if params.report_item else loss)
                took = time.perf_counter() - called
                in_report += took
                if took > 0.001:
                    slow_calls, in_slow_calls = slow_calls + 1, in_slow_calls + took
        sync()
        loop_s = time.perf_counter() - started
        cpu = time.thread_time() - cpu
    return {"loop_s": loop_s, "step_us": loop_s / max(params.steps, 1) * 1e6, "loop_cpu_s": cpu,
            "in_report_s": in_report, "slow_report_calls": float(slow_calls), "in_slow_report_calls_s": in_slow_calls,
            "final_loss": loss.item() if loss is not None else 0.0,
            "on_cuda": float(ctx.device.type == "cuda"),
            **collections.metrics()}


def _interleaved(ctx: TaskContext, step: Any, steps: int, block: int, report_item: bool,
                 sync: Any) -> dict[str, float]:
    """The same loop, in blocks of ``block`` steps alternating without/with ``ctx.report`` each step (ABBA, so
    neither always goes first): slow changes in the machine's load fall on both alike. Returns both sides' total
    time and the mean and spread of the per-pair difference (with minus without), for an interval."""
    timed = {False: 0.0, True: 0.0}
    diffs = []
    i = 0
    for pair in range(max(steps // block, 1)):
        pair_s = {}
        for report in ((False, True) if pair % 2 == 0 else (True, False)):
            sync()
            started = time.perf_counter()
            for _ in range(block):
                i += 1
                loss = step(i)
                if report:
                    ctx.report(step=i, loss=loss.item() if report_item else loss)
            sync()
            pair_s[report] = time.perf_counter() - started
            timed[report] += pair_s[report]
        diffs.append(pair_s[True] - pair_s[False])
    return {"interleaved_without_s": timed[False], "interleaved_with_s": timed[True],
            "interleaved_ratio": timed[True] / timed[False], "interleaved_blocks": float(len(diffs)),
            "interleaved_diff_mean_s": statistics.fmean(diffs),
            "interleaved_diff_stdev_s": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
            "step_us": (timed[False] + timed[True]) / i * 1e6}


def _report_cost(ctx: TaskContext, seconds: float) -> dict[str, float]:
    """Microseconds per ``ctx.report`` call, for a float loss and for a 0-d tensor loss: batches of 1000 calls
    for ``seconds`` each. The mean includes the throttled row writes (one per PROGRESS_INTERVAL); the median
    batch is the call itself."""
    import torch

    forms: list[tuple[str, Any]] = [("float", 0.5), ("tensor", torch.tensor(0.5))]
    if ctx.device.type == "cuda":
        forms.append(("cuda_tensor", torch.tensor(0.5, device=ctx.device)))
    out: dict[str, float] = {}
    step = 0
    for form, value in forms:
        per_call, deadline = [], time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            for _ in range(1000):
                step += 1
                ctx.report(step=step, loss=value)
            per_call.append((time.perf_counter() - started) / 1000 * 1e6)
        out[f"report_{form}_us_median"] = statistics.median(per_call)
        out[f"report_{form}_us_mean"] = statistics.fmean(per_call)
        out[f"report_{form}_us_max_batch"] = max(per_call)
        out[f"report_{form}_calls"] = len(per_call) * 1000
    return out


class EntryParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seq: int = Field(0, ge=0, description="the benchmark's sample number (unused)")


@task("bench-entry", params=EntryParams)
def bench_entry(ctx: TaskContext, params: EntryParams) -> dict[str, float]:
    """Return the wall-clock time at which the function was entered (``entered_at``, seconds since the epoch),
    and whether the horse found the modules the built-in ``mlp`` task imports lazily already imported."""
    entered_at = time.time()
    return {"entered_at": entered_at, "horse_had_torch": float("torch" in sys.modules),
            "horse_had_torch_dynamo": float("torch._dynamo" in sys.modules),
            "horse_had_sklearn_datasets": float("sklearn.datasets" in sys.modules)}


class SleepParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(1.0, ge=0, le=3600, description="how long it holds its devices")
    seq: int = Field(0, ge=0, description="the benchmark's job number (unused)")


@task("bench-sleep", params=SleepParams, resources=Resources(gpus=1))
def bench_sleep(ctx: TaskContext, params: SleepParams) -> dict[str, float]:
    """Hold its devices for ``seconds`` (asleep, as a job waiting on its GPU would be), and say when it was entered
    and left (``time.time()``), on which GPUs (``gpu_mask``: bit i for fake GPU i in ``CUDA_VISIBLE_DEVICES``) and
    which host (``BENCH_HOST_NO`` in its agent's environment)."""
    entered_at = time.time()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") or ""
    mask = sum(2 ** int(i) for i in visible.split(",") if i.strip().isdigit())
    time.sleep(params.seconds)
    return {"entered_at": entered_at, "left_at": time.time(), "gpu_mask": float(mask),
            "host_no": float(os.environ.get("BENCH_HOST_NO", "-1"))}


class CudaHoldParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(30.0, ge=0, le=3600, description="how long it holds its GPU memory (it stops when told)")
    report: str = Field("", max_length=500, description="a file to write what it saw into (JSON)")


@task("bench-cuda-hold", params=CudaHoldParams, resources=Resources(gpus=1))
def bench_cuda_hold(ctx: TaskContext, params: CudaHoldParams) -> dict[str, float]:
    """Put 256 MiB on ``ctx.device`` and hold it, after writing what the job sees: ``CUDA_VISIBLE_DEVICES``, how
    many devices torch finds, the device's UUID, its pid (bench/gpu_scheduler_check.py)."""
    import json

    import torch

    held = torch.ones(64 * 2**20, device=ctx.device)  # 256 MiB of float32
    seen = {"visible": os.environ.get("CUDA_VISIBLE_DEVICES"), "device": str(ctx.device), "pid": os.getpid(),
            "device_count": torch.cuda.device_count() if torch.cuda.is_available() else 0,
            "uuid": (f"GPU-{torch.cuda.get_device_properties(0).uuid}" if torch.cuda.is_available() else None),
            "on": str(held.device)}
    if params.report:
        with open(params.report + ".tmp", "w") as out:
            json.dump(seen, out)
        os.replace(params.report + ".tmp", params.report)
    deadline = time.monotonic() + params.seconds
    while time.monotonic() < deadline and not ctx.should_stop():
        time.sleep(0.05)
    return {"device_count": float(seen["device_count"]), "held_mib": held.numel() * 4 / 2**20}


class SweepTrialParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    x: float = Field(0.5, ge=0, le=1)
    epochs: int = Field(8, ge=1, le=10_000)
    sleep: float = Field(0.2, ge=0, le=10, description="seconds an epoch takes")
    times: str = Field(description="folder the trial writes <job id>.json to: when it entered, when it reported")


@task("bench-sweep-trial", params=SweepTrialParams, metric="loss", mode="min")
def sweep_trial(ctx: TaskContext, params: SweepTrialParams) -> dict[str, Any]:
    """A sweep's trial for ``make bench-sweeps``: loss (x - 0.3)² + 1/epoch each epoch; the wall times it entered,
    reported each epoch, was told to stop and left, in a file (the benchmark reads them)."""
    import json
    from pathlib import Path

    seen: dict[str, Any] = {"entered": time.time(), "reports": {}}
    out = Path(params.times) / f"{ctx.job_id}.json"
    out.write_text(json.dumps(seen))
    loss = 0.0
    for epoch in range(1, params.epochs + 1):
        time.sleep(params.sleep)
        loss = (params.x - 0.3) ** 2 + 1 / epoch
        seen["reports"][str(epoch)] = time.time()
        ctx.report(epoch=epoch, loss=loss)
        out.write_text(json.dumps(seen))
        if ctx.should_stop():
            seen["stopped"] = seen["left"] = time.time()
            out.write_text(json.dumps(seen))
            return {}
    seen["left"] = time.time()
    out.write_text(json.dumps(seen))
    return {"loss": loss}
