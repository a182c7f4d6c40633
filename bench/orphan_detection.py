"""Orphan detection: SIGKILL a whole worker (parent and horse) while its job runs, with a replacement worker
up, and time until the job stops claiming to run.

Side by side, alternating in the same run:
- this project, default settings, the worker on this host (the pid shortcut may answer first);
- this project, default settings, the worker's record naming another host (heartbeats alone answer);
- plain RQ 2.12 with its defaults: time until the RQ job leaves ``started``. That takes about 810 s, so
  the short mode stops waiting after ``--plain-cap`` seconds and reports "> cap"; ``--long`` waits.
Then a false-positive check: a healthy job whose one step takes 30 s (its DataLoader worker frozen) must
never be marked lost.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

import psutil
from rq import Queue
from rq.job import Job
from rq.worker import Worker

from api.extensions import redis_connection
from api.local import free_port
from bench.harness import REPO, http, percentiles, stack, wait_for, write_result

JOB = {"dataset": "digits", "epochs": 100_000, "hidden_sizes": [32], "batch_size": 16}


def ours(s, base: str, remote: bool, names: list[str]) -> float:
    """One kill; returns seconds until the row leaves running. Restores two workers afterwards."""
    status, body = http("POST", f"{base}/api/training", {"name": "victim", "config": JOB})
    job_id = body["job"]["id"]
    job = wait_for(lambda: (j := http("GET", f"{base}/api/training/{job_id}")[1])["step"] > 0 and j, 60, "training")
    conn = redis_connection.get()
    worker_pid = int(conn.hget(f"rq:worker:{job['worker_name']}", "pid"))
    if remote:
        conn.hset(f"rq:worker:{job['worker_name']}", "hostname", "another-host")
    os.kill(worker_pid, signal.SIGKILL)
    os.kill(job["worker_pid"], signal.SIGKILL)
    start = time.perf_counter()
    wait_for(lambda: http("GET", f"{base}/api/training/{job_id}")[1]["status"] != "running", 120, "detection",
             interval=0.02)
    elapsed = time.perf_counter() - start
    names.append(f"w{len(names)}")
    s.worker(names[-1])
    return elapsed


def plain_rq(s, cap: float, count: list[int]) -> float | None:
    """One kill under plain RQ; None if the job still says started after ``cap`` seconds."""
    conn = redis_connection.get()
    job = Queue("plain", connection=conn).enqueue("bench.plain_job.spin", 3600)
    wait_for(lambda: job.get_status(refresh=True) == "started", 60, "plain job to start")
    worker = next(w for w in Worker.all(connection=conn) if w.get_current_job_id() == job.id)
    horse = [p.pid for p in psutil.Process(worker.pid).children()]
    os.kill(worker.pid, signal.SIGKILL)
    for pid in horse:
        os.kill(pid, signal.SIGKILL)
    start = time.perf_counter()
    try:
        wait_for(lambda: Job.fetch(job.id, connection=conn).get_status() != "started", cap, "plain RQ", interval=0.1)
        elapsed = time.perf_counter() - start
    except TimeoutError:
        elapsed = None
    count[0] += 1
    start_plain_worker(s, f"plain{count[0]}")
    return elapsed


def start_plain_worker(s, name: str) -> None:
    log = open(s.workdir / f"{name}.log", "ab")  # noqa: SIM115
    s.processes.append(subprocess.Popen(
        [sys.executable, "-m", "rq.cli", "worker", "--url", s.env["REDIS_URL"], "--name", name, "plain"],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    with s.app.app_context():
        wait_for(lambda: redis_connection.get().exists(f"rq:worker:{name}"), 60, name)


def false_positive_check(base: str, seconds: float) -> dict:
    status, body = http("POST", f"{base}/api/training",
                        {"name": "slow-step", "config": {**JOB, "batch_size": 1, "num_workers": 1}})
    job_id = body["job"]["id"]
    job = wait_for(lambda: (j := http("GET", f"{base}/api/training/{job_id}")[1])["step"] > 0 and j, 60, "training")
    loaders = wait_for(lambda: psutil.Process(job["worker_pid"]).children(), 30, "loader worker")
    for p in loaders:
        p.send_signal(signal.SIGSTOP)
    stalled, worst_age, statuses = http("GET", f"{base}/api/training/{job_id}")[1]["step"], 0.0, set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        view = http("GET", f"{base}/api/training/{job_id}")[1]
        statuses.add(view["status"] + (" (stale)" if view["stale"] else ""))
        worst_age = max(worst_age, view["heartbeat_age_seconds"] or 0)
        time.sleep(0.25)
    step_after = http("GET", f"{base}/api/training/{job_id}")[1]["step"]
    for p in loaders:
        p.send_signal(signal.SIGCONT)
    http("DELETE", f"{base}/api/training/{job_id}")
    return {"step_seconds": seconds, "steps_during_stall": step_after - stalled, "statuses_seen": sorted(statuses),
            "max_heartbeat_age_s": worst_age, "marked_lost": statuses != {"running"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--plain-cap", type=float, default=30.0, help="seconds to wait for plain RQ (short mode)")
    parser.add_argument("--long", action="store_true", help="wait up to 1000 s for plain RQ")
    parser.add_argument("--slow-step", type=float, default=30.0)
    args = parser.parse_args()
    cap = 1000.0 if args.long else args.plain_cap
    local, remote, plain = [], [], []
    with stack() as s, s.app.app_context():
        port = free_port()
        s.gunicorn(port)
        base = f"http://127.0.0.1:{port}"
        s.flask("reconciler", name="reconciler")
        names = ["w0", "w1"]
        for name in names:
            s.worker(name)
        count = [0]
        for name in ("plain-a", "plain-b"):
            start_plain_worker(s, name)
        for i in range(args.trials):
            local.append(ours(s, base, remote=False, names=names))
            remote.append(ours(s, base, remote=True, names=names))
            plain.append(plain_rq(s, cap, count))
            shown = f"{plain[-1]:.1f} s" if plain[-1] is not None else f"> {cap:.0f} s"
            print(f"trial {i + 1}: this project {local[-1]:.2f} s (same host), {remote[-1]:.2f} s (other host); "
                  f"plain RQ {shown}")
        false_positive = false_positive_check(base, args.slow_step)
        print(f"false-positive check: {false_positive}")
    detected = [p for p in plain if p is not None]
    write_result("orphan_detection_long" if args.long else "orphan_detection", {
        "description": "SIGKILL worker + horse during a job with a replacement worker up; seconds until the job "
                       "stops claiming to run. Plain RQ with defaults, this project with defaults.",
        "mode": "long" if args.long else "short",
        "plain_cap_s": cap,
        "targets": {"this_project_p50_s": "<= 5"},
        "samples_s": {"this_project_same_host": local, "this_project_other_host": remote, "plain_rq": plain},
        "summary": {
            "this_project_same_host": percentiles(local),
            "this_project_other_host": percentiles(remote),
            "plain_rq": percentiles(detected) if detected else None,
            "plain_rq_undetected_within_cap": len(plain) - len(detected),
        },
        "false_positive_check": false_positive,
    })


if __name__ == "__main__":
    main()
