"""Orphan detection: SIGKILL a whole worker (parent and horse) while its job runs, with a replacement worker
up, and time until the job stops claiming to run.

In the same run:
- this project, default settings, the worker on this host (the pid shortcut may answer first), alternating with
- plain RQ 2.12 with its defaults: time until the RQ job leaves ``started``. That takes about 810 s, so
  the short mode stops waiting after ``--plain-cap`` seconds and reports "> cap"; ``--long`` waits;
- then this project, default settings, the worker on another host (its job cannot go to this host's workers:
  they are gone by then): a network namespace of its own, with its own pids and host name (tests/netns.py),
  reaching the servers over a veth pair; skipped, saying why, when not root.
Then partitions: the other host's link cut while its processes live on; seconds until its attempt stopped its
own training (the fence) and until the row left running. Then false positives, none of which may be marked
lost: one step of ``--slow-step`` s (its DataLoader worker frozen) while every core is kept busy by other
processes, and the worker and horse SIGSTOPped for ``--stop`` s then continued (training must go on).
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

from api.dev.servers import free_port
from api.stores import redis_connection
from bench.harness import REPO, http, percentiles, process_gone, stack, wait_for, write_result

JOB = {"dataset": "digits", "epochs": 100_000, "hidden_sizes": [32], "batch_size": 16}


def start_training(base: str, name: str) -> tuple[str, dict]:
    status, body = http("POST", f"{base}/api/training", {"name": name, "config": JOB})
    job_id = body["job"]["id"]
    job = wait_for(lambda: (j := http("GET", f"{base}/api/training/{job_id}")[1])["step"] > 0 and j, 60, "training")
    return job_id, job


def ours(s, base: str, names: list[str]) -> float:
    """One kill on this host; returns seconds until the row leaves running. Restores two workers afterwards."""
    job_id, job = start_training(base, "victim")
    conn = redis_connection.get()
    worker_pid = int(conn.hget(f"rq:worker:{job['worker_name']}", "pid"))
    os.kill(worker_pid, signal.SIGKILL)
    os.kill(job["worker_pid"], signal.SIGKILL)
    start = time.perf_counter()
    wait_for(lambda: http("GET", f"{base}/api/training/{job_id}")[1]["status"] != "running", 120, "detection",
             interval=0.02)
    elapsed = time.perf_counter() - start
    names.append(f"w{len(names)}")
    s.worker(names[-1])
    return elapsed


def ours_netns(s, base: str, host, names: list[str]) -> float:
    """One kill on the other host (the namespace's worker and its horse, by this host's pids)."""
    job_id, job = start_training(base, "victim-far")
    worker = next(w for w in host.processes if w.name == job["worker_name"])
    parent = psutil.Process(host.worker_pid(worker))
    victims = [parent.pid] + [c.pid for c in parent.children()]
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    start = time.perf_counter()
    wait_for(lambda: http("GET", f"{base}/api/training/{job_id}")[1]["status"] != "running", 120, "detection",
             interval=0.02)
    elapsed = time.perf_counter() - start
    names.append(f"far{len(names)}")
    host.start_worker(s.env, names[-1], s.workdir, redis_connection.get())
    return elapsed


def partition(s, base: str, host, names: list[str]) -> dict:
    """Cut the other host's link while its job trains; the fence and the detection, in seconds from the cut."""
    job_id, job = start_training(base, "cut-off")
    worker = next(w for w in host.processes if w.name == job["worker_name"])
    horse = psutil.Process(host.worker_pid(worker)).children()[0]
    host.cut()
    start, fenced, detected = time.perf_counter(), None, None
    try:
        while detected is None and time.perf_counter() - start < 60:
            if fenced is None and process_gone(horse.pid):
                fenced = time.perf_counter() - start
            if http("GET", f"{base}/api/training/{job_id}")[1]["status"] != "running":
                detected = time.perf_counter() - start
            time.sleep(0.02)
    finally:
        host.heal()
    worker.kill()  # RQ's worker quits on the Redis connection it lost; a fresh one takes its place
    names.append(f"far{len(names)}")
    host.start_worker(s.env, names[-1], s.workdir, redis_connection.get())
    return {"fence_s": fenced, "detected_s": detected, "fenced_first": fenced is not None and detected is not None
            and fenced < detected}


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


