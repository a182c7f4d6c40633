"""Helpers shared by the tests: waiting on conditions with deadlines, and real worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def process_gone(pid: int) -> bool:
    """Gone means no such process, or a zombie waiting for a reaper (it runs no code any more)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


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


def start_worker(env: dict[str, str], name: str, log_dir: Path, redis_conn: Any) -> WorkerProcess:
    """Start ``flask --app api worker`` as a real process and wait until RQ lists it."""
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "api", "worker", "--name", name],
            env={**os.environ, **env}, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    worker = WorkerProcess(name, process, log_path)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"worker {name} exited with {process.returncode}:\n{worker.log()}")
        return bool(redis_conn.exists(f"rq:worker:{name}"))

    wait_for(ready, 60, f"worker {name} to register with RQ")
    return worker
