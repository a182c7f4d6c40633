"""The load generator for bench.api_latency, run as its own process: ``list URL N`` or ``submit URL SECONDS
THREADS``. Prints JSON."""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from urllib.parse import urlsplit


def _connection(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)


def list_latency(url: str, n: int) -> dict:
    samples = []
    for _ in range(n):
        conn = _connection(url)  # gunicorn's sync workers close after each response
        start = time.perf_counter()
        conn.request("GET", "/api/training?limit=50")
        response = conn.getresponse()
        body = response.read()
        samples.append(time.perf_counter() - start)
        assert response.status == 200 and len(json.loads(body)["jobs"]) == 50
        conn.close()
    return {"samples_s": samples}


def submit_throughput(url: str, seconds: float, threads: int) -> dict:
    counts, errors = [0] * threads, [0] * threads
    deadline = time.perf_counter() + seconds
    payload = json.dumps({"name": "load", "config": {"epochs": 1}})

    def run(i: int) -> None:
        while time.perf_counter() < deadline:
            conn = _connection(url)
            conn.request("POST", "/api/training", payload, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            conn.close()
            if response.status == 201:
                counts[i] += 1
            else:
                errors[i] += 1

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    return {"submitted": sum(counts), "errors": sum(errors), "seconds": elapsed, "threads": threads,
            "jobs_per_s": sum(counts) / elapsed}


if __name__ == "__main__":
    mode, url = sys.argv[1], sys.argv[2]
    if mode == "list":
        print(json.dumps(list_latency(url, int(sys.argv[3]))))
    else:
        print(json.dumps(submit_throughput(url, float(sys.argv[3]), int(sys.argv[4]))))
