"""The scheduler, measured (``make bench-scheduler``; results in bench/results/scheduler.json):

1. Placement latency, on an idle host with 4 fake GPUs (one agent, 5 slots, gunicorn and the reconciler as
   ``make run`` starts them): POST of a 1-GPU ``bench-sleep`` job -> its task function entered (``time.time()``
   on entry, the same machine's clock), one job at a time; beside it, as the floor under the same load, a plain
   ``rq worker``'s enqueue -> function entered. Then the hand-over: a 4-GPU job holds the host while a 1-GPU job
   is submitted and waits; the time from the first one's task returning to the second one's task being entered
   on the freed devices.
2. Utilisation on a simulated cluster: 3 agents x 4 fake GPUs and 8 CPUs, 8 RQ workers each (the third in a
   network namespace of its own when the machine allows it: tests/netns.py), a seeded mix of jobs asking 1, 2 or
   4 GPUs (half, 30 %, 20 %) that sleep 1-10 s (times ``--scale``), submitted one after another as fast as the
   API answers, oldest first. Run twice on the same servers, with the scheduler's default
   (``SCHEDULING=backfill``) and with plain first-in-first-out (``SCHEDULING=fifo``: the first job that does not
   fit holds back every job behind it), each with agents, API and reconciler of its own.
   From each job's own timestamps (submitted: just before its POST; entered and left: its task's ``time.time()``;
   its host and GPUs: its ``CUDA_VISIBLE_DEVICES`` and its agent's ``BENCH_HOST_NO``): the makespan (first POST ->
   last task returned) against the lower bound max(GPU-seconds asked / 12, longest job); and the GPU-seconds left
   idle while a job that fitted waited: over every interval between two of those timestamps, for each host, its
   GPUs running no task, counted when some submitted job not yet entered asked no more than that many. A job
   placed but not yet entered counts as waiting, so each job's start-up (enqueue, fork, the horse's writes)
   counts as idle: the part in idle stretches of at most 1 s is reported apart from longer ones.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import time
from typing import Any

from sqlalchemy import text

from api.dev.servers import free_port
from api.stores import db, redis_connection
from bench.harness import Stack, http, percentiles, stack, wait_for, write_result

TASKS = "bench.bench_tasks"
HOSTS, GPUS_PER_HOST = 3, 4
MIX = ((1, 0.5), (2, 0.3), (4, 0.2))  # GPUs asked, share of the jobs
SHORT_STRETCH_S = 1.0
SLOTS = 8  # each agent's RQ workers: one per CPU (--cpus 8), the agent's default; spare ones take the next job
# while the one whose job just ended runs its scheduling pass (with exactly one per GPU the next job on a freed GPU
# waits for that pass: 0.7-0.9 s per hand-off on the loaded 2-core VM, measured)


def submit(base: str, name: str, seconds: float, gpus: int) -> tuple[str, float]:
    sent = time.time()
    status, body = http("POST", f"{base}/api/training", {"name": name, "task": "bench-sleep",
                                                        "params": {"seconds": seconds}, "resources": {"gpus": gpus}})
    if status != 201:
        raise RuntimeError(f"submit {name}: {status} {body}")
    return body["job"]["id"], sent


def rows(prefix: str) -> dict[str, Any]:
    found = db.session.execute(text("SELECT id::text, name, status, metrics FROM training_jobs WHERE name LIKE :p"),
                               {"p": f"{prefix}%"}).all()
    db.session.commit()
    return {r.id: r for r in found}


def wait_ended(ids: list[str], timeout: float) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        found = db.session.execute(text("SELECT id::text, name, status, metrics FROM training_jobs WHERE "
                                        "id = ANY(CAST(:ids AS uuid[])) AND status NOT IN ('queued', 'running')"),
                                   {"ids": ids}).all()
        db.session.commit()
        return {r.id: r for r in found} if len(found) == len(ids) else None

    done = wait_for(ended, timeout, f"{len(ids)} jobs to end", interval=0.01)
    failed = {i: r.status for i, r in done.items() if r.status != "completed"}
    if failed:
        raise RuntimeError(f"jobs did not complete: {failed}")
    return done


def wait_running(job_id: str) -> None:
    def running() -> bool:
        status = db.session.scalar(text("SELECT status FROM training_jobs WHERE id = :i"), {"i": job_id})
        db.session.commit()
        return status == "running"

    wait_for(running, 60, f"job {job_id} to run", interval=0.005)


def stop(s: Stack, since: int, netns_workers: list) -> None:
    """Kill what a phase started (everything started after ``since`` processes)."""
    for process in s.processes[since:]:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except OSError:
                pass
    for worker in netns_workers:
        worker.kill()


def agent_env(name: str, number: int, mode: str, gpus: int, slots: int) -> dict[str, str]:
    return {"TRAINQ_FAKE_GPUS": str(gpus), "TRAINQ_SLOTS": str(slots), "TRAINQ_CPUS": "8", "TRAINQ_TASKS": TASKS,
            "TRAINQ_HOST_NAME": f"{name}-box", "BENCH_HOST_NO": str(number), "SCHEDULING": mode}


# ------------------------------------------------------------------------------------------ 1. latency


def plain_rq_entry(s: Stack, samples: int, warmup: int) -> list[float]:
    """The floor under the same load: a plain ``rq worker`` (defaults), enqueue -> a function entered in its horse
    (``bench.plain_job.stamp``), one at a time."""
    from rq import Queue

    from bench.orphan_detection import start_plain_worker

    start_plain_worker(s, "plain-latency")
    rq_queue = Queue("plain", connection=redis_connection.get())
    out = []
    for i in range(warmup + samples):
        sent = time.time()
        job = rq_queue.enqueue("bench.plain_job.stamp")
        wait_for(lambda job=job: job.get_status(refresh=True) == "finished", 60, "the plain RQ job", interval=0.005)
        if i >= warmup:
            out.append(job.return_value() - sent)
    return out


def latency(s: Stack, samples: int, handoffs: int, warmup: int) -> dict[str, Any]:
    since = len(s.processes)
    port = free_port()
    s.gunicorn(port)
    base = f"http://127.0.0.1:{port}"
    s.flask("reconciler", name="reconciler-latency")
    s.worker("lat", **agent_env("lat", 0, "backfill", 4, 5))
    load_start = os.getloadavg()
    entry, answered, to_started = [], [], []
    for i in range(warmup + samples):
        job_id, sent = submit(base, f"lat-entry-{i}", 0.0, 1)
        answer = time.time()
        metrics = wait_ended([job_id], 60)[job_id].metrics
        started = db.session.scalar(text("SELECT extract(epoch FROM started_at) FROM training_jobs WHERE id = :i"),
                                    {"i": job_id})
        db.session.commit()
        if i >= warmup:
            entry.append(metrics["entered_at"] - sent)
            answered.append(answer - sent)
            to_started.append(float(started) - sent)
    handoff, overlapped = [], 0
    for i in range(warmup + handoffs):
        blocker, _ = submit(base, f"lat-blocker-{i}", 0.6, 4)
        wait_running(blocker)
        waiter, _ = submit(base, f"lat-waiter-{i}", 0.0, 1)
        done = wait_ended([blocker, waiter], 60)
        left, entered = done[blocker].metrics["left_at"], done[waiter].metrics["entered_at"]
        if entered < left:
            overlapped += 1  # it did not wait: the sample says nothing
        elif i >= warmup:
            handoff.append(entered - left)
    plain = plain_rq_entry(s, samples, warmup)
    load_end = os.getloadavg()
    stop(s, since, [])
    result = {"plain_rq_enqueue_to_entered_s": plain, "submit_to_entered_s": entry, "post_answered_s": answered,
              "submit_to_row_running_s": to_started,
              "handoff_s": handoff,
              "handoff_not_waiting": overlapped, "warmup": warmup,
              "summary": {"submit_to_entered": percentiles(entry), "post_answered": percentiles(answered),
                          "submit_to_row_running": percentiles(to_started),
                          "plain_rq_enqueue_to_entered": percentiles(plain),
                          "handoff": percentiles(handoff) if handoff else None},
              "load_average": {"start": load_start, "end": load_end}}
    e, h = result["summary"]["submit_to_entered"], result["summary"]["handoff"]
    print(f"submit -> POST answered p50 {result['summary']['post_answered']['p50'] * 1000:.0f} ms, -> row running "
          f"p50 {result['summary']['submit_to_row_running']['p50'] * 1000:.0f} ms")
    print(f"plain RQ, enqueue -> function entered: p50 "
          f"{result['summary']['plain_rq_enqueue_to_entered']['p50'] * 1000:.0f} ms")
    print(f"submit -> entered: p50 {e['p50'] * 1000:.0f} ms, p99 {e['p99'] * 1000:.0f} ms; job ends -> next entered: "
          f"p50 {h['p50'] * 1000:.0f} ms" if h else "no hand-over sample")
    return result


# ------------------------------------------------------------------------------------------ 2. utilisation


def job_mix(count: int, seed: int, scale: float) -> list[tuple[int, float]]:
    rng = random.Random(seed)
    sizes, weights = zip(*MIX, strict=True)
    return [(rng.choices(sizes, weights)[0], round(rng.uniform(1.0, 10.0) * scale, 3)) for _ in range(count)]


def analyse(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """Makespan, its lower bound, and the GPU-seconds idle while a job that fitted waited (see the module's doc)."""
    total_gpus = HOSTS * GPUS_PER_HOST
    asked = sum(j["gpus"] * j["seconds"] for j in jobs)
    lower = max(asked / total_gpus, max(j["seconds"] for j in jobs))
    start, end = min(j["sent"] for j in jobs), max(j["left"] for j in jobs)
    times = sorted({t for j in jobs for t in (j["sent"], j["entered"], j["left"])})
    idle_fit, short, long_ = 0.0, 0.0, 0.0
    stretch = [0.0] * HOSTS  # idle-while-fitting GPU-seconds of the stretch going on, per host
    stretch_len = [0.0] * HOSTS
    double_booked = 0
    for t0, t1 in zip(times, times[1:], strict=False):
        mid, dt = (t0 + t1) / 2, t1 - t0
        busy = [0] * HOSTS
        masks = [0] * HOSTS
        for j in jobs:
            if j["entered"] <= mid < j["left"]:
                busy[j["host"]] += j["gpus"]
                if masks[j["host"]] & j["mask"]:
                    double_booked += 1
                masks[j["host"]] |= j["mask"]
        waiting = [j["gpus"] for j in jobs if j["sent"] <= mid < j["entered"]]
        smallest = min(waiting, default=None)
        for h in range(HOSTS):
            idle = GPUS_PER_HOST - busy[h]
            if smallest is not None and 0 < idle and smallest <= idle:
                idle_fit += idle * dt
                stretch[h] += idle * dt
                stretch_len[h] += dt
            elif stretch_len[h]:
                short, long_ = (short + stretch[h], long_) if stretch_len[h] <= SHORT_STRETCH_S else (
                    short, long_ + stretch[h])
                stretch[h], stretch_len[h] = 0.0, 0.0
    for h in range(HOSTS):
        short, long_ = (short + stretch[h], long_) if stretch_len[h] <= SHORT_STRETCH_S else (short, long_ + stretch[h])
    ran = sum(j["gpus"] * (j["left"] - j["entered"]) for j in jobs)
    waits = [j["entered"] - j["sent"] for j in jobs]
    return {"jobs": len(jobs), "gpu_seconds_asked": asked, "lower_bound_s": lower, "makespan_s": end - start,
            "makespan_over_lower_bound": (end - start) / lower, "utilisation": ran / (total_gpus * (end - start)),
            "idle_gpu_s_while_a_job_fitted": idle_fit, "of_which_in_stretches_le_1s": short,
            "of_which_in_longer_stretches": long_, "intervals_with_a_gpu_running_two_jobs": double_booked,
            "wait_s": {"p50": statistics.median(waits), "max": max(waits),
                       **{f"p50_{g}_gpus": statistics.median([j["entered"] - j["sent"] for j in jobs if j["gpus"] == g])
                          for g, _ in MIX if any(j["gpus"] == g for j in jobs)}}}


def utilisation(s: Stack, mode: str, mix: list[tuple[int, float]], netns_host: Any) -> dict[str, Any]:
    since = len(s.processes)
    port = free_port()
    s.gunicorn(port, SCHEDULING=mode)
    base = f"http://127.0.0.1:{port}"
    s.flask("reconciler", name=f"reconciler-{mode}", SCHEDULING=mode)
    far = []
    for number in range(HOSTS):
        name = f"{mode}-{number}"
        env = agent_env(name, number, mode, GPUS_PER_HOST, SLOTS)
        if netns_host is not None and number == HOSTS - 1:  # its host name is its own (unshare --uts)
            env.pop("TRAINQ_HOST_NAME")
            far.append(netns_host.start_worker({**s.env, **env}, name, s.workdir, redis_connection.get()))
        else:
            s.worker(name, **env)
    load_start = os.getloadavg()
    sent: dict[str, float] = {}
    ids = []
    for seq, (gpus, seconds) in enumerate(mix):
        job_id, at = submit(base, f"{mode}-job-{seq:04d}", seconds, gpus)
        ids.append(job_id)
        sent[job_id] = at
    submitted = time.time() - min(sent.values())
    done = wait_ended(ids, 60 + sum(g * d for g, d in mix) * 2)
    load_end = os.getloadavg()
    stop(s, since, far)
    jobs = [{"gpus": gpus, "seconds": seconds, "sent": sent[job_id], "entered": done[job_id].metrics["entered_at"],
             "left": done[job_id].metrics["left_at"], "host": int(done[job_id].metrics["host_no"]),
             "mask": int(done[job_id].metrics["gpu_mask"])} for job_id, (gpus, seconds) in zip(ids, mix, strict=True)]
    result = analyse(jobs)
    result.update(mode=mode, submit_burst_s=submitted, load_average={"start": load_start, "end": load_end},
                  jobs_timeline=jobs)
    r = result
    print(f"{mode}: makespan {r['makespan_s']:.1f} s = {r['makespan_over_lower_bound']:.3f} x the lower bound "
          f"{r['lower_bound_s']:.1f} s; idle GPU-s while a job fitted {r['idle_gpu_s_while_a_job_fitted']:.1f} "
          f"({r['of_which_in_longer_stretches']:.1f} in stretches > 1 s); utilisation {r['utilisation']:.3f}")
    return result


def main() -> None:
    from tests import netns

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=50, help="submit -> entered samples")
    parser.add_argument("--handoffs", type=int, default=30, help="job ends -> next entered samples")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--scale", type=float, default=1.0, help="job durations are 1-10 s times this")
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("--modes", default="backfill,fifo", help="empty: no utilisation run")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--result", default="scheduler",
                        help="the results file's name in bench/results (another keeps scheduler.json as it is)")
    args = parser.parse_args()
    no_netns = netns.unavailable()
    host = None if no_netns else netns.Host.create()
    load_before = os.getloadavg()
    result: dict[str, Any] = {}
    try:
        listen = {"also_listen": (host.host_ip,), "clients": (f"{host.ip}/32",)} if host else {}
        with stack(**listen) as s, s.app.app_context():
            if not args.skip_latency:
                result["latency"] = latency(s, args.samples, args.handoffs, args.warmup)
            mix = job_mix(args.jobs, args.seed, args.scale)
            result["utilisation"] = {mode: utilisation(s, mode, mix, host) for mode in args.modes.split(",") if mode}
    finally:
        if host:
            host.remove()
    write_result(args.result, {
        "description": "The scheduler: POST -> task entered on an idle fake GPU, a job's end -> the next waiting "
                       "job's task entered on its devices; a seeded mix of 1/2/4-GPU sleeping jobs on 3 agents x 4 "
                       "fake GPUs, backfill (the default) vs plain FIFO, on the same servers in the same run",
        "params": {**vars(args), "hosts": HOSTS, "gpus_per_host": GPUS_PER_HOST, "mix": MIX},
        "other_host": "the third agent in a network namespace (own pids, host name), over a veth pair" if host
                      else f"all agents on this host: {no_netns}",
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "targets": {"submit_to_entered_p50_s": 0.1, "submit_to_entered_p99_s": 0.25, "handoff_p50_s": 0.1,
                    "makespan_over_lower_bound": 1.15, "idle_gpu_s_while_a_job_fitted": 0},
        **result,
    })


if __name__ == "__main__":
    main()