def busy_cores() -> list[subprocess.Popen]:
    """One spinning process per core: every core busy with other work."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]


def stopped_check(base: str, seconds: float) -> dict:
    """SIGSTOP a training job's worker and horse for ``seconds``, then SIGCONT: never lost, and it trains on."""
    status, body = http("POST", f"{base}/api/training", {"name": "stopped", "config": JOB})
    job_id = body["job"]["id"]
    job = wait_for(lambda: (j := http("GET", f"{base}/api/training/{job_id}")[1])["step"] > 0 and j, 60, "training")
    worker_pid = int(redis_connection.get().hget(f"rq:worker:{job['worker_name']}", "pid"))
    frozen = [worker_pid, job["worker_pid"]]
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    statuses, deadline = set(), time.monotonic() + seconds
    while time.monotonic() < deadline:
        statuses.add(http("GET", f"{base}/api/training/{job_id}")[1]["status"])
        time.sleep(0.25)
    stalled = http("GET", f"{base}/api/training/{job_id}")[1]["step"]
    for pid in frozen:
        os.kill(pid, signal.SIGCONT)
    try:
        wait_for(lambda: http("GET", f"{base}/api/training/{job_id}")[1]["step"] > stalled + 5, 60, "training on")
        trained_on = True
    except TimeoutError:
        trained_on = False
    statuses.add(http("GET", f"{base}/api/training/{job_id}")[1]["status"])
    http("DELETE", f"{base}/api/training/{job_id}")
    return {"stopped_s": seconds, "statuses_seen": sorted(statuses), "trained_on_after": trained_on,
            "marked_lost": statuses != {"running"} or not trained_on}


def false_positive_check(base: str, seconds: float) -> dict:
    """A healthy job whose one step takes ``seconds`` (its training thread blocked in it; ``test-long-step`` of
    tests/task_modules/sample.py, on a worker that offers it) while every core is busy with other work: it must
    show running the whole time, and complete."""
    status, body = http("POST", f"{base}/api/training",
                        {"name": "long-step", "task": "test-long-step", "params": {"seconds": seconds}})
    assert status == 201, body
    job_id = body["job"]["id"]
    wait_for(lambda: http("GET", f"{base}/api/training/{job_id}")[1]["step"] >= 1, 60, "the long step to begin")
    spinners = busy_cores()
    stalled, worst_age, statuses = http("GET", f"{base}/api/training/{job_id}")[1]["step"], 0.0, set()
    deadline = time.monotonic() + seconds - 2  # the step began a moment before: stop watching before it ends
    while time.monotonic() < deadline:
        view = http("GET", f"{base}/api/training/{job_id}")[1]
        statuses.add(view["status"] + (" (stale)" if view["stale"] else ""))
        worst_age = max(worst_age, view["heartbeat_age_seconds"] or 0)
        time.sleep(0.25)
    step_after = http("GET", f"{base}/api/training/{job_id}")[1]["step"]
    for p in spinners:
        p.kill()
        p.wait()
    final = wait_for(lambda: (j := http("GET", f"{base}/api/training/{job_id}")[1])["status"] != "running" and j,
                     60, "the job to end")
    return {"step_seconds": seconds, "busy_processes": len(spinners), "steps_during_stall": step_after - stalled,
            "statuses_seen": sorted(statuses), "final_status": final["status"],
            "max_heartbeat_age_s": worst_age, "marked_lost": statuses != {"running"} or final["status"] != "completed"}


def only_false_positives(slow_step: float) -> None:
    """Re-run the long-step check alone, into the committed result (the rest of it as it was)."""
    import json

    from bench.harness import RESULTS

    path = RESULTS / "orphan_detection.json"
    result = json.loads(path.read_text())
    with stack() as s, s.app.app_context():
        port = free_port()
        s.gunicorn(port)
        s.flask("reconciler", name="reconciler")
        s.worker("w-fp", TRAINQ_TASKS="tests.task_modules.sample")
        result["false_positive_check"] = false_positive_check(f"http://127.0.0.1:{port}", slow_step)
        result["false_positive_check"]["load_average"] = os.getloadavg()
    print(f"false-positive check (long step, busy cores): {result['false_positive_check']}")
    path.write_text(json.dumps(result, indent=2) + "\n")


