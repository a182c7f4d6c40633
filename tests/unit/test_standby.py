"""The stand-by horse's hand-over on its own (api/worker/standby.py), with plain functions for its preparation and
its job: the order reaches it whole, one stand-by at a time, a dead one is reaped (never signalled: its pid may be
another process's), and a job handed to a dead one is the caller's to fork for."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psutil

from api.worker.standby import NAME, Standby


def until(check, seconds: float = 30.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if (found := check()):
            return found
        time.sleep(0.01)
    raise TimeoutError(f"timed out after {seconds}s")


def ended(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_the_order_reaches_the_stand_by_which_got_ready_before_it(tmp_path: Path):
    def prepare(order_waiting) -> None:
        (tmp_path / "ready").write_text(json.dumps([order_waiting(), Path("/proc/self/comm").read_text().strip()]))

    def run(order):
        (tmp_path / "ran").write_text(json.dumps([order, os.getpgrp() == os.getpid()]))
        os._exit(0)

    standby = Standby(prepare, run)
    standby.ensure()
    first = standby.pid
    assert json.loads(until(lambda: (tmp_path / "ready").exists() and (tmp_path / "ready").read_text())) == \
        [False, NAME]  # ready before any order, under its own name
    standby.ensure()
    assert standby.pid == first  # one waits already: no other
    assert standby.hand({"job": "j1", "queue": "q", "execution": "e"}) == first
    assert standby.pid is None
    _, status = os.waitpid(first, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert json.loads((tmp_path / "ran").read_text()) == [{"job": "j1", "queue": "q", "execution": "e"}, True]


def test_a_dead_stand_by_is_reaped_and_the_job_handed_to_it_is_the_callers(tmp_path: Path):
    standby = Standby(lambda _waiting: None, lambda _order: os._exit(0))
    standby.ensure()
    dead = standby.pid
    os.kill(dead, signal.SIGKILL)
    until(lambda: ended(dead))
    assert standby.hand({"job": "j"}) is None  # the caller forks a horse for it
    assert standby.pid is None and not psutil.pid_exists(dead)  # reaped
    standby.ensure()
    again = standby.pid
    os.kill(again, signal.SIGKILL)
    until(lambda: ended(again))
    standby.ensure()  # the dead one reaped, another forked
    assert standby.pid not in (None, again) and not psutil.pid_exists(again)
    last = standby.pid
    standby.close()
    assert standby.pid is None and not psutil.pid_exists(last)
