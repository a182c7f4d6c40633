"""A seeded soak of the scheduler: never double-booked, and every running job on exactly its reservation.

A seeded random sequence of operations (``TRAINQ_SOAK_OPS``, default 2,000; ``TRAINQ_SOAK_SEED``, default a new
one, printed at the start and in every failure) runs against real PostgreSQL and Redis, the real scheduler and
reconciler code, and a cluster of four hosts:

- **one real agent** (``flask worker --fake-gpus 2``, 3 slots: RQ workers forking real work horses) that runs
  ``test-devices``; each horse writes the ``CUDA_VISIBLE_DEVICES`` it was given to a file, and a real
  ``flask reconciler`` process runs beside the test (its LISTEN/NOTIFY wake-ups and periodic passes are one
  more scheduler racing the others);
- **three simulated hosts** (4, 8 and 2 fake GPUs) registered in the database by the test itself exactly as an
  agent registers (``hosts.register``: the host's row, its GPUs, its locks held by a session of the test's),
  offering the same task. Their "work horses" are the test's own: a start takes the RQ job at the head of the
  host's RQ queue, holds an ``AttemptLease`` (the attempt's liveness lock, as a horse does), moves the row to
  running through the status writer, reads the reservation as a horse does (``devices.reserved``) and records the
  ``CUDA_VISIBLE_DEVICES`` the horse would set (``devices.visible_devices``). No process runs for them: that is
  what lets most operations take milliseconds.

The operations: submits through the API (0, 1, 2 or 4 GPUs, 1 or 2 CPUs; each runs a scheduling pass), cancels,
pauses and resumes/force-starts through the API; a simulated job's start and end (its end runs a pass, as a
worker's does; an end with a pause asked writes a checkpoint and pauses); a kill of a simulated horse (its lease's
session ends) or of a real horse (SIGKILL); a kill of a simulated agent with its horses (the host's session ends),
its restart, and a "flap" of a simulated agent's session alone (its horses and queue live on); a kill and
restart of the real agent (twice per 2,000 operations: a restart takes seconds); two scheduling passes started at
the same instant from two threads; and an in-process reconcile pass (which finds the killed attempts lost and
retries or fails them).

After every operation one snapshot of the database is checked: no (host, GPU) is in two reservations; the GPU
holds are exactly the reservations' GPUs; a reservation belongs to its job's current attempt, of a queued or
running row, and a job has at most one; no host has more CPUs or jobs reserved than it has; a running attempt's
reservation never changes; and every live horse (simulated, or real that has reported) whose row is still
running on its attempt runs on the reservation's host with ``CUDA_VISIBLE_DEVICES`` equal to the reservation's.
What this does not exercise: real GPUs (NVML, CUDA), network partitions (tests/e2e/test_partitions.py) and
PostgreSQL or Redis outages (tests/e2e/test_faults.py); the simulated horses' own fencing and heartbeats; the
simulated hosts' side of RQ (their queue is read, their jobs are never marked started in RQ).

It found two races, both fixed in ``api/scheduler/schedule.py``: a cancel committed between a pass's read and its
insert left a reservation to a cancelled row; and a job a worker started while its host's agent had lost its
session lost its reservation after going running.

Time: 2,000 operations took 365 s on the shared 2-core VM at a load average of 8 (a submit through the API, with
its scheduling pass, about 0.3 s of it); fewer with ``TRAINQ_SOAK_OPS``."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, func, text
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

import trainq
from api import queue
from api.record.status import Actor, JobStatus
from api.record.status_writer import transition
from api.scheduler.hosts import HostRefused, Inventory, register
from api.scheduler.schedule import schedule
from api.service import catalogue, reconcile
from api.stores import db, redis_connection
from api.worker import devices
from api.worker.inventory import fake_gpus
from api.worker.liveness import AttemptLease
from tests.support import wait_for

pytestmark = pytest.mark.e2e

OPS = int(os.environ.get("TRAINQ_SOAK_OPS", "2000"))
SEED = int(os.environ.get("TRAINQ_SOAK_SEED") or random.SystemRandom().randrange(10**9))
REAL = "soak-real"
SAMPLE = {"TRAINQ_TASKS": "tests.task_modules.sample"}
BACKFILL_WAIT = "3"  # MAX_BACKFILL_WAIT: short, so the holds for starved jobs come into play too


@dataclass
class SimHorse:
    job_id: str
    attempt: int
    lease: AttemptLease
    visible: str


@dataclass
class SimHost:
    name: str
    gpus: int
    cpus: int
    slots: int
    conn: Connection | None = None
    horses: dict[str, SimHorse] = field(default_factory=dict)

    @property
    def inventory(self) -> Inventory:
        hostname = f"{self.name}.soak"
        return Inventory(name=self.name, hostname=hostname, cpus=self.cpus, memory_mb=64 * 1024, slots=self.slots,
                         gpus=tuple(fake_gpus(self.gpus, hostname)), fake=True)


def end_session(conn: Any) -> None:
    """A database session ends as a dead process's does: closed, never back to a pool."""
    try:
        conn.invalidate()
        conn.close()
    except Exception:  # noqa: BLE001 - ending it is all that matters
        pass


