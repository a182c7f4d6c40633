"""Cancel latency: DELETE /api/training/<id> on running jobs, through gunicorn (2 workers).

Per cancel: time until the HTTP answer, until the horse and all its children (a DataLoader worker) are
gone, and until the row says ``cancelled``, each from the moment the request is sent.
"""

from __future__ import annotations

import argparse
import threading
import time

import psutil
import psycopg2

from api.dev.servers import free_port
from bench.harness import http, percentiles, process_gone, stack, wait_for, write_result

JOB = {"dataset": "digits", "epochs": 100_000, "hidden_sizes": [32], "batch_size": 16, "num_workers": 1}


def one_cancel(base: str, db_url: str) -> dict[str, float]:
    status, body = http("POST", f"{base}/api/training", {"name": "cancel-me", "config": JOB})
    assert status == 201, body
    job_id = body["job"]["id"]
    job = wait_for(lambda: (j := http("GET", f"{base}/api/training/{job_id}")[1])["step"] > 0 and j, 60, "training")
    horse = psutil.Process(job["worker_pid"])
    pids = [horse.pid] + [c.pid for c in wait_for(lambda: horse.children(recursive=True), 30, "loader worker")]

    conn = psycopg2.connect(db_url)
    conn.autocommit = True
    marks: dict[str, float] = {}

    def cancelled_row() -> None:
        with conn.cursor() as cur:
            while "row" not in marks:
                cur.execute("SELECT status FROM training_jobs WHERE id = %s", (job_id,))
                if cur.fetchone()[0] == "cancelled":
                    marks["row"] = time.perf_counter()

    def delete() -> None:
        code, answer = http("DELETE", f"{base}/api/training/{job_id}")
        marks["http"] = time.perf_counter()
        assert code == 200 and answer["job"]["status"] == "cancelled", answer

    watcher, caller = threading.Thread(target=cancelled_row), threading.Thread(target=delete)
    start = time.perf_counter()
    caller.start()
    watcher.start()
    wait_for(lambda: all(process_gone(p) for p in pids), 10, "horse and children gone", interval=0.0005)
    marks["gone"] = time.perf_counter()
    caller.join(10)
    watcher.join(10)
    conn.close()
    return {k: v - start for k, v in marks.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cancels", type=int, default=50)
    args = parser.parse_args()
    samples: dict[str, list[float]] = {"http": [], "gone": [], "row": []}
    with stack() as s:
        port = free_port()
        s.gunicorn(port)
        s.worker("bench-worker")
        for i in range(args.cancels):
            for key, value in one_cancel(f"http://127.0.0.1:{port}", s.env["DATABASE_URL"]).items():
                samples[key].append(value)
            print(f"cancel {i + 1}/{args.cancels}: " + ", ".join(f"{k} {v[-1] * 1000:.1f} ms"
                                                                  for k, v in samples.items()))
    write_result("cancel_latency", {
        "description": "DELETE of a running job (with one DataLoader worker) through gunicorn -w 2; seconds "
                       "from sending the request",
        "targets": {"gone_p50_s": "<= 0.050", "gone_p99_s": "<= 0.250"},
        "samples_s": samples,
        "summary": {key: percentiles(values) for key, values in samples.items()},
    })


if __name__ == "__main__":
    main()
