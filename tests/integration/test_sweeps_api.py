"""The sweeps API without workers: a sweep's checks (422s naming the field), its first trials submitted as
ordinary jobs tagged with the sweep and trial number, the jobs list filtered by sweep, owner-only stop, and the
driver's restart rules (an Optuna trial whose job was never written is submitted, never lost or doubled)."""

from __future__ import annotations

import json
import os

import optuna
import pytest
from sqlalchemy import select, text

from api.record import sweep_study
from api.record.sweep_tables import Sweep
from api.record.tables import TrainingJob
from api.service import sweep_driver
from api.stores import db

SPACE = {"lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
         "hidden": {"type": "int", "low": 16, "high": 256, "step": 16}}


def create(client, **body):
    return client.post("/api/sweeps", json={"task": "diabetes-regression", "space": SPACE, "params": {"epochs": 2},
                                            **body})


def trial_rows(sweep_id: str) -> list[TrainingJob]:
    db.session.expire_all()
    rows = list(db.session.scalars(select(TrainingJob).where(TrainingJob.sweep_id == sweep_id)
                                   .order_by(TrainingJob.trial_number)))
    db.session.commit()
    return rows


def test_a_sweep_starts_its_first_trials_as_tagged_jobs(client):
    response = create(client, max_trials=5, parallel=2, sampler="random", seed=7, name="lr search")
    assert response.status_code == 201, response.get_json()
    sweep = response.get_json()["sweep"]
    assert sweep["state"] == "running" and sweep["objective"] == {"metric": "val_mse", "mode": "min"}  # the task's
    assert [t["number"] for t in sweep["trials"]] == [0, 1] and sweep["best"] is None
    rows = trial_rows(sweep["id"])
    assert [(r.trial_number, r.status, r.task) for r in rows] == [(0, "queued", "diabetes-regression"),
                                                                   (1, "queued", "diabetes-regression")]
    for r, trial in zip(rows, sweep["trials"], strict=True):
        assert r.params["epochs"] == 2 and 1e-4 <= r.params["lr"] <= 0.3 and r.params["hidden"] % 16 == 0
        assert trial["params"] == {"lr": r.params["lr"], "hidden": r.params["hidden"]}
        assert r.name == f"lr search #{r.trial_number}"
    assert rows[0].params != rows[1].params
    listed = client.get(f"/api/training?sweep={sweep['id']}").get_json()["jobs"]
    assert sorted(j["trial_number"] for j in listed) == [0, 1] and {j["sweep_id"] for j in listed} == {sweep["id"]}
    assert client.get("/api/sweeps").get_json()["sweeps"][0]["trial_counts"] == {"queued": 2}
    # a driver step with nothing ended starts nothing more
    sweep_driver.advance(rows[0].sweep_id)
    assert len(trial_rows(sweep["id"])) == 2
    # Optuna's tables live in their own schema, apart from trainq's (and from its alembic_version)
    names = set(db.session.scalars(text("SELECT table_name FROM information_schema.tables "
                                        "WHERE table_schema = 'optuna'")))
    assert {"studies", "trials", "trial_params", "alembic_version"} <= names


@pytest.mark.parametrize(("body", "field"), [
    ({"space": {"lr": {"type": "float", "low": 0.1, "high": 5.0}}}, "space.lr.high"),
    ({"space": {"nope": {"type": "int", "low": 1, "high": 5}}}, "space.nope"),
    ({"space": {"lr": {"type": "float", "low": 0.2, "high": 0.1}}}, "space.lr.high"),
    ({"space": {"batch_size": {"type": "choice", "choices": []}}}, "space.batch_size.choices"),
    ({"space": {"lr": {"type": "float", "low": 0.1, "high": 0.2}}, "sampler": "grid"}, "space.lr.step"),
    ({"max_trials": 100_000}, "max_trials"),
    ({"parallel": 0}, "parallel"),
    ({"task": "nope"}, "task"),
    ({"sampler": "bayes"}, "sampler"),
    ({"params": {"epochs": 0}}, "params.epochs"),
])
def test_bad_sweeps_are_422s_naming_the_field(client, body, field):
    response = create(client, **body)
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["error"]["field"] == field