class Soak:
    def __init__(self, app, client, workers, settings, tmp_path: Path) -> None:
        self.app, self.client, self.workers, self.settings = app, client, workers, settings
        self.rng = random.Random(SEED)
        self.engine = create_engine(db.engine.url, poolclass=NullPool)  # the simulated processes'
        self.reports = tmp_path / "seen"
        self.reports.mkdir()
        self.sims = [SimHost("soak-a", 4, 8, 5), SimHost("soak-b", 8, 16, 8), SimHost("soak-c", 2, 4, 3)]
        self.specs = [t.spec() for t in trainq.load_task_modules(SAMPLE).tasks.values() if t.name == "test-devices"]
        self.real = None
        self.real_restarts = 0
        self.running_seen: dict[tuple[str, int], tuple[int, tuple[int, ...]]] = {}
        self.verified_real: set[tuple[str, int]] = set()
        self.counts: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self.step = 0
        self.op = ""

    # ------------------------------------------------------------------ hosts

    def start_real(self) -> None:
        self.real = self.workers(REAL, TRAINQ_FAKE_GPUS="2", TRAINQ_CPUS="4", TRAINQ_SLOTS="3",
                                 MAX_BACKFILL_WAIT=BACKFILL_WAIT, **SAMPLE)

    def sim_up(self, sim: SimHost) -> None:
        def registered() -> bool:
            conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                register(conn, sim.inventory)
            except HostRefused:  # the server has not yet ended the old session (its locks)
                end_session(conn)
                return False
            sim.conn = conn
            return True

        wait_for(registered, 30, f"{sim.name} to register again")
        catalogue.publish(sim.name, self.specs)

    def sim_down(self, sim: SimHost, horses_too: bool) -> None:
        if horses_too:
            for horse in list(sim.horses.values()):
                end_session(horse.lease.conn)
            sim.horses.clear()
        if sim.conn is not None:
            end_session(sim.conn)
            sim.conn = None

    def close(self) -> None:
        for sim in self.sims:
            self.sim_down(sim, horses_too=True)
            catalogue.publish(sim.name, [])  # offers nothing any more: later tests see no trace of it
        self.engine.dispose()

    # ------------------------------------------------------------------ the operations

    def submit(self) -> None:
        gpus = self.rng.choice([0, 1, 1, 1, 2, 2, 4])
        cpus = self.rng.choice([1, 1, 2])
        params = {"seconds": round(self.rng.uniform(0.2, 2.0), 2), "report_dir": str(self.reports)}
        response = self.client.post("/api/training", json={"task": "test-devices", "params": params, "max_attempts": 2,
                                                           "resources": {"gpus": gpus, "cpus": cpus}})
        refused = response.status_code == 422 and response.get_json()["error"]["field"] == "resources.gpus"
        assert response.status_code == 201 or refused, response.get_json()  # refused: the big hosts are down now

    def pick(self, *statuses: str) -> str | None:
        ids = db.session.execute(text("SELECT id FROM training_jobs WHERE status = ANY(:s) ORDER BY created_at"),
                                 {"s": list(statuses)}).scalars().all()
        db.session.commit()
        return str(self.rng.choice(ids)) if ids else None

    def queued(self) -> int:
        count = db.session.scalar(text("SELECT count(*) FROM training_jobs WHERE status = 'queued'"))
        db.session.commit()
        return count

    def cancel(self) -> None:
        if job_id := self.pick("queued", "running"):
            assert self.client.delete(f"/api/training/{job_id}").status_code in (200, 409)

    def pause(self) -> None:
        if job_id := self.pick("running"):
            assert self.client.post(f"/api/training/{job_id}/pause").status_code in (200, 202, 409)

    def resume(self) -> None:
        if job_id := self.pick("paused", "failed", "cancelled"):
            answer = self.client.post(f"/api/training/{job_id}/resume")
            if answer.status_code == 409:  # nothing to resume from: afresh
                answer = self.client.post(f"/api/training/{job_id}/force-start")
            assert answer.status_code in (200, 202, 409, 429), answer.get_json()

    def sim_start(self) -> None:
        sim = self.rng.choice(self.sims)
        if len(sim.horses) >= sim.slots:
            return
        rq_queue = queue.get_queue(queue.host_queue_name(sim.name))
        ids = rq_queue.get_job_ids()
        if not ids:
            return
        rq_queue.remove(ids[0])  # the head of its queue, as an RQ worker of that host dequeues
        try:
            job_id, attempt = queue.fetch(ids[0]).args
        except Exception:  # noqa: BLE001 - deleted meanwhile (a cancel)
            return
        lease = AttemptLease(self.engine, job_id, attempt, takeover_wait=10)
        fields = lease.acquire()
        checkpoint = None
        if self.rng.random() < 0.5:  # half of them have a checkpoint: a lost one is retried from it, not failed
            folder = Path(self.settings["CHECKPOINT_DIR"]) / job_id
            folder.mkdir(exist_ok=True)
            checkpoint = folder / f"ckpt-{attempt:06d}.pt"
            checkpoint.write_bytes(b"")
        started = transition(job_id, JobStatus.RUNNING, reason=f"started by {sim.name}-0 (soak)", actor=Actor.WORKER,
                             expected_from=[JobStatus.QUEUED], attempt=attempt,
                             fields={"worker_name": f"{sim.name}-0", "worker_pid": None, "hostname": f"{sim.name}.soak",
                                     "heartbeat_at": func.now(), "checkpoint_path": str(checkpoint or "") or None,
                                     **fields})
        if not started.changed:
            end_session(lease.conn)
            return
        reservation = devices.reserved(job_id, attempt)
        if reservation is None or reservation.host.name != sim.name:  # as the horse refuses it
            transition(job_id, JobStatus.FAILED, reason="no reservation on this host (soak)", actor=Actor.WORKER,
                       attempt=attempt)
            end_session(lease.conn)
            self.counts["refused unplaced"] = self.counts.get("refused unplaced", 0) + 1
            return
        sim.horses[job_id] = SimHorse(job_id, attempt, lease, devices.visible_devices(reservation))

    def sim_end(self) -> None:
        horses = [(sim, h) for sim in self.sims for h in sim.horses.values()]
        if not horses:
            return
        sim, horse = self.rng.choice(horses)
        paused, _ = queue.pause_request(redis_connection.get().get(queue.control_key(horse.job_id)))
        if paused:
            folder = Path(self.settings["CHECKPOINT_DIR"]) / horse.job_id
            folder.mkdir(exist_ok=True)
            checkpoint = folder / f"ckpt-{horse.attempt:06d}.pt"
            checkpoint.write_bytes(b"")
            transition(horse.job_id, JobStatus.PAUSED, reason="paused (soak)", actor=Actor.WORKER,
                       attempt=horse.attempt,
                       fields={"resume_from": str(checkpoint), "checkpoint_path": str(checkpoint)})
        else:
            transition(horse.job_id, JobStatus.COMPLETED, reason="training finished (soak)", actor=Actor.WORKER,
                       attempt=horse.attempt)
        end_session(horse.lease.conn)
        del sim.horses[horse.job_id]
        schedule()  # what a worker does after each job

    def kill_sim_horse(self) -> None:
        horses = [(sim, h) for sim in self.sims for h in sim.horses.values()]
        if horses:
            sim, horse = self.rng.choice(horses)
            end_session(horse.lease.conn)
            del sim.horses[horse.job_id]

    def kill_real_horse(self) -> None:
        pids = db.session.execute(text(
            "SELECT worker_pid FROM training_jobs WHERE status = 'running' AND worker_name LIKE :w AND hostname = :h"
            " AND worker_pid IS NOT NULL"), {"w": f"{REAL}-%", "h": socket.gethostname()}).scalars().all()
        db.session.commit()
        if pids:
            try:
                os.kill(self.rng.choice(pids), signal.SIGKILL)
            except ProcessLookupError:
                pass

    def kill_sim_agent(self) -> None:
        sim = self.rng.choice(self.sims)
        if sim.conn is not None:
            self.sim_down(sim, horses_too=True)
        else:
            self.sim_up(sim)

    def flap_sim_agent(self) -> None:
        """The agent's database session ends while its workers live on (and may take what its queue holds)."""
        sim = self.rng.choice(self.sims)
        if sim.conn is not None:
            self.sim_down(sim, horses_too=False)
        else:
            self.sim_up(sim)

    def restart_real_agent(self) -> None:
        self.real.kill()  # SIGKILL: its workers and their horses die with it
        self.real_restarts += 1
        self.start_real()

    def race(self) -> None:
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def one() -> None:
            with self.app.app_context():
                try:
                    barrier.wait(10)
                    schedule()
                except BaseException as exc:  # noqa: BLE001 - reported by the test's thread
                    errors.append(exc)
                finally:
                    db.session.remove()

        threads = [threading.Thread(target=one) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors

    def reconcile(self) -> None:
        reconcile.run_pass()

    # ------------------------------------------------------------------ the checks

    VIOLATIONS = text("""
        SELECT 'a GPU in two reservations: host ' || host_id || ', GPU ' || g || ', jobs '
               || string_agg(job_id::text, ' ')
          FROM reservations, unnest(gpus) g GROUP BY host_id, g HAVING count(*) > 1
        UNION ALL
        SELECT 'a GPU hold with no reservation of it: ' || x::text FROM (
          SELECT host_id, gpu, job_id FROM gpu_holds
          EXCEPT SELECT host_id, g, job_id FROM reservations, unnest(gpus) g) x
        UNION ALL
        SELECT 'a reserved GPU with no hold: ' || x::text FROM (
          SELECT host_id, g, job_id FROM reservations, unnest(gpus) g
          EXCEPT SELECT host_id, gpu, job_id FROM gpu_holds) x
        UNION ALL
        SELECT 'a reservation outliving its attempt: ' || r.job_id || ' attempt ' || r.attempt || ', row ' || j.status
               || ' on attempt ' || j.attempts
          FROM reservations r JOIN training_jobs j ON j.id = r.job_id
         WHERE j.status NOT IN ('queued', 'running') OR r.attempt <> j.attempts
        UNION ALL
        SELECT 'a job with two reservations: ' || job_id FROM reservations GROUP BY job_id HAVING count(*) > 1
        UNION ALL
        SELECT 'a host with more reserved than it has: ' || h.name || ' CPUs ' || sum(r.cpus) || '/' || h.cpus
               || ', jobs ' || count(*) || '/' || h.slots
          FROM reservations r JOIN hosts h ON h.id = r.host_id GROUP BY h.id
        HAVING sum(r.cpus) > h.cpus OR count(*) > h.slots""")
    RUNNING = text(
        "SELECT j.id AS job_id, j.attempts AS attempt, h.name AS host, r.gpus, r.host_id FROM training_jobs j"
        " LEFT JOIN reservations r ON r.job_id = j.id AND r.attempt = j.attempts LEFT JOIN hosts h ON h.id = r.host_id"
        " WHERE j.status = 'running'")

    def check(self) -> set[tuple[str, int]]:
        """Check one snapshot of the database; the running attempts in it."""
        where = f"seed {SEED}, step {self.step} ({self.op})"
        with db.engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:  # one snapshot
            violations = conn.execute(self.VIOLATIONS).scalars().all()
            rows = conn.execute(self.RUNNING).all()
            conn.rollback()
        assert not violations, f"{where}: " + "; ".join(violations)
        running_ids = {(str(r.job_id), r.attempt) for r in rows}
        running = {(str(r.job_id), r.attempt): r for r in rows if r.host_id is not None}
        for key, r in running.items():
            kept = self.running_seen.setdefault(key, (r.host_id, tuple(r.gpus)))
            assert kept == (r.host_id, tuple(r.gpus)), f"{where}: running attempt {key} moved from {kept} to {r}"
        for sim in self.sims:
            for job_id, horse in sim.horses.items():
                key = (job_id, horse.attempt)
                if key not in running_ids:
                    continue  # ended meanwhile: the sweep stops it
                r = running.get(key)
                assert r is not None, f"{where}: {sim.name} runs {key} on {horse.visible!r} with no reservation"
                assert (r.host, ",".join(map(str, r.gpus))) == (sim.name, horse.visible), \
                    f"{where}: {sim.name} runs {key} with CUDA_VISIBLE_DEVICES={horse.visible}; reserved: {r}"
        for key in running_ids - self.verified_real:
            path = self.reports / f"{key[0]}-{key[1]}.json"
            if not path.exists():
                continue  # not a real horse's, or its task has not started yet
            seen = json.loads(path.read_text())
            r = running.get(key)
            assert r is not None, f"{where}: {seen} runs with no reservation"
            assert r.host == REAL and queue.any_worker_of(REAL, {seen["worker"]}), f"{where}: {seen} vs {r}"
            assert seen["visible"] == ",".join(map(str, r.gpus)), f"{where}: {seen} vs reservation {r}"
            self.verified_real.add(key)
        return running_ids

    def sweep(self, running_ids: set[tuple[str, int]]) -> None:
        """A simulated horse whose row is no longer running on its attempt stops (its writes would be refused)."""
        for sim in self.sims:
            for job_id, horse in list(sim.horses.items()):
                if (job_id, horse.attempt) not in running_ids:
                    end_session(horse.lease.conn)
                    del sim.horses[job_id]

    def final_check(self) -> None:
        """Every report a real horse wrote names the devices its attempt held while the test saw it running."""
        for path in self.reports.glob("*.json"):
            seen = json.loads(path.read_text())
            kept = self.running_seen.get((seen["job"], seen["attempt"]))
            if kept is not None:
                assert seen["visible"] == ",".join(map(str, kept[1])), f"seed {SEED}: {seen} vs reservation {kept}"

    # ------------------------------------------------------------------ the run

    def run(self, ops: int) -> None:
        weights = {self.submit: 26, self.sim_start: 20, self.sim_end: 14, self.cancel: 7, self.pause: 4,
                   self.resume: 6, self.kill_sim_horse: 3, self.kill_real_horse: 2, self.kill_sim_agent: 2,
                   self.flap_sim_agent: 2, self.race: 9, self.reconcile: 5}
        choices, cumulative = list(weights), list(itertools.accumulate(weights.values()))
        restarts_at = {ops * (i + 1) // 3 for i in range(max(1, ops // 1000))}
        for self.step in range(ops):
            if self.step in restarts_at:
                operation = self.restart_real_agent
            else:
                operation = self.rng.choices(choices, cum_weights=cumulative)[0]
                if operation == self.submit and self.queued() > 60:  # the owner's queued-jobs limit is 100
                    operation = self.sim_start
            self.op = operation.__name__
            self.counts[self.op] = self.counts.get(self.op, 0) + 1
            began = time.monotonic()
            operation()
            db.session.remove()
            middle = time.monotonic()
            self.sweep(self.check())
            self.seconds[self.op] = self.seconds.get(self.op, 0.0) + middle - began
            self.seconds["(checks)"] = self.seconds.get("(checks)", 0.0) + time.monotonic() - middle


def test_never_double_booked_under_a_seeded_soak(app, ctx, client, workers, reconcilers, settings, tmp_path):
    print(f"soak: seed {SEED}, {OPS} operations (TRAINQ_SOAK_SEED={SEED} TRAINQ_SOAK_OPS={OPS} reproduce the "
          "sequence; the real processes' timing is not seeded)")
    saved = app.config["MAX_BACKFILL_WAIT"]
    app.config["MAX_BACKFILL_WAIT"] = float(BACKFILL_WAIT)
    soak = Soak(app, client, workers, settings, tmp_path)
    started = time.monotonic()
    try:
        for sim in soak.sims:
            soak.sim_up(sim)
        soak.start_real()
        reconcilers(MAX_BACKFILL_WAIT=BACKFILL_WAIT)
        soak.run(OPS)
        soak.final_check()
    finally:
        app.config["MAX_BACKFILL_WAIT"] = saved
        soak.close()
    finals = db.session.execute(text("SELECT status, count(*) FROM training_jobs GROUP BY status")).all()
    db.session.commit()
    print(f"soak: {OPS} operations in {time.monotonic() - started:.0f} s: {soak.counts}; real agent restarted "
          f"{soak.real_restarts} times; {len(soak.verified_real)} real attempts' devices checked while running; "
          f"rows: {dict(finals)}; seconds by operation: { {k: round(v, 1) for k, v in soak.seconds.items()} }")
    assert soak.verified_real, f"seed {SEED}: no real horse's devices were checked while it ran"
