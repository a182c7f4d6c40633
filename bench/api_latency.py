"""API: ``GET /api/training?limit=50`` latency and submit throughput with 100k rows in the table, served by
gunicorn with 2 sync workers, the load coming from a second process on loopback."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from api.local import free_port
from bench.harness import REPO, percentiles, stack, write_result
from bench.reconcile_pass import load


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
    args = parser.parse_args()
    with stack() as s:
        with s.app.app_context():
            load(args.rows)
        port = free_port()
        s.gunicorn(port, workers=2)
        url = f"http://127.0.0.1:{port}"
        client("list", url, "50")  # warm-up
        listing = client("list", url, str(args.requests))
        submit = client("submit", url, str(args.submit_seconds), str(args.submit_threads))
    summary = percentiles(listing["samples_s"])
    print(f"list p50 {summary['p50'] * 1000:.2f} ms, p99 {summary['p99'] * 1000:.2f} ms; "
          f"submit {submit['jobs_per_s']:.0f} jobs/s ({submit['errors']} errors)")
    write_result("api_latency", {
        "description": f"gunicorn -w 2 (sync), {args.rows} rows; sequential GET /api/training?limit=50 from a second "
                       f"process; {args.submit_threads} threads POSTing for {args.submit_seconds} s",
        "targets": {"list_p99_s": "<= 0.020"},
        "rows": args.rows,
        "list": {"samples_s": listing["samples_s"], "summary": summary},
        "submit": submit,
    })


if __name__ == "__main__":
    main()
