"""A worker opens its next horse's spare database connections (api/worker/spares.py) while a job runs, once it has
run ``SPARES_AFTER``: not after the job, where the next job (with one slot, the next trial of a sweep) would wait
for them."""

from __future__ import annotations

from urllib.parse import urlsplit

import psutil
from sqlalchemy import text

from api.stores import db
from tests.support import LONG, row, submit, wait_for, wait_training


def _spares_of(pid: int, pg_port: int) -> int:
    """Sessions the process holds that never ran a statement: its spares (its pool's have run one)."""
    ports = [c.laddr.port for c in psutil.Process(pid).net_connections(kind="tcp")
             if c.raddr and c.raddr.port == pg_port]
    count = db.session.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE client_port = ANY(:ports) "
                                   "AND query = ''"), {"ports": ports}) if ports else 0
    db.session.rollback()
    return count


def test_a_running_jobs_worker_opens_the_next_horses_spares(client, workers, settings):
    worker = workers()
    pg_port = urlsplit(settings["DATABASE_URL"]).port
    job_id = submit(client, LONG)
    wait_training(job_id)
    wait_for(lambda: _spares_of(worker.process.pid, pg_port) == 2, 60, "the worker's two spares while the job runs")
    assert row(job_id).status == "running"  # the job still runs: they were opened meanwhile, not after it
    assert client.delete(f"/api/training/{job_id}").status_code == 200
