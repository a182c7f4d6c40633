"""How many SQL statements one driver step issues (``sweep_driver.advance`` of a running sweep in which one trial
has just ended), on trainq's engine and on Optuna's: the hand-over from one trial to the next waits on every round
trip. Run with ``-s`` to see them grouped by origin (the trainq frame, and the Optuna call it came through)."""

from __future__ import annotations

import collections
import os
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event, select, text

from api.record import sweep_study
from api.record.sweep_tables import Sweep
from api.record.tables import TrainingJob
from api.service import sweep_driver
from api.stores import db

SPACE = {"lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
         "hidden": {"type": "int", "low": 16, "high": 256, "step": 16}}
# 95 statements when this test was written, 73 since the driver keeps its studies (sweep_study.kept), reads its
# study's trials once a step and tells without reading the trial back: a step back up over this is a regression
STEP_BUDGET = 80
_HERE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _origin() -> str:
    """The innermost trainq frame (api/, outside api/stores) and the first Optuna call under it."""
    frames = traceback.extract_stack()[:-3]
    ours, theirs = "?", ""
    for i, frame in enumerate(frames):
        path = frame.filename
        if path.startswith(os.path.join(_HERE, "api")) and not path.endswith("stores.py"):
            ours = f"{os.path.relpath(path, _HERE)}:{frame.name}:{frame.lineno}"
            inner = [f for f in frames[i + 1:] if "site-packages/optuna" in f.filename]
            stored = [f.name for f in inner if "optuna/storages" in f.filename]
            theirs = f" > optuna {inner[0].name}" + (f" > {stored[0]}" if stored else "") if inner else ""
    return ours + theirs


class Seen(list):
    """The statements (origin, text); ``other``: the other round trips by kind: each transaction's BEGIN (psycopg2
    sends it on its own before the first statement), COMMIT or ROLLBACK, and the pre-ping of each pool checkout
    (both engines ping)."""

    def __init__(self) -> None:
        super().__init__()
        self.other: collections.Counter[str] = collections.Counter()


@contextmanager
def counted(*engines) -> Iterator[Seen]:
    """What the calling thread sends (not the placeholder host's heartbeat, on another thread)."""
    seen, ours = Seen(), threading.get_ident()

    def before(conn, cursor, statement, parameters, context, executemany):
        if threading.get_ident() == ours:
            seen.append((_origin(), " ".join(statement.split())[:110]))

    def other(kind: str):
        def count(*_):
            if threading.get_ident() == ours:
                seen.other[kind] += 1
        return count

    begin, commit, rollback, checkout = (other(kind) for kind in ("begin", "commit", "rollback",
                                                                  "checkout (pre-ping)"))

    hooks = [("before_cursor_execute", before), ("begin", begin), ("commit", commit), ("rollback", rollback)]
    for engine in engines:
        for name, fn in hooks:
            event.listen(engine, name, fn)
        event.listen(engine.pool, "checkout", checkout)
    try:
        yield seen
    finally:
        for engine in engines:
            for name, fn in hooks:
                event.remove(engine, name, fn)
            event.remove(engine.pool, "checkout", checkout)


def report(title: str, seen: Seen) -> None:
    print(f"\n== {title}: {len(seen)} statements; other round trips: {dict(seen.other)}")
    by_origin = collections.Counter(origin for origin, _ in seen)
    for origin, n in by_origin.most_common():
        print(f"{n:4d}  {origin}")
        for statement, m in collections.Counter(s for o, s in seen if o == origin).most_common(4):
            print(f"         {m:3d} x {statement}")


def _end_trial(sweep: Sweep, number: int, value: float) -> None:
    """What a trial's horse leaves behind: its reports in Optuna (as its pruner writes them), then its row
    completed with the objective."""
    store = sweep_study.storage(db.engine, fresh=True)
    try:
        study = sweep_study.load(sweep, store)
        for epoch in range(1, 4):
            study._storage.set_trial_intermediate_value(
                store.get_trial_id_from_study_id_trial_number(study._study_id, number), epoch, value + 1 / epoch)
    finally:
        sweep_study.close(store)
    db.session.execute(text("UPDATE training_jobs SET status = 'completed', metrics = CAST(:m AS json) "
                            "WHERE sweep_id = :s AND trial_number = :n"),
                       {"m": f'{{"val_mse": {value}}}', "s": sweep.id, "n": number})
    db.session.commit()


def test_one_driver_step_after_a_trial_ended(client):
    body = {"task": "diabetes-regression", "space": SPACE, "params": {"epochs": 2}, "max_trials": 12,
            "parallel": 2, "seed": 3, "pruner": "median"}
    created = client.post("/api/sweeps", json=body)
    assert created.status_code == 201, created.get_json()
    sweep_id = db.session.scalar(select(TrainingJob.sweep_id).where(TrainingJob.trial_number == 0))
    sweep = db.session.get(Sweep, sweep_id)
    optuna_engine = sweep_study.storage(db.engine).engine
    counts = []
    for number in range(6):  # the driver's steps as the trials end one by one: the last has 5 ended before it
        _end_trial(sweep, number, 0.5 + number / 10)
        with counted(db.engine, optuna_engine) as seen:
            started = time.perf_counter()
            sweep_driver.advance(sweep_id)
            took = time.perf_counter() - started
        counts.append(len(seen))
        print(f"step {number}: {len(seen)} statements, {sum(seen.other.values())} other round trips, "
              f"{took * 1000:.0f} ms")
    report(f"one step with {number} trials ended before it", seen)
    print("statements per step:", counts)
    db.session.expire_all()
    numbers = list(db.session.scalars(select(TrainingJob.trial_number).where(TrainingJob.sweep_id == sweep_id)
                                      .order_by(TrainingJob.trial_number)))
    db.session.commit()
    assert numbers == list(range(8))  # each step started the next trial, once
    assert max(counts) <= STEP_BUDGET