def main() -> None:
    from tests import netns

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--plain-cap", type=float, default=30.0, help="seconds to wait for plain RQ (short mode)")
    parser.add_argument("--long", action="store_true", help="wait up to 1000 s for plain RQ")
    parser.add_argument("--slow-step", type=float, default=120.0)
    parser.add_argument("--stop", type=float, default=60.0)
    parser.add_argument("--only-false-positives", action="store_true",
                        help="re-run the long-step check alone, into the committed result")
    args = parser.parse_args()
    if args.only_false_positives:
        return only_false_positives(args.slow_step)
    cap = 1000.0 if args.long else args.plain_cap
    no_netns = netns.unavailable()
    host = None if no_netns else netns.Host.create()
    local, remote, plain, cuts = [], [], [], []
    load_before = os.getloadavg()
    try:
        listen = {"also_listen": (host.host_ip,), "clients": (f"{host.ip}/32",)} if host else {}
        with stack(**listen) as s, s.app.app_context():
            port = free_port()
            s.gunicorn(port)
            base = f"http://127.0.0.1:{port}"
            s.flask("reconciler", name="reconciler")
            names, far = ["w0", "w1"], ["far0"]
            for name in names:
                s.worker(name)
            count = [0]
            for name in ("plain-a", "plain-b"):
                start_plain_worker(s, name)
            for i in range(args.trials):  # this host and plain RQ, alternating
                local.append(ours(s, base, names))
                plain.append(plain_rq(s, cap, count))
                shown = f"{plain[-1]:.1f} s" if plain[-1] is not None else f"> {cap:.0f} s"
                print(f"trial {i + 1}: this project {local[-1]:.2f} s (same host); plain RQ {shown}")
            if host:  # then the other host's worker alone takes the jobs
                for process in s.processes:
                    if process.poll() is None and "worker" in process.args and "rq.cli" not in process.args:
                        os.killpg(process.pid, signal.SIGKILL)
                host.start_worker(s.env, far[0], s.workdir, redis_connection.get())
                for i in range(args.trials):
                    remote.append(ours_netns(s, base, host, far))
                    print(f"other host trial {i + 1}: {remote[-1]:.2f} s")
                for i in range(args.partitions):
                    cuts.append(partition(s, base, host, far))
                    print(f"partition {i + 1}: {cuts[-1]}")
                for w in host.processes:
                    w.kill()
            s.worker("w-fp", TRAINQ_TASKS="tests.task_modules.sample")  # the false-positive jobs: this host
            load_mid = os.getloadavg()
            false_positive = false_positive_check(base, args.slow_step)
            print(f"false-positive check (slow step, busy cores): {false_positive}")
            stopped = stopped_check(base, args.stop)
            print(f"false-positive check (SIGSTOP): {stopped}")
    finally:
        if host:
            host.remove()
    detected = [p for p in plain if p is not None]
    write_result("orphan_detection_long" if args.long else "orphan_detection", {
        "description": "SIGKILL worker + horse during a job with a replacement worker up; seconds until the job "
                       "stops claiming to run. Plain RQ with defaults, this project with defaults. Then the other "
                       "host's link cut (partition): seconds until its attempt fenced itself and until the row "
                       "left running.",
        "mode": "long" if args.long else "short",
        "plain_cap_s": cap,
        "other_host": "a worker in a network namespace (own pids, host name), over a veth pair" if host
                      else f"skipped: {no_netns}",
        "load_average": {"before": load_before, "after_kills": load_mid, "after": os.getloadavg()},
        "targets": {"this_project_p50_s": "<= 1", "this_project_max_s": "<= 2", "partition_detected_s": "<= 15"},
        "samples_s": {"this_project_same_host": local, "this_project_other_host": remote, "plain_rq": plain},
        "partitions": cuts,
        "summary": {
            "this_project_same_host": percentiles(local),
            "this_project_other_host": percentiles(remote) if remote else None,
            "plain_rq": percentiles(detected) if detected else None,
            "plain_rq_undetected_within_cap": len(plain) - len(detected),
            "partition_fence": percentiles([c["fence_s"] for c in cuts if c["fence_s"]]) if cuts else None,
            "partition_detected": percentiles([c["detected_s"] for c in cuts if c["detected_s"]]) if cuts else None,
        },
        "false_positive_check": false_positive,
        "stopped_check": stopped,
    })


if __name__ == "__main__":
    main()
