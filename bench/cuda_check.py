"""Do tasks train on CUDA when a worker host has a GPU? Run on a GPU machine (``python -m bench.cuda_check``);
writes bench/results/cuda_check.json. Needs torch with CUDA, pydantic and scikit-learn; no servers.

What it checks, as a worker does it:
1. The parent process imports the task modules (the built-ins, the example package's ``sine``, the benchmark's
   ``bench-loop``) and ``torch._dynamo`` as ``flask worker`` does at start, and has not initialised CUDA (a CUDA
   context does not survive ``fork``: a worker that initialised it would break every job).
2. In a forked child, as RQ's work horse runs a job: each task runs through ``TaskContext`` with the default
   device (CUDA when available), its model's parameters are on the GPU, memory was allocated there, and it
   returns its final metrics.
3. ``ctx.report`` every step on the GPU (``.item()`` waits for the step) against the same loop without it,
   interleaved blocks in one process.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TASK_MODULES = "builtin_tasks.tasks,trainq_sine.tasks,bench.bench_tasks"
RUNS = {  # task -> params: small, so the check takes seconds
    "mlp": {"epochs": 3},
    "diabetes-regression": {"epochs": 5},
    "sine-lstm": {"epochs": 3},
}


class RecordingSink:
    """What the worker's sink does in the training thread (a report appended under a lock), kept in memory."""

    def __init__(self) -> None:
        import threading

        self.lock, self.entries, self.latest = threading.Lock(), [], {}  # type: ignore[var-annotated]
        self.checkpoints: list[str] = []
        self.total_steps: int | None = None

    def report(self, entry: dict[str, Any]) -> None:
        with self.lock:
            if "epoch" not in entry and self.entries and "epoch" not in self.entries[-1]:
                self.entries[-1] = entry
            else:
                self.entries.append(entry)
            self.latest.update(entry)

    def progress_total(self, steps: int | None, epochs: int | None) -> None:
        self.total_steps = steps

    def checkpointed(self, path: Path) -> None:
        self.checkpoints.append(path.name)

    def artifact_saved(self, artifact: dict[str, Any]) -> None:
        pass

    def stop_reason(self) -> str | None:
        return None


def run_in_horse() -> dict[str, Any]:
    """In the forked child: every task on the default device, then the report overhead on it."""
    import logging

    import torch

    import trainq
    from trainq import TaskContext

    out: dict[str, Any] = {"cuda_available": torch.cuda.is_available(),
                           "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                           "tasks": {}}
    for name, raw in RUNS.items():
        task = trainq.registry()[name]
        base = Path(tempfile.mkdtemp(prefix=f"cuda-check-{name}-"))
        sink = RecordingSink()
        ctx = TaskContext(job_id=name, attempt=1, checkpoint_dir=base / "checkpoints",
                          artifact_dir=base / "artifacts", workdir=base / "work", log=logging.getLogger(name),
                          sink=sink)
        torch.cuda.reset_peak_memory_stats() if torch.cuda.is_available() else None
        params = task.params.model_validate(raw)
        started = time.perf_counter()
        metrics = task(ctx, params)
        took = time.perf_counter() - started
        out["tasks"][name] = {
            "params": raw, "device": str(ctx.device), "seconds": took, "final_metrics": metrics,
            "reports": len(sink.entries), "checkpoints": len(sink.checkpoints),
            "artifacts": sorted(p.name for p in ctx.artifact_dir.glob("*")) if ctx.artifact_dir.exists() else [],
            "peak_cuda_memory_mib": (torch.cuda.max_memory_allocated() / 2**20) if torch.cuda.is_available() else 0,
        }
        print(f"{name}: {out['tasks'][name]}", flush=True)
    out["deferred_read"] = deferred_read() if torch.cuda.is_available() else None
    out["report_overhead"] = report_overhead()
    return out


def deferred_read() -> dict[str, Any]:
    """A metric reported as a CUDA tensor made on a stream of its own is read correctly from another thread
    (as the worker's progress thread reads it), and report() did not wait for it."""
    import logging
    import threading

    import torch

    from trainq import TaskContext
    from trainq.context import Deferred, resolve_entry

    base = Path(tempfile.mkdtemp(prefix="cuda-check-deferred-"))
    sink = RecordingSink()
    ctx = TaskContext(job_id="deferred", attempt=1, checkpoint_dir=base / "c", artifact_dir=base / "a",
                      workdir=base / "w", log=logging.getLogger("deferred"), sink=sink)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        x = torch.randn(8192, 8192, device="cuda")
        y = x
        for _ in range(20):  # a second or so of work queued on the stream
            y = torch.tanh(y @ x / 90.5)
        value = y.double().abs().sum()
        called = time.perf_counter()
        ctx.report(step=1, value=value)
        report_s = time.perf_counter() - called
        expected = value.item()
    deferred = type(sink.entries[-1]["value"]) is Deferred
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.append(resolve_entry(sink.entries[-1])["value"]))
    reader.start()
    reader.join()
    out = {"deferred": deferred, "report_call_s": report_s, "expected": expected, "read_from_other_thread": got[0],
           "equal": got[0] == expected}
    print(f"deferred read: {out}", flush=True)
    if not (deferred and out["equal"] and expected > 0):
        raise AssertionError(f"deferred CUDA metric read wrong: {out}")
    return out


