"""A worker's stand-by horse (api/worker/standby.py): forked while the worker waits, ready with its own database
connections, it becomes the next job's horse; one that died is replaced by a horse forked for the job; it never
outlives its worker."""

from __future__ import annotations

import os
import signal

import psutil
from sqlalchemy.engine import make_url

from api.worker import standby
from tests.support import process_gone, row, submit, wait_for, wait_status

SAMPLE = {"TRAINQ_TASKS": "tests.task_modules.sample"}
QUICK = {"steps": 3, "sleep": 0.01, "checkpoint": False}


def standby_of(worker_pid: int) -> psutil.Process:
    return wait_for(lambda: next((c for c in psutil.Process(worker_pid).children() if c.name() == standby.NAME),
                                 None), 60, "the worker's stand-by")


def own_postgres_connections(process: psutil.Process, port: int) -> int:
    """Connections to PostgreSQL the process opened itself (not its worker's sockets, inherited at the fork)."""
    inherited = {c.laddr for c in psutil.Process(process.ppid()).net_connections(kind="tcp")}
    return sum(1 for c in process.net_connections(kind="tcp")
               if c.raddr and c.raddr.port == port and c.laddr not in inherited)


def test_the_job_runs_in_the_stand_by_with_the_connections_it_opened_while_idle(client, workers, settings):
    worker = workers(**SAMPLE)
    waiting = standby_of(worker.process.pid)
    port = make_url(settings["DATABASE_URL"]).port
    # ready before any job: its pool holds the attempt's lease session's and db.session's connections
    wait_for(lambda: own_postgres_connections(waiting, port) == 2, 30, "the stand-by's two database connections")
    job_id = submit(client, QUICK, task="test-loop")
    job = wait_status(job_id, "completed")
    assert job.worker_pid == waiting.pid  # the stand-by was the horse: no fork for this job
    # the worker has its next one ready, a new process
    following = standby_of(worker.process.pid)
    assert following.pid != waiting.pid and process_gone(waiting.pid)


def test_a_stand_by_that_died_is_replaced_by_a_horse_forked_for_the_job(client, workers):
    worker = workers(**SAMPLE)
    dead = standby_of(worker.process.pid)
    os.kill(dead.pid, signal.SIGKILL)  # the worker blocks on Redis: it finds out only when a job comes
    wait_for(lambda: process_gone(dead.pid), 30, "the stand-by to die")
    job_id = submit(client, QUICK, task="test-loop")
    job = wait_status(job_id, "completed")
    assert job.worker_pid not in (None, dead.pid) and job.attempts == 1
    assert "terminated unexpectedly" not in (row(job_id).status_reason or "")


def test_the_stand_by_never_outlives_its_worker(workers):
    stopped, killed = workers(**SAMPLE), workers(**SAMPLE)
    stopped_standby, killed_standby = standby_of(stopped.process.pid), standby_of(killed.process.pid)
    stopped.process.send_signal(signal.SIGTERM)  # RQ's warm shutdown: the worker closes its stand-by
    assert stopped.process.wait(60) == 0
    assert process_gone(stopped_standby.pid)
    killed.process.kill()  # SIGKILL: the kernel ends the stand-by (PR_SET_PDEATHSIG)
    killed.process.wait(30)
    wait_for(lambda: process_gone(killed_standby.pid), 10, "the stand-by to die with its worker")
