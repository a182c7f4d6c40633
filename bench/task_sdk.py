"""Task SDK costs, on real servers and real worker processes, in one run (``make bench-tasks``):

1. ``ctx.report`` every step: the same training loop (``bench-loop`` in bench/bench_tasks.py: an MLP step on
   random data, batch 64) with and without reporting each step, alternating, through the real worker; the
   ratio of the loops' own wall times. Plus the raw cost of one ``ctx.report`` call, in the worker's horse.
   Also the time spent inside ``ctx.report`` within those loops, and, interleaved in single jobs, blocks of
   steps without and with it (which cancels the shared machine's changing load).
2. POST -> task function entered, warm worker: ``bench-entry`` returns ``time.time()`` on entry; measured from
   just before the POST (gunicorn, as the other benchmarks start it) on the same machine's clock.
3. One-epoch jobs per minute: our worker running the built-in ``mlp`` task with ``{"epochs": 1}`` back to back
   vs a plain ``rq worker`` (defaults) running bench/plain_job.py's ``train_epochs`` with the same params, which
   imports ``training`` (and torch) in every forked horse. Alternating rounds, same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import psutil
from rq import Queue
from rq.job import Job

from api.dev.servers import free_port
from api.queue import SERIALIZER, rq_job_id_for
from api.stores import redis_connection
from bench.harness import REPO, http, percentiles, stack, wait_for, write_result
from bench.orphan_detection import start_plain_worker

TASKS_MODULE = "bench.bench_tasks"
EPOCH_PARAMS = {"epochs": 1}  # the mlp task's defaults otherwise: digits, hidden [64], batch 32, seed 0
PLAIN_QUEUE = "plain"  # what start_plain_worker listens on
TERMINAL = {"completed", "failed", "cancelled", "paused"}


def ts(value: str | datetime) -> float:
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def submit(base: str, task: str, params: dict, name: str) -> str:
    status, body = http("POST", f"{base}/api/training", {"task": task, "params": params, "name": name})
    if status != 201:
        raise RuntimeError(f"POST {task} answered {status}: {body}")
    return body["job"]["id"]


def wait_done(base: str, job_id: str, interval: float, timeout: float = 300) -> dict:
    job = wait_for(lambda: (j := http("GET", f"{base}/api/training/{job_id}")[1])["status"] in TERMINAL and j,
                   timeout, f"job {job_id}", interval=interval)
    if job["status"] != "completed":
        raise RuntimeError(f"job {job_id} ended {job['status']}: {job.get('error_message') or job}")
    return job


def run_job(base: str, task: str, params: dict, name: str, interval: float = 0.5) -> dict:
    return wait_done(base, submit(base, task, params, name), interval)


class OtherLoad:
    """CPU used on this machine by processes outside this benchmark's process tree, in cores (averaged)."""

    def __init__(self) -> None:
        self.me = psutil.Process()

    def _ours(self) -> float:
        total = 0.0
        for p in [self.me, *self.me.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except psutil.Error:
                pass
        return total

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        return sum(t) - t.idle - getattr(t, "iowait", 0.0)

    def start(self) -> None:
        self.t0, self.busy0, self.ours0 = time.monotonic(), self._busy(), self._ours()
        self.load0 = os.getloadavg()

    def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self.t0
        busy, ours = self._busy() - self.busy0, self._ours() - self.ours0
        return {"wall_s": wall, "all_cpu_cores": busy / wall, "this_benchmark_cores": ours / wall,
                "other_processes_cores": max(busy - ours, 0.0) / wall, "load_average_start": self.load0,
                "load_average_end": os.getloadavg(), "cpus": os.cpu_count()}


def pooled_block_ratio(jobs: list[dict[str, float]]) -> dict[str, float] | None:
    """All interleaved jobs' block pairs together: total time with / without, and its 95 % interval from the
    spread of the per-pair differences."""
    n = sum(int(m["interleaved_blocks"]) for m in jobs)
    if n < 2:
        return None
    without = sum(m["interleaved_without_s"] for m in jobs)
    mean = sum(m["interleaved_blocks"] * m["interleaved_diff_mean_s"] for m in jobs) / n
    sq = sum((m["interleaved_blocks"] - 1) * m["interleaved_diff_stdev_s"] ** 2
             + m["interleaved_blocks"] * (m["interleaved_diff_mean_s"] - mean) ** 2 for m in jobs)
    half = 1.96 * (sq / (n - 1) * n) ** 0.5  # on the sum of n differences
    total = n * mean
    return {"block_pairs": n, "ratio": 1 + total / without, "ci95_low": 1 + (total - half) / without,
            "ci95_high": 1 + (total + half) / without}


def report_overhead(base: str, pairs: int, steps: int, interleaved_jobs: int, block: int,
                    cost_seconds: float) -> dict[str, Any]:
    off, on, step_us, in_report, cuda = [], [], [], [], False
    call_us, slow_per_job, slow_ms = [], [], []
    for i in range(pairs):
        for report in ((False, True) if i % 2 == 0 else (True, False)):  # ABBA: neither always goes first
            m = run_job(base, "bench-loop", {"report": report, "steps": steps}, f"loop-{i}-{report}")["metrics"]
            (on if report else off).append(m["loop_s"])
            step_us.append(m["step_us"])
            cuda = cuda or bool(m["on_cuda"])
            if report:
                in_report.append(m["in_report_s"] / m["loop_s"])
                slow = m["slow_report_calls"]
                call_us.append((m["in_report_s"] - m["in_slow_report_calls_s"]) / (steps - slow) * 1e6)
                slow_per_job.append(slow)
                if slow:
                    slow_ms.append(m["in_slow_report_calls_s"] / slow * 1000)
        print(f"pair {i + 1}: without report {off[-1]:.3f} s, with {on[-1]:.3f} s, ratio {on[-1] / off[-1]:.4f}; "
              f"inside ctx.report {in_report[-1]:.3%} of the loop")
    ratios = [a / b for a, b in zip(on, off, strict=True)]
    interleaved = []
    for i in range(interleaved_jobs):
        m = run_job(base, "bench-loop", {"steps": steps, "interleave_block": block}, f"interleaved-{i}")["metrics"]
        interleaved.append(m)
        print(f"interleaved job {i + 1}: ratio {m['interleaved_ratio']:.4f} ({m['interleaved_blocks']:.0f} block "
              f"pairs of {block} steps)")
    pooled = pooled_block_ratio(interleaved)
    cost = run_job(base, "bench-loop", {"report_calls_seconds": cost_seconds}, "report-cost")["metrics"]
    median_step_us = statistics.median(step_us)
    print(f"job pairs: ratio p50 {statistics.median(ratios):.4f}; inside ctx.report p50 "
          f"{statistics.median(in_report):.3%} of the loop; interleaved {pooled}; ctx.report "
          f"{cost['report_tensor_us_median']:.2f} us (tensor), {cost['report_float_us_median']:.2f} us (float)")
    interleaved_ratios = [m["interleaved_ratio"] for m in interleaved]
    return {
        "steps": steps, "pairs": pairs, "loop_without_report_s": off, "loop_with_report_s": on,
        "ratio_with_over_without": ratios, "ratio": percentiles(ratios),
        # identical jobs' spread: what the job pairs cannot see through
        "without_report_spread": (max(off) - min(off)) / statistics.median(off),
        "step_us_median": median_step_us, "device": "cuda" if cuda else "cpu",
        # ctx.report's own time in the reporting jobs' loops: a share of the loop, one ordinary call, and the calls
        # over 1 ms (preempted, or waiting for the GIL while the worker's thread wrote the row)
        "inside_report_share": percentiles(in_report), "inside_report_share_samples": in_report,
        "in_loop_call_us": percentiles(call_us),
        "slow_calls_per_job": percentiles(slow_per_job),
        "slow_call_ms": percentiles(slow_ms) if slow_ms else None,
        "interleaved": {"jobs": interleaved_jobs, "block_steps": block, "steps_each_side": steps,
                        "ratios": interleaved_ratios,
                        "ratio": percentiles(interleaved_ratios) if interleaved_ratios else None,
                        "pooled_block_pair_ratio": pooled, "per_job": interleaved},
        "report_call": cost,
        # the tight loop's per-call cost (tensor form, hot caches) as a share of the median step
        "estimated_overhead_from_call_cost": cost["report_tensor_us_mean"] / median_step_us,
    }


def entry_latency(base: str, samples: int, warmup: int) -> dict[str, Any]:
    for i in range(warmup):
        run_job(base, "bench-entry", {"seq": i}, "entry-warmup", interval=0.05)
    latency, answered, to_started, started_to_entry = [], [], [], []
    for i in range(samples):
        sent = time.time()
        job_id = submit(base, "bench-entry", {"seq": i}, f"entry-{i}")
        answer = time.time()
        job = wait_done(base, job_id, interval=0.05)
        entered, started = job["metrics"]["entered_at"], ts(job["started_at"])
        latency.append(entered - sent)
        answered.append(answer - sent)
        to_started.append(started - sent)
        started_to_entry.append(entered - started)
    summary = percentiles(latency)
    print(f"POST -> task entered: p50 {summary['p50'] * 1000:.1f} ms, p95 {summary['p95'] * 1000:.1f} ms")
    inherited = {k: bool(v) for k, v in job["metrics"].items() if k.startswith("horse_had_")}
    return {"samples": samples, "warmup": warmup, "samples_s": latency, "summary": summary,
            "horse_inherited_modules": inherited,
            "breakdown_p50_s": {"post_answered": statistics.median(answered),
                                "post_sent_to_row_started_at": statistics.median(to_started),
                                "row_started_at_to_task_entered": statistics.median(started_to_entry)}}


def rate(starts: list[float], ends: list[float]) -> dict[str, Any]:
    span, durations = max(ends) - min(starts), [e - s for s, e in zip(starts, ends, strict=True)]
    return {"jobs": len(starts), "span_s": span, "jobs_per_minute": len(starts) / span * 60,
            "job_s": percentiles(durations), "job_s_samples": durations}


def ours_round(base: str, count: int, label: str) -> dict[str, Any]:
    ids = [submit(base, "mlp", EPOCH_PARAMS, f"{label}-{i}") for i in range(count)]
    rows = [wait_done(base, job_id, interval=0.5) for job_id in ids]
    conn = redis_connection.get()
    rq_jobs = [Job.fetch(rq_job_id_for(job_id, 1), connection=conn, serializer=SERIALIZER) for job_id in ids]
    return {"rows": rate([ts(r["started_at"]) for r in rows], [ts(r["finished_at"]) for r in rows]),
            "rq_timestamps": rate([ts(j.started_at) for j in rq_jobs], [ts(j.ended_at) for j in rq_jobs])}


def plain_round(count: int) -> dict[str, Any]:
    conn = redis_connection.get()
    queue = Queue(PLAIN_QUEUE, connection=conn)
    enqueued = [queue.enqueue("bench.plain_job.train_epochs", EPOCH_PARAMS, job_timeout=600) for _ in range(count)]

    def finished() -> bool:
        statuses = [job.get_status(refresh=True) for job in enqueued]
        if "failed" in statuses:
            failed = next(job for job in enqueued if job.get_status() == "failed")
            raise RuntimeError(f"plain RQ job failed: {failed.latest_result().exc_string}")
        return all(status == "finished" for status in statuses)

    wait_for(finished, 1200, "plain RQ jobs", interval=0.5)
    jobs = [Job.fetch(job.id, connection=conn) for job in enqueued]
    return {"rq_timestamps": rate([ts(j.started_at) for j in jobs], [ts(j.ended_at) for j in jobs])}


LAZY_IMPORTS = """
import importlib, json, os, statistics, sys, time
import trainq
trainq.load_task_modules({})  # the built-in tasks, imported as a worker imports them at start
from api.worker.attempt import import_lazy_modules
import_lazy_modules()  # as the worker does at start
found = {}
for module in ("torch._dynamo", "sklearn.datasets"):
    samples = []
    for _ in range(3):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # a fresh child, like a work horse
            started = time.perf_counter()
            importlib.import_module(module)
            os.write(write, str(time.perf_counter() - started).encode())
            os._exit(0)
        os.close(write)
        samples.append(float(os.read(read, 100)))
        os.waitpid(pid, 0)
    found[module] = {"imported_by_task_modules": module in sys.modules, "seconds_in_a_fresh_horse": samples,
                     "median_s": statistics.median(samples)}
print(json.dumps(found))
"""


def lazy_imports() -> dict[str, Any]:
    """What a horse of a worker that imported the built-in tasks (and ``import_lazy_modules``) still imports on a
    first ``mlp`` job, of what used to be imported per job: ``torch._dynamo`` (torch's optimizers import it on
    first use) and ``sklearn.datasets`` (the digits dataset)."""
    out = subprocess.run([sys.executable, "-c", LAZY_IMPORTS], cwd=REPO, check=True, capture_output=True,
                         text=True, env={**os.environ, "TRAINQ_TASKS": ""}).stdout
    return json.loads(out.strip().splitlines()[-1])


def throughput(base: str, rounds: int, count: int) -> dict[str, Any]:
    run_job(base, "mlp", EPOCH_PARAMS, "epoch-warmup")  # both sides warm (file cache, .pyc) before timing
    plain_round(1)
    ours, plain = [], []
    for i in range(rounds):
        for side in (("ours", "plain") if i % 2 == 0 else ("plain", "ours")):
            if side == "ours":
                ours.append(ours_round(base, count, f"epoch-{i}"))
                print(f"round {i + 1}: this worker {ours[-1]['rows']['jobs_per_minute']:.1f} jobs/min")
            else:
                plain.append(plain_round(count))
                print(f"round {i + 1}: plain rq worker {plain[-1]['rq_timestamps']['jobs_per_minute']:.1f} jobs/min")

    def total(results: list[dict], key: str) -> float:
        return sum(r[key]["jobs"] for r in results) / sum(r[key]["span_s"] for r in results) * 60

    imports = lazy_imports()
    print("imported in each mlp horse: " + ", ".join(f"{m} {v['median_s']:.2f} s" for m, v in imports.items()))
    ours_rate, ours_rq_rate = total(ours, "rows"), total(ours, "rq_timestamps")
    plain_rate = total(plain, "rq_timestamps")
    return {"params": EPOCH_PARAMS, "jobs_per_round": count, "rounds": rounds, "ours": ours, "plain_rq": plain,
            "ours_jobs_per_minute": ours_rate, "ours_jobs_per_minute_rq_timestamps": ours_rq_rate,
            "plain_rq_jobs_per_minute": plain_rate, "ratio": ours_rate / plain_rate,
            "ratio_rq_timestamps": ours_rq_rate / plain_rate, "lazy_imports_per_horse": imports}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=7, help="report/no-report job pairs")
    parser.add_argument("--steps", type=int, default=2000, help="timed steps per loop job")
    parser.add_argument("--interleaved-jobs", type=int, default=4,
                        help="jobs alternating blocks without/with report inside one loop")
    parser.add_argument("--block", type=int, default=25, help="steps per block in the interleaved jobs")
    parser.add_argument("--report-seconds", type=float, default=1.5, help="time bare ctx.report calls (per form)")
    parser.add_argument("--entry-samples", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2, help="alternating throughput rounds")
    parser.add_argument("--jobs", type=int, default=10, help="one-epoch jobs per round and side")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="OMP_NUM_THREADS for every worker and horse, both sides (0: torch's default)")
    args = parser.parse_args()
    if args.torch_threads:
        # On a small shared machine torch's default (one thread per core) spins against other processes: one
        # epoch of the mlp config took 3-5 s with 2 threads and 0.2 s with 1 when this was written.
        os.environ["OMP_NUM_THREADS"] = str(args.torch_threads)
    load = OtherLoad()
    started = time.monotonic()
    with stack(PROGRESS_INTERVAL="1.0") as s, s.app.app_context():
        port = free_port()
        s.gunicorn(port)
        base = f"http://127.0.0.1:{port}"
        s.worker("bench-tasks-worker", TRAINQ_TASKS=TASKS_MODULE)
        start_plain_worker(s, "plain-trainer")  # rq.cli worker, default settings, queue "plain"
        load.start()
        overhead = report_overhead(base, args.pairs, args.steps, args.interleaved_jobs, args.block,
                                   args.report_seconds)
        entry = entry_latency(base, args.entry_samples, warmup=3)
        jobs = throughput(base, args.rounds, args.jobs)
        machine_load = load.stop()
    other = machine_load["other_processes_cores"]
    print(f"jobs/min: this worker {jobs['ours_jobs_per_minute']:.1f}, plain rq {jobs['plain_rq_jobs_per_minute']:.1f} "
          f"(x{jobs['ratio']:.1f}); other processes used {other:.2f} of {os.cpu_count()} cores meanwhile")
    write_result("task_sdk", {
        "description": "The task SDK on real servers and real worker processes (flask worker with "
                       "TRAINQ_TASKS=bench.bench_tasks, gunicorn -w 2, PROGRESS_INTERVAL 1 s): ctx.report every "
                       "step vs the same loop without it; POST -> task function entered; one-epoch jobs per "
                       "minute vs a plain rq worker",
        "targets": {"report_overhead_ratio_p50": "<= 1.01", "post_to_entry_p50_s": "<= 0.1"},
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "torch default"),
        "loop_model": {"layers": "Linear(128, 256) ReLU Linear(256, 256) ReLU Linear(256, 10)", "batch_size": 64,
                       "optimizer": "SGD momentum 0.9", "torch_threads": 1, "device": overhead["device"],
                       "reported_as": "ctx.report(step=i, loss=loss) with the loss tensor (on the CPU, "
                                      "report() reads it with .item() at once)"},
        "report_overhead": overhead,
        "entry_latency": entry,
        "throughput": jobs,
        "machine_load": {**machine_load, "shared": other >= 0.25,
                         "note": "CPU used by processes outside this benchmark (other engineers' test runs) "
                                 "while it ran, averaged over the run"},
        "total_s": time.monotonic() - started,
    })


if __name__ == "__main__":
    main()