def test_only_its_owner_or_an_admin_stops_a_sweep(client, make_user):
    _, alice, _ = make_user("alice")
    _, bob, _ = make_user("bob")
    sweep = create(alice, max_trials=4, parallel=2).get_json()["sweep"]
    refused = bob.delete(f"/api/sweeps/{sweep['id']}")
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "not_owner"
    assert bob.get(f"/api/sweeps/{sweep['id']}").status_code == 200  # anyone reads, as with jobs
    stopped = alice.delete(f"/api/sweeps/{sweep['id']}")
    assert stopped.status_code == 200, stopped.get_json()
    body = stopped.get_json()["sweep"]
    assert body["state"] == "stopped" and body["stop_reason"].startswith("stopped by alice")
    assert [t["status"] for t in body["trials"]] == ["cancelled", "cancelled"]
    sweep_driver.advance(trial_rows(sweep["id"])[0].sweep_id)  # a stopped sweep starts nothing
    assert len(trial_rows(sweep["id"])) == 2
    assert alice.delete(f"/api/sweeps/{sweep['id']}").status_code == 200  # twice is still stopped
    assert client.get("/api/sweeps/00000000-0000-0000-0000-000000000000").status_code == 404


def test_an_asked_trial_without_its_job_is_submitted_on_the_next_step(client):
    """The driver died between Optuna's ask and the job's INSERT: the next step submits that trial, once."""
    sweep = create(client, max_trials=3, parallel=1).get_json()["sweep"]
    row = db.session.get(Sweep, trial_rows(sweep["id"])[0].sweep_id)
    study = sweep_study.load(row, sweep_study.storage(db.engine))
    orphan = study.ask(sweep_study.distributions(row.space))  # asked, then "killed" before its job
    db.session.execute(text("UPDATE training_jobs SET status = 'completed', metrics = '{\"val_mse\": 0.5}' "
                            "WHERE sweep_id = :s"), {"s": row.id})  # trial 0 ended (a write the test fakes)
    db.session.commit()
    sweep_driver.advance(row.id)
    rows = trial_rows(sweep["id"])
    assert [r.trial_number for r in rows] == [0, orphan.number]
    assert {k: rows[1].params[k] for k in SPACE} == orphan.params
    sweep_driver.advance(row.id)
    assert len(trial_rows(sweep["id"])) == 2  # not twice
    detail = client.get(f"/api/sweeps/{sweep['id']}").get_json()
    assert detail["best"]["number"] == 0 and detail["best"]["objective"] == 0.5


