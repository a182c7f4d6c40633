"""A job with a long history (issue 21, item 5): what the job page's poll of ``GET /api/training/<id>`` costs
when the job has 100k epochs, as a full answer (the job changed) and as a 304 (nothing changed), and the job
page's first load; gunicorn with 2 sync workers, the load from a second process on loopback."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from sqlalchemy import text

from api.dev.servers import free_port
from api.stores import db
from bench.api_latency import client
from bench.harness import percentiles, stack, write_result
from bench.reconcile_pass import load


def cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies of every CPU so far (/proc/stat): how busy the machine was between two reads."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return fields[3] + fields[4], sum(fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    with stack() as s:
        with s.app.app_context():
            load(1)
            job_id = str(db.session.scalar(text("SELECT id FROM training_jobs")))
            db.session.execute(text(
                "UPDATE training_jobs SET status = 'completed', history = (SELECT jsonb_agg(jsonb_build_object("
                "'epoch', i, 'step', i * 45, 'train_loss', 1.0 / i, 'val_loss', 1.1 / i, 'val_accuracy', "
                "1 - 1.0 / i, 'epoch_seconds', 0.02) ORDER BY i) FROM generate_series(1, :n) AS i) WHERE id = :id"),
                {"n": args.epochs, "id": job_id})
            size, recent = db.session.execute(text("SELECT pg_column_size(history), pg_column_size(history_recent) "
                                                   "FROM training_jobs")).one()
            db.session.commit()
        port = free_port()
        s.gunicorn(port, workers=2)
        url = f"http://127.0.0.1:{port}"
        results = {}
        load_before, cpu_before = os.getloadavg(), cpu_times()
        for label, path, mode in (("poll, full answer", f"/api/training/{job_id}", []),
                                  ("poll, 304", f"/api/training/{job_id}", ["conditional"]),
                                  ("job page", f"/jobs/{job_id}", [])):
            client("get", url, path, "20", *mode)  # warm-up
            samples = client("get", url, path, str(args.requests), *mode)["samples_s"]
            results[label] = {"path": path, "samples_s": samples, "summary": percentiles(samples)}
            print(f"{label}: p50 {results[label]['summary']['p50'] * 1000:.2f} ms, "
                  f"p99 {results[label]['summary']['p99'] * 1000:.2f} ms")
        load_after, cpu_after = os.getloadavg(), cpu_times()
    idle = (cpu_after[0] - cpu_before[0]) / max(1, cpu_after[1] - cpu_before[1])
    print(f"load average (1, 5, 15 min): {load_before} before, {load_after} after; CPUs idle {idle:.0%} meanwhile")
    write_result("history_poll", {
        "description": f"one job with {args.epochs} epochs of history ({size} bytes stored, its last 1,000 apart in "
                       f"{recent} bytes); gunicorn -w 2 (sync); "
                       f"{args.requests} sequential GETs each from a second process",
        "targets": {"poll_full_p99_s": "<= 0.050", "poll_304_p99_s": "<= 0.005"},
        "epochs": args.epochs,
        "results": results,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "cpu_idle_share": idle,  # of all CPUs' time while the requests ran (/proc/stat), this benchmark's included
    })


if __name__ == "__main__":
    main()
