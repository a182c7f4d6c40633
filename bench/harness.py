"""What every benchmark needs: real servers on free ports, the app, worker/reconciler/API processes,
machine facts, statistics, and writing results."""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from api.dev.servers import wait_for  # noqa: F401 - the benchmarks' deadline waits
from api.queue import pid_alive

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
TOKEN_ENV = "TRAINQ_TOKEN"
"""The bench admin's API token: ``stack()`` makes it and puts it here (and in the environment, for the load
generator's process); ``http`` and ``bench.api_client`` send it, so no benchmark script handles tokens."""


def process_gone(pid: int) -> bool:
    return not pid_alive(pid)


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pct(p: float) -> float:
        k = (len(ordered) - 1) * p
        lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)

    return {"n": len(ordered), "min": ordered[0], "p50": pct(0.5), "p95": pct(0.95), "p99": pct(0.99),
            "max": ordered[-1], "mean": statistics.fmean(ordered)}


def machine() -> dict[str, Any]:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem, 1), "python": platform.python_version(),
            "platform": platform.platform()}


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"benchmark": name, "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
               **data}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path.relative_to(REPO)}")
    return path


@dataclass
class Stack:
    """Real Redis and PostgreSQL, a migrated app, and the processes a benchmark starts."""

    env: dict[str, str]
    app: Any
    workdir: Path
    processes: list[subprocess.Popen] = field(default_factory=list)

    def flask(self, *command: str, name: str, **env: str) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen([sys.executable, "-m", "flask", "--app", "api", *command],
                                   env={**os.environ, **self.env, **env}, cwd=REPO, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        return process

    def worker(self, name: str, **env: str) -> subprocess.Popen:
        from rq.worker import Worker

        from api.stores import redis_connection

        process = self.flask("worker", "--name", name, name=name, **env)
        with self.app.app_context():
            conn = redis_connection.get()
            prefix = Worker.redis_worker_namespace_prefix  # one worker, or an agent's pool (<name>-0, ...)
            wait_for(lambda: conn.exists(f"{prefix}{name}") or conn.exists(f"{prefix}{name}-0"), 60, f"worker {name}")
        return process

    def gunicorn(self, port: int, workers: int = 2, **env: str) -> subprocess.Popen:
        log = open(self.workdir / "gunicorn.log", "ab")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-w", str(workers), "-b", f"127.0.0.1:{port}", "api.wsgi:app"],
            env={**os.environ, **self.env, "LOG_LEVEL": "WARNING", **env}, cwd=REPO, stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)

        def up() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1):
                    return True
            except OSError:
                return False

        wait_for(up, 60, "gunicorn")
        return process


@contextmanager
def stack(also_listen: tuple[str, ...] = (), clients: tuple[str, ...] = (), **settings: str) -> Iterator[Stack]:
    """Start Redis + PostgreSQL in a temp dir, migrate, yield; kill everything afterwards. ``also_listen`` and
    ``clients``: the servers also listen there and admit those (a network namespace's worker, tests/netns.py)."""
    import flask_migrate

    from api.app import create_app
    from api.dev.servers import PostgresServer, RedisServer
    from api.service import users
    from api.settings import load as load_settings

    workdir = Path(tempfile.mkdtemp(prefix="trainq-bench-"))
    redis = RedisServer(workdir / "redis", also_listen=also_listen).start()
    postgres = PostgresServer(workdir / "postgres", ephemeral=True, also_listen=also_listen, clients=clients).start()
    env = {"REDIS_URL": redis.url, "DATABASE_URL": postgres.create_database("bench"),
           "CHECKPOINT_DIR": str(workdir / "checkpoints"),
           "ARTIFACT_DIR": str(workdir / "artifacts"), "LOG_LEVEL": "WARNING",
           "MAX_QUEUED_JOBS": str(10**9),  # load tests queue a lot
           **settings}
    app = create_app({**load_settings(env), "RECONCILE_ON_START": False})
    with app.app_context():
        flask_migrate.upgrade()
        admin = users.create_user("bench", admin=True)
        os.environ[TOKEN_ENV] = users.create_token(admin, "bench")[1]
    s = Stack(env, app, workdir)
    try:
        yield s
    finally:
        for process in s.processes:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except OSError:
                    pass
        redis.stop()
        postgres.remove()


def auth_headers() -> dict[str, str]:
    """The bench admin's ``Authorization`` header (empty outside a ``stack()``)."""
    token = os.environ.get(TOKEN_ENV)
    return {"Authorization": f"Bearer {token}"} if token else {}


def login_url(base: str) -> str:
    """The monitor's login link for the bench admin (what ``make run`` prints): a browser opening it is logged in."""
    return f"{base}/login#token={os.environ[TOKEN_ENV]}"


def http(method: str, url: str, body: dict | None = None, timeout: float = 30) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {**auth_headers(), **({"Content-Type": "application/json"} if data else {})}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
