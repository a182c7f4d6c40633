"""API: ``GET /api/training?limit=50`` latency and submit throughput with 100k rows in the table, served by
gunicorn with 2 sync workers, the load coming from a second process on loopback; then the list's filters (#14):
name substrings (rare, common, none), a date window, owner, combinations, and sorting by a final metric, each
measured the same way (the completed rows get random ``val_loss`` / ``val_accuracy`` metrics first)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import timedelta
from urllib.parse import quote

from sqlalchemy import text

import trainq
from api.dev.servers import free_port
from api.service import catalogue
from api.stores import db
from bench.harness import REPO, percentiles, stack, write_result
from bench.reconcile_pass import load

# the filtered lists measured, each a path the monitor or the CLI would ask for (row i is named bench-i and was
# created i seconds ago; every tenth row is queued, the rest completed)
FILTERS = {
    "name, rare (11 matches)": "/api/training?limit=50&name=bench-4242",
    "name, common": "/api/training?limit=50&name=bench-9",
    "name, no match": "/api/training?limit=50&name=resnet",
    "since/until, a one-hour window a day back": "/api/training?limit=50&since={day_ago}&until={day_ago_plus_1h}",
    "owner": "/api/training?limit=50&owner=bench",
    "task + status + name": "/api/training?limit=50&task=mlp&status=completed&name=bench-1",
    "sort by val_loss (lowest first)": "/api/training?limit=50&sort=val_loss",
    "sort by -val_accuracy, completed": "/api/training?limit=50&status=completed&sort=-val_accuracy",
    "name + sort by val_loss": "/api/training?limit=50&name=bench-7&sort=val_loss",
}


def client(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.api_client", *args], cwd=REPO, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--submit-seconds", type=float, default=10.0)
    parser.add_argument("--submit-threads", type=int, default=4)
    parser.add_argument("--filter-requests", type=int, default=500, help="requests per filtered list")
    args = parser.parse_args()
    with stack() as s:
        with s.app.app_context():
            load(args.rows)
            db.session.execute(text("UPDATE training_jobs SET metrics = jsonb_build_object('val_loss', random(), "
                                    "'val_accuracy', random()) WHERE status = 'completed'"))
            db.session.commit()
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("VACUUM ANALYZE training_jobs, job_metric_values"))
            newest = db.session.scalar(text("SELECT max(created_at) FROM training_jobs"))
            db.session.commit()
            # what a worker would publish, without a worker (one would take the queued rows): the submits need it
            catalogue.publish("bench-offers", [task.spec() for task in trainq.load_task_modules().tasks.values()])
        port = free_port()
        s.gunicorn(port, workers=2)
        url = f"http://127.0.0.1:{port}"
        client("list", url, "50")  # warm-up
        listing = client("list", url, str(args.requests))
        day_ago = newest - timedelta(days=1)
        window = {"day_ago": quote(day_ago.isoformat()), "day_ago_plus_1h": quote((day_ago + timedelta(hours=1))
                                                                                   .isoformat())}
        filtered = {}
        for label, path in FILTERS.items():
            path = path.format(**window)
            client("get", url, path, "20")  # warm-up
            samples = client("get", url, path, str(args.filter_requests))["samples_s"]
            filtered[label] = {"path": path, "samples_s": samples, "summary": percentiles(samples)}
            print(f"{label}: p50 {filtered[label]['summary']['p50'] * 1000:.2f} ms, "
                  f"p99 {filtered[label]['summary']['p99'] * 1000:.2f} ms")
        submit = client("submit", url, str(args.submit_seconds), str(args.submit_threads))
        load_avg = os.getloadavg()
    summary = percentiles(listing["samples_s"])
    print(f"list p50 {summary['p50'] * 1000:.2f} ms, p99 {summary['p99'] * 1000:.2f} ms; "
          f"submit {submit['jobs_per_s']:.0f} jobs/s ({submit['errors']} errors); load average {load_avg}")
    write_result("api_latency", {
        "description": f"gunicorn -w 2 (sync), {args.rows} rows; sequential GET /api/training?limit=50 from a second "
                       f"process; {args.submit_threads} threads POSTing for {args.submit_seconds} s",
        "targets": {"list_p99_s": "<= 0.020"},
        "rows": args.rows,
        "list": {"samples_s": listing["samples_s"], "summary": summary},
        "filters": filtered,
        "submit": submit,
        "load_average_at_end": load_avg,
    })


if __name__ == "__main__":
    main()