def report_overhead(steps: int = 4000, block: int = 50) -> dict[str, Any]:
    import logging

    import trainq
    from trainq import TaskContext

    task = trainq.registry()["bench-loop"]
    base = Path(tempfile.mkdtemp(prefix="cuda-check-loop-"))
    ctx = TaskContext(job_id="loop", attempt=1, checkpoint_dir=base / "c", artifact_dir=base / "a",
                      workdir=base / "w", log=logging.getLogger("loop"), sink=RecordingSink())
    result: dict[str, Any] = {"report_call": task(ctx, task.params.model_validate({"report_calls_seconds": 1.0}))}
    print(f"report call: {result['report_call']}", flush=True)
    import torch

    # the CPU benchmark's MLP, and (on a GPU) one whose step keeps the GPU busy
    for size in ("small", "wide") if torch.cuda.is_available() else ("small",):
        for form in ("tensor", "item"):  # ctx.report(loss=loss) as documented, or loss.item() (waits each step)
            raw = {"steps": steps, "interleave_block": block, "warmup": 200, "report_item": form == "item"}
            if size == "wide":
                raw.update(batch_size=1024, features=1024, hidden=4096, steps=steps // 4)
            m = task(ctx, task.params.model_validate(raw))
            key = f"{size}_{form}"
            result[key] = {"params": raw, "interleaved_ratio": m["interleaved_ratio"], "step_us": m["step_us"],
                           "block_pairs": m["interleaved_blocks"]}
            print(f"report overhead ({key}): {result[key]}", flush=True)
    return result


def main() -> None:
    sys.path[:0] = [str(REPO), str(REPO / "examples" / "sine-tasks")]
    os.environ["TRAINQ_TASKS"] = TASK_MODULES
    import torch

    import trainq

    loaded = trainq.load_task_modules()
    importlib.import_module("torch._dynamo")  # as `flask worker` does
    parent = {"torch": torch.__version__, "modules": loaded.modules, "errors": loaded.errors,
              "tasks": sorted(trainq.registry()),
              "cuda_initialised_in_parent": torch.cuda.is_initialized()}
    print(f"parent: {parent}", flush=True)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the work horse
        os.close(read)
        try:
            payload = json.dumps({"ok": True, **run_in_horse()})
        except BaseException as exc:  # report it, whatever it is
            import traceback

            payload = json.dumps({"ok": False, "error": repr(exc), "traceback": traceback.format_exc()})
        with os.fdopen(write, "w") as pipe:
            pipe.write(payload)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        horse = json.loads(pipe.read())
    os.waitpid(pid, 0)
    tasks = horse.get("tasks", {})
    ok = bool(horse.get("ok") and not parent["cuda_initialised_in_parent"] and horse.get("cuda_available")
              and len(tasks) == len(RUNS)
              and all(t["device"].startswith("cuda") and t["peak_cuda_memory_mib"] > 0 for t in tasks.values()))
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    result = {"benchmark": "cuda_check", "date": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
              "description": "Tasks on a GPU as a worker runs them: the parent imports the task modules without "
                             "initialising CUDA; in a forked child the built-ins and the example task train on "
                             "CUDA; a CUDA-tensor metric is read right; ctx.report every step, tensor vs .item()",
              "machine": {"cpus": os.cpu_count(), "cpu": f"{cpu}, GPU {horse.get('device_name')}",
                          "python": sys.version.split()[0]},
              "gpu": horse.get("device_name"), "python": sys.version.split()[0], "cpus": os.cpu_count(),
              "passed": ok, "parent": parent, "horse": horse}
    out = Path(os.environ.get("OUT") or REPO / "bench" / "results") / "cuda_check.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}; CUDA CHECK", "PASSED" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
