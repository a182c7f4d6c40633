"""Reconcile pass: one batched ``cleanup_orphaned_training_jobs()`` vs the naive one-fetch-per-row pass.

1k, 10k and 100k rows, 10 % non-terminal, each with its real RQ job queued in Redis (so every row
agrees and the pass only reads). Both passes see the same data in the same run, alternating.
"""

from __future__ import annotations

import argparse
import time

from flask import current_app
from rq.exceptions import NoSuchJobError
from sqlalchemy import text

from api import queue as rq_glue
from api.queue import RQState
from api.record.status import utcnow
from api.service.reconcile import Policy, active_rows, cleanup_orphaned_training_jobs, decide
from api.stores import db, redis_connection
from bench.harness import percentiles, stack, write_result

SIZES = (1_000, 10_000, 100_000)


def load(n_rows: int) -> int:
    """``n_rows`` rows, every tenth queued; a real RQ job for each queued one."""
    db.session.execute(text("TRUNCATE training_jobs CASCADE"))
    db.session.execute(text("""
        INSERT INTO training_jobs (id, name, owner_id, status, task, params, epoch, step, attempts, max_attempts,
                                   created_at, updated_at, queued_at, rq_job_id)
        SELECT u.id, 'bench-' || u.i, (SELECT min(id) FROM users WHERE is_admin),
               CASE WHEN u.i % 10 = 0 THEN 'queued' ELSE 'completed' END, 'mlp', '{}'::jsonb,
               0, 0, 1, 1, now() - make_interval(secs => u.i), now(), now(), u.id::text
        FROM (SELECT gen_random_uuid() AS id, i FROM generate_series(1, :n) AS i) AS u
    """), {"n": n_rows})
    db.session.commit()
    ids = [str(i) for i in db.session.scalars(text("SELECT id FROM training_jobs WHERE status = 'queued'"))]
    db.session.commit()
    conn = redis_connection.get()
    conn.flushdb()
    q = rq_glue.get_queue("mlp")
    for start in range(0, len(ids), 1000):
        with conn.pipeline() as pipe:
            for job_id in ids[start:start + 1000]:
                q.enqueue_call(rq_glue.JOB_FUNCTION, args=(job_id, 1), job_id=job_id, pipeline=pipe)
            pipe.execute()
    return len(ids)


def naive_pass() -> int:
    """What reconciliation looks like without batching: one RQ fetch (a round trip) per row."""
    conn = redis_connection.get()
    policy = Policy.from_config(current_app.config)
    acted = 0
    for row in active_rows(utcnow()):
        try:
            job = rq_glue.fetch(row.rq_job_id, conn)
            state = RQState(job.get_status(refresh=False), worker_name=job.worker_name)
        except NoSuchJobError:
            state = RQState(None)
        acted += decide(row, state, policy) is not None
    return acted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    args = parser.parse_args()
    results = []
    with stack() as s, s.app.app_context():
        for n_rows in args.sizes:
            active = load(n_rows)
            cleanup_orphaned_training_jobs(dry_run=True)  # warm-up for both: caches, compiled statements
            naive_pass()
            batch, naive = [], []
            for _ in range(args.repeats):  # alternate, so drift on a shared machine hits both alike
                t = time.perf_counter()
                report = cleanup_orphaned_training_jobs(dry_run=True)
                batch.append(time.perf_counter() - t)
                assert report.checked == active and not report.actions, report.to_dict()
                t = time.perf_counter()
                assert naive_pass() == 0
                naive.append(time.perf_counter() - t)
            ratios = [n / b for n, b in zip(naive, batch, strict=True)]
            row = {"rows": n_rows, "active_rows": active, "batch_s": batch, "naive_s": naive,
                   "batch": percentiles(batch), "naive": percentiles(naive), "speedup": percentiles(ratios)}
            results.append(row)
            print(f"{n_rows:>7} rows ({active} active): batch p50 {row['batch']['p50'] * 1000:.1f} ms, "
                  f"naive p50 {row['naive']['p50'] * 1000:.1f} ms, speedup p50 {row['speedup']['p50']:.1f}x")
    write_result("reconcile_pass", {
        "description": "one cleanup_orphaned_training_jobs() pass (dry run, every row agrees) vs one RQ fetch "
                       "per row; same data, same run, alternating",
        "targets": {"speedup_at_10k": ">= 20x", "batch_at_10k_active_s": "<= 0.5"},
        "results": results,
    })


if __name__ == "__main__":
    main()
