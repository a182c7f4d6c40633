"""A worker's spare database connections (api/worker/spares.py): the forked child uses them as its engine's first
connections; the parent lets go of its copies without ending the child's sessions; a session the server ended
meanwhile is never handed out."""

from __future__ import annotations

import os
import time

from sqlalchemy import text

from api.record import locks
from api.stores import db
from api.worker.spares import Spares

KEY = 987_654_321


def _wait_exit(pid: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    raise AssertionError("the child did not exit")


def _lock_held() -> bool:
    held = db.session.scalar(text(locks.held_sql(locks.Namespace.ATTEMPT, KEY)))
    db.session.rollback()
    return bool(held)


def test_the_child_uses_the_spares_and_the_parent_lets_go_without_ending_them(ctx):
    engine = db.engine
    spares = Spares(engine, count=2)
    spares.fill()
    assert len(spares.ready) == 2
    backends = {raw.get_backend_pid() for raw in spares.ready}
    read, write = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the horse: its engine's first two connections are the spares; it holds a lock in one
        code = 1
        try:
            os.close(read)
            os.close(go_w)
            engine.dispose(close=False)
            spares.hand_over()
            lease = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            first = lease.scalar(text("SELECT pg_backend_pid()"))
            lease.execute(text("SELECT pg_advisory_lock(:ns, :key)"), {"ns": int(locks.Namespace.ATTEMPT), "key": KEY})
            with engine.connect() as other:
                second = other.scalar(text("SELECT pg_backend_pid()"))
            os.write(write, f"{first} {second}\n".encode())
            os.read(go_r, 1)  # the parent checks the lock, having let go of its copies
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    os.close(go_r)
    spares.forget()
    assert spares.ready == []
    used = {int(p) for p in os.read(read, 100).split()}
    assert used == backends
    time.sleep(0.2)  # a Terminate from the parent would have ended the child's session by now
    assert _lock_held()
    os.write(go_w, b"x")
    assert _wait_exit(pid) == 0
    deadline = time.monotonic() + 30
    while _lock_held():  # the child's exit ends its session, and its lock with it
        assert time.monotonic() < deadline, "the child's lock outlived it"
        time.sleep(0.02)


def test_a_spare_the_server_ended_is_not_handed_out(ctx):
    spares = Spares(db.engine, count=2)
    spares.fill()
    dead = spares.ready[0].get_backend_pid()
    db.session.execute(text("SELECT pg_terminate_backend(:p)"), {"p": dead})
    db.session.rollback()
    deadline = time.monotonic() + 30
    while db.session.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"), {"p": dead}):
        db.session.rollback()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    db.session.rollback()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            db.engine.dispose(close=False)
            spares.hand_over()
            with db.engine.connect() as conn:
                code = 0 if conn.scalar(text("SELECT pg_backend_pid()")) != dead else 3
        finally:
            os._exit(code)
    spares.forget()
    assert _wait_exit(pid) == 0


def test_fill_tops_up_and_close_ends_them(ctx):
    spares = Spares(db.engine, count=2)
    spares.fill()
    kept = list(spares.ready)
    spares.fill()
    assert spares.ready == kept  # live ones are kept, none added
    spares.close()
    assert spares.ready == [] and all(raw.closed for raw in kept)