def test_the_drivers_kept_study_reads_what_others_wrote_and_is_dropped_when_the_sweep_ends(client, monkeypatch):
    """The driver keeps a sweep's study between its steps (Optuna's cache of its finished trials): another
    process's tell, a horse's report on a running trial and a trial asked elsewhere all show in its next read; a
    failed step, and the sweep's end, drop it."""
    sweep = create(client, max_trials=6, parallel=2, seed=1).get_json()["sweep"]
    row = db.session.get(Sweep, trial_rows(sweep["id"])[0].sweep_id)
    store = sweep_study.storage(db.engine)
    kept = sweep_study.kept(row, store)
    assert sweep_study.kept(row, store) is kept  # the sweep's creation drove its first step: kept since
    assert [t.number for t in kept.get_trials(deepcopy=False)] == [0, 1]
    other = sweep_study.storage(db.engine, fresh=True)  # another process's
    try:
        elsewhere = sweep_study.load(row, other)
        elsewhere.tell(0, 0.5)
        other.set_trial_intermediate_value(other.get_trial_id_from_study_id_trial_number(elsewhere._study_id, 1),
                                           1, 0.25)
        asked = elsewhere.ask(sweep_study.distributions(row.space))
    finally:
        sweep_study.close(other)
    seen = {t.number: t for t in kept.get_trials(deepcopy=False)}
    assert seen[0].state == optuna.trial.TrialState.COMPLETE and seen[0].value == 0.5
    assert seen[1].state == optuna.trial.TrialState.RUNNING and seen[1].intermediate_values == {1: 0.25}
    assert seen[asked.number].params == asked.params
    monkeypatch.setattr(sweep_driver, "_failure_stop", lambda *_: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        sweep_driver.advance(row.id)
    monkeypatch.undo()
    assert sweep_study.kept(row, store) is not kept  # a failed step: loaded afresh
    kept = sweep_study.kept(row, store)
    assert client.delete(f"/api/sweeps/{sweep['id']}").status_code == 200
    assert sweep_study.kept(row, store) is not kept  # it ended: dropped


def test_a_sweep_ended_elsewhere_is_no_longer_kept_after_the_next_drive(client):
    sweep = create(client, max_trials=4, parallel=1).get_json()["sweep"]
    row = db.session.get(Sweep, trial_rows(sweep["id"])[0].sweep_id)
    store = sweep_study.storage(db.engine)
    kept = sweep_study.kept(row, store)
    db.session.execute(text("UPDATE sweeps SET state = 'stopped' WHERE id = :s"), {"s": row.id})  # another process
    db.session.commit()
    sweep_driver.drive()
    assert sweep_study.kept(row, store) is not kept


def test_a_grid_sweep_goes_on_when_its_grid_is_used_up(client):
    """Optuna's grid sampler stops the study at the tell that uses its grid up (``Study.stop``, which outside
    ``optimize`` raises): the step goes on, the tell is written, and the sweep ends at that step."""
    space = {"hidden": {"type": "int", "low": 16, "high": 32, "step": 16}}  # a grid of 2
    sweep = create(client, space=space, sampler="grid", max_trials=2, parallel=2).get_json()["sweep"]
    sweep_id = trial_rows(sweep["id"])[0].sweep_id
    assert len(trial_rows(sweep["id"])) == 2
    db.session.execute(text("UPDATE training_jobs SET status = 'completed', metrics = '{\"val_mse\": 0.5}' "
                            "WHERE sweep_id = :s"), {"s": sweep_id})  # both trials ended (a write the test fakes)
    db.session.commit()
    sweep_driver.advance(sweep_id)  # raised "Study.stop is supposed to be invoked inside an objective function"
    db.session.expire_all()
    ended = db.session.get(Sweep, sweep_id)
    assert ended.state == "completed" and ended.stop_reason == "all 2 trials ended"
    detail = client.get(f"/api/sweeps/{sweep['id']}").get_json()
    assert [t["objective"] for t in detail["trials"]] == [0.5, 0.5]


def test_a_forked_process_takes_over_its_parents_optuna_storage_with_connections_of_its_own(ctx):
    """A trial's horse uses its agent's storage (opened before the fork: no new engine, no version checks while
    the trial waits to start), never the agent's connections: it opens its own and leaves the parent's alone."""
    store = sweep_study.storage(db.engine)
    with store.engine.connect() as conn:
        parent_backend = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the horse
        code = 1
        try:
            os.close(read)
            adopted = sweep_study.storage(db.engine)
            with adopted.engine.connect() as conn:
                backend = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            os.write(write, json.dumps([adopted is store, backend]).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    same, child_backend = json.loads(os.read(read, 1000))
    os.close(read)
    assert os.waitpid(pid, 0)[1] == 0
    assert same and child_backend != parent_backend
    with store.engine.connect() as conn:  # the parent's connection is alive: the child never closed it
        alive = conn.exec_driver_sql("SELECT pid FROM pg_stat_activity").scalars().all()
    assert parent_backend in alive
