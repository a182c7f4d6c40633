"""The load generator for bench.api_latency and bench.monitor_pages, run as its own process: ``list URL N``,
``get URL PATH N [conditional]`` or ``submit URL SECONDS THREADS``. Prints JSON. Every request sends the bench
admin's token (``TRAINQ_TOKEN``, set by ``bench.harness.stack``)."""

from __future__ import annotations

import http.client
import json
import os
import sys
import threading
import time
from urllib.parse import urlsplit

AUTH = {"Authorization": f"Bearer {os.environ['TRAINQ_TOKEN']}"} if os.environ.get("TRAINQ_TOKEN") else {}


def _connection(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)


def get_latency(url: str, path: str, n: int, conditional: bool = False) -> dict:
    """``n`` sequential GETs of ``path``; with ``conditional``, each sends the ETag of a first answer and must
    get a 304 (a poll that finds nothing changed)."""
    etag = None
    if conditional:
        conn = _connection(url)
        conn.request("GET", path, headers=AUTH)
        response = conn.getresponse()
        response.read()
        etag = response.getheader("ETag")
        conn.close()
    samples = []
    for _ in range(n):
        conn = _connection(url)  # gunicorn's sync workers close after each response
        start = time.perf_counter()
        conn.request("GET", path, headers={**AUTH, **({"If-None-Match": etag} if etag else {})})
        response = conn.getresponse()
        body = response.read()
        samples.append(time.perf_counter() - start)
        assert response.status == (304 if etag else 200), (response.status, body[:200])
        conn.close()
    return {"samples_s": samples}


def submit_throughput(url: str, seconds: float, threads: int) -> dict:
    counts, errors = [0] * threads, [0] * threads
    deadline = time.perf_counter() + seconds
    payload = json.dumps({"name": "load", "task": "mlp", "params": {"epochs": 1}})

    def run(i: int) -> None:
        while time.perf_counter() < deadline:
            conn = _connection(url)
            conn.request("POST", "/api/training", payload, {**AUTH, "Content-Type": "application/json"})
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
        print(json.dumps(get_latency(url, "/api/training?limit=50", int(sys.argv[3]))))
    elif mode == "get":  # get URL PATH N [conditional]
        print(json.dumps(get_latency(url, sys.argv[3], int(sys.argv[4]), sys.argv[5:] == ["conditional"])))
    else:
        print(json.dumps(submit_throughput(url, float(sys.argv[3]), int(sys.argv[4]))))
