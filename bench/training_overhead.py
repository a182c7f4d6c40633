"""Training overhead: the same config trained by the bare trainer vs through an RQ worker (heartbeat
thread, progress writes, status transitions). Alternating, in the same run."""

from __future__ import annotations

import argparse
import subprocess
import sys

from api.service import jobs
from api.stores import db
from bench.harness import REPO, percentiles, stack, wait_for, write_result

CONFIG = {"dataset": "digits", "epochs": 40, "hidden_sizes": [64], "batch_size": 16, "seed": 3}
BARE = (
    "import time, training\n"
    "cfg = training.TrainingConfig.model_validate({config!r})\n"
    "t = time.perf_counter(); training.train(cfg); print(time.perf_counter() - t)\n"
)


def bare_seconds() -> float:
    out = subprocess.run([sys.executable, "-c", BARE.format(config=CONFIG)], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def worker_seconds() -> float:
    job_id = jobs.submit("mlp", CONFIG, name="overhead").job.id

    def completed():
        db.session.expire_all()
        job = jobs.get_job(job_id)
        return job.status == "completed" and job

    job = wait_for(completed, 300, "the job", interval=1.0)  # the row times it; polling must not compete
    return (job.finished_at - job.started_at).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    bare, worker = [], []
    with stack(PROGRESS_INTERVAL="1.0") as s, s.app.app_context():
        s.worker("bench-worker")
        worker_seconds()  # warm-up: first job pays for dataset caches
        for i in range(args.repeats):
            bare.append(bare_seconds())
            worker.append(worker_seconds())
            print(f"run {i + 1}: bare {bare[-1]:.3f} s, worker {worker[-1]:.3f} s")
    ratios = [w / b for w, b in zip(worker, bare, strict=True)]
    write_result("training_overhead", {
        "description": "wall time of train() alone in a fresh process vs the same training inside an RQ work "
                       "horse (from the row's started_at to finished_at: heartbeats, progress writes and "
                       "transitions included), alternating",
        "config": CONFIG,
        "targets": {"overhead_ratio_p50": "<= 1.03"},
        "bare_s": bare, "worker_s": worker,
        "summary": {"bare": percentiles(bare), "worker": percentiles(worker), "ratio": percentiles(ratios)},
    })


if __name__ == "__main__":
    main()
