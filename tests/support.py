"""Helpers shared by the tests: waiting on conditions with deadlines, and real worker processes."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil
from flask.testing import FlaskClient
from sqlalchemy.orm import undefer

from api.dev.servers import wait_for  # noqa: F401 - the tests' deadline waits
from api.queue import pid_alive
from api.record.tables import JobEvent, TrainingJob
from api.stores import db

REPO = Path(__file__).resolve().parent.parent

TOKENS: dict[str, str] = {}
"""The test session's tokens by role: ``admin`` is made when the session's app is (tests/conftest.py)."""


class ApiClient(FlaskClient):
    """Flask's test client sending ``Authorization: Bearer <token>``: the session admin's unless ``token`` says
    otherwise; ``token=None`` sends no credentials."""

    def __init__(self, *args: Any, token: Any = ..., **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        token = TOKENS.get("admin") if token is ... else token
        if token:
            self.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"


def bearer(token: str | None = None) -> dict[str, str]:
    """Headers for a real HTTP request (urllib) as ``token``'s user, by default the session admin."""
    return {"Authorization": f"Bearer {token or TOKENS['admin']}"}

SHORT = {"dataset": "digits", "epochs": 3, "hidden_sizes": [32], "batch_size": 64, "checkpoint_every": 1, "seed": 1}
LONG = {"dataset": "digits", "epochs": 100_000, "hidden_sizes": [32], "batch_size": 16}
TERMINAL = ("completed", "failed", "cancelled", "pruned")


def process_gone(pid: int) -> bool:
    """Gone means no such process, or a zombie waiting for a reaper (it runs no code any more)."""
    return not pid_alive(pid)


@dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_flask(env: dict[str, str], name: str, log_dir: Path, *command: str,
                prefix: tuple[str, ...] = ()) -> WorkerProcess:
    """Start ``flask --app api <command>`` as a real process with ``env`` laid over ours (``prefix``: a command
    that runs it, e.g. in a network namespace)."""
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as out:
        process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "flask", "--app", "api", *command],
            env={**os.environ, **env}, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    return WorkerProcess(name, process, log_path)


def start_gunicorn(env: dict[str, str], log_path: Path, *options: str) -> tuple[subprocess.Popen, str]:
    """The app behind gunicorn (2 workers, as in production) on a free port, with ``env`` laid over ours; returns
    the process and its URL once ``/api/health`` answers. The caller terminates it."""
    from api.dev.servers import free_port

    port = free_port()
    with open(log_path, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--workers", "2", *options, "--bind", f"127.0.0.1:{port}",
             "api.wsgi:app"],
            env={**os.environ, **env}, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            return urllib.request.urlopen(f"{url}/api/health", timeout=2).status == 200
        except OSError:
            return False

    wait_for(up, 60, "gunicorn to serve the app")
    return process, url


def start_worker(env: dict[str, str], name: str, log_dir: Path, redis_conn: Any) -> WorkerProcess:
    """Start ``flask --app api worker`` as a real process and wait until RQ lists it."""
    worker = start_flask({"TRAINQ_SLOTS": "1", **env}, name, log_dir, "worker", "--name", name)  # one job at a time
    process = worker.process

    def ours(pid: bytes | None) -> bool:
        """This process's RQ worker (itself, one slot) or its pool's: a killed worker of the same name leaves its
        registration behind, which says nothing of this one."""
        if not pid:
            return False
        try:
            return int(pid) == process.pid or psutil.Process(int(pid)).ppid() == process.pid
        except psutil.Error:
            return False

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"worker {name} exited with {process.returncode}:\n{worker.log()}")
        return any(ours(redis_conn.hget(f"rq:worker:{key}", "pid")) for key in (name, f"{name}-0"))  # or a pool

    wait_for(ready, 60, f"worker {name} to register with RQ")
    return worker


# ---------------------------------------------------------------- jobs through the API and the rows


def submit(client, config, name="t", **body):
    response = client.post("/api/training", json={"name": name, "task": "mlp", "params": config, **body})
    assert response.status_code == 201, response.get_json()
    return response.get_json()["job"]["id"]


def row(job_id) -> TrainingJob:
    """A detached snapshot of the row, its history included: reading it later opens no transaction (and holds no
    connection)."""
    db.session.expire_all()
    job = db.session.get(TrainingJob, job_id, options=[undefer(TrainingJob.history)])  # deferred in the mapping
    db.session.expunge(job)
    db.session.rollback()
    return job


def events(job_id) -> list[tuple]:
    db.session.expire_all()
    rows = db.session.query(JobEvent).filter_by(job_id=job_id).order_by(JobEvent.id).all()
    db.session.commit()
    return [(e.from_status, e.to_status, e.actor) for e in rows]


def lose(redis, rq_job_id: str) -> None:
    """Redis losing one RQ job, as a flush or a restart without persistence loses it: its enqueue marker goes with
    it (a deletion leaves the marker, and the reconciler takes it as meant: api.queue.enqueued_key)."""
    from api.queue import enqueued_key

    redis.delete(f"rq:job:{rq_job_id}", enqueued_key(rq_job_id))


def wait_status(job_id, status, timeout=60):
    return wait_for(lambda: (j := row(job_id)).status == status and j, timeout, f"job {job_id} to be {status}")


def wait_training(job_id, timeout=60):
    """Running, with a horse pid and at least one progress write."""
    return wait_for(lambda: (j := row(job_id)).status == "running" and j.worker_pid and j.step > 0 and j,
                    timeout, f"job {job_id} to be training")


def assert_events_chain(job_id):
    """Every event starts where the previous ended; the last is terminal, and a terminal status is only ever
    left by the user's restart (force-start or resume, actor api) back to queued."""
    evs = events(job_id)
    for prev, nxt in zip(evs, evs[1:], strict=False):
        assert nxt[0] == prev[1], evs
        if prev[1] in TERMINAL:
            assert (nxt[1], nxt[2]) == ("queued", "api"), evs
    assert evs[-1][1] in TERMINAL, evs
    return evs




class Link:
    """A TCP relay from a free port on 127.0.0.1 to ``target`` that the test can cut and restore: a process
    given the relay's address loses its server while the test itself still reaches it directly."""

    def __init__(self, target_host: str, target_port: int) -> None:
        from api.dev.servers import free_port

        self.target, self.port = (target_host, target_port), free_port()
        self._server: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.up()

    def up(self) -> None:
        server = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        server.settimeout(0.2)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def down(self) -> None:
        """Close the listener and every relayed connection (each peer sees its connection reset)."""
        server, self._server = self._server, None
        if server:
            server.close()
        with self._lock:
            for conn in self._open:
                try:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    conn.close()
                except OSError:
                    pass
            self._open.clear()

    def _accept(self, server: socket.socket) -> None:
        while self._server is server:
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for conn in (source, sink):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def relayed(url: str, link: Link) -> str:
    """``url`` (a SQLAlchemy or Redis URL on 127.0.0.1) pointed at ``link`` instead."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f"127.0.0.1:{parts.port}",
                                                                 f"127.0.0.1:{link.port}")))


TRAINQ = [sys.executable, "-m", "trainq.cli"]  # the CLI, as a user runs it


def trainq(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run ``trainq ARGS`` in ``env`` (output captured as text)."""
    return subprocess.run([*TRAINQ, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
