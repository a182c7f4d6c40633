"""Migration 0005 puts existing jobs on the built-in mlp task: their config becomes its params. Migration 0006
gives existing jobs an owner: the first admin, a placeholder admin named ``admin`` when there is no user yet."""

from __future__ import annotations

import uuid

import flask_migrate
from sqlalchemy import text

from api.service import users
from api.stores import db
from tests.conftest import make_app


def test_existing_jobs_move_onto_the_mlp_task(settings, postgres_server):
    url = postgres_server.create_database(f"migrate_{uuid.uuid4().hex[:8]}")
    app = make_app(settings, DATABASE_URL=url)
    config = {"dataset": "synthetic", "epochs": 7, "hidden_sizes": [16]}
    job_id = uuid.uuid4()
    with app.app_context():
        flask_migrate.upgrade(revision="0004")
        db.session.execute(text(
            "INSERT INTO training_jobs (id, name, status, config, epoch, step, attempts, created_at, updated_at) "
            "VALUES (:id, 'old', 'completed', CAST(:config AS jsonb), 7, 70, 1, now(), now())"),
            {"id": job_id, "config": '{"dataset": "synthetic", "epochs": 7, "hidden_sizes": [16]}'})
        db.session.commit()
        flask_migrate.upgrade()
        row = db.session.execute(text("SELECT task, params FROM training_jobs WHERE id = :id"), {"id": job_id}).one()
        db.session.commit()  # no open transaction may hold the table while a migration alters it
        assert (row.task, row.params) == ("mlp", config)
        placeholder = users.find_user("admin")
        assert placeholder.is_admin and users.list_tokens(placeholder) == []  # a token is the operator's to make
        client = app.test_client(token=users.create_token(placeholder)[1])
        body = client.get(f"/api/training/{job_id}").get_json()
        assert body["task"] == "mlp" and body["params"] == config and "config" not in body
        assert body["owner"] == "admin" and body["owner_id"] == placeholder.id
        db.session.commit()  # the request ran in this app context: end its transaction before altering tables
        flask_migrate.downgrade(revision="0004")  # and back, for whoever needs to
        back = db.session.execute(text("SELECT config FROM training_jobs WHERE id = :id"), {"id": job_id}).one()
        db.session.commit()
        assert back.config == config
        db.session.remove()
        db.engine.dispose()


def test_an_empty_database_gets_no_placeholder_user(settings, postgres_server):
    url = postgres_server.create_database(f"migrate_{uuid.uuid4().hex[:8]}")
    app = make_app(settings, DATABASE_URL=url)
    with app.app_context():
        flask_migrate.upgrade()
        assert users.list_users() == []
        db.session.commit()
        flask_migrate.downgrade(revision="0005")
        db.session.remove()
        db.engine.dispose()


def test_0008_adds_cloned_from_and_the_search_indexes_and_goes_back(settings, postgres_server):
    url = postgres_server.create_database(f"migrate_{uuid.uuid4().hex[:8]}")
    app = make_app(settings, DATABASE_URL=url)

    def shape() -> tuple[bool, set[str]]:
        column = db.session.execute(text("SELECT 1 FROM information_schema.columns WHERE table_name = "
                                         "'training_jobs' AND column_name = 'cloned_from'")).scalar()
        indexes = set(db.session.scalars(text("SELECT indexname FROM pg_indexes WHERE tablename = 'training_jobs'")))
        db.session.commit()
        return bool(column), indexes

    with app.app_context():
        flask_migrate.upgrade(revision="0007")
        job_id = uuid.uuid4()
        db.session.execute(text("INSERT INTO users (name, is_admin, created_at) VALUES ('old', true, now())"))
        db.session.execute(text(
            "INSERT INTO training_jobs (id, name, owner_id, status, task, params, metrics, epoch, step, attempts, "
            "created_at, updated_at) VALUES (:id, 'old', (SELECT id FROM users), 'completed', 'mlp', '{}', "
            "'{\"val_loss\": 0.5, \"tag\": \"a\"}', 1, 1, 1, now(), now())"), {"id": job_id})
        db.session.commit()
        flask_migrate.upgrade()
        column, indexes = shape()
        assert column and {"ix_training_jobs_name_trgm", "ix_training_jobs_owner_newest"} <= indexes
        backfilled = db.session.execute(text("SELECT job_id, name, value FROM job_metric_values")).all()
        db.session.commit()
        assert [tuple(r) for r in backfilled] == [(job_id, "val_loss", 0.5)]  # the jobs there were, numbers only
        plan = db.session.execute(text("SET LOCAL enable_seqscan = off; EXPLAIN SELECT id FROM training_jobs "
                                       "WHERE name ILIKE '%resnet%'")).scalars().all()
        db.session.commit()
        assert any("ix_training_jobs_name_trgm" in line for line in plan), plan
        flask_migrate.downgrade(revision="0007")
        column, indexes = shape()
        assert not column and not {"ix_training_jobs_name_trgm", "ix_training_jobs_owner_newest"} & indexes
        flask_migrate.upgrade()
        assert shape()[0]
        db.session.remove()
        db.engine.dispose()


def test_0012_stores_the_recent_history_apart_backfills_it_and_goes_back(settings, postgres_server):
    url = postgres_server.create_database(f"migrate_{uuid.uuid4().hex[:8]}")
    app = make_app(settings, DATABASE_URL=url)

    def columns() -> set[str]:
        names = set(db.session.scalars(text("SELECT column_name FROM information_schema.columns WHERE table_name = "
                                            "'training_jobs' AND column_name LIKE 'history%'")))
        db.session.commit()
        return names

    with app.app_context():
        flask_migrate.upgrade(revision="0011")
        db.session.execute(text("INSERT INTO users (name, is_admin, created_at) VALUES ('old', true, now())"))
        long_job, short_job = uuid.uuid4(), uuid.uuid4()
        for job_id, n in ((long_job, 1500), (short_job, 3)):
            db.session.execute(text(
                "INSERT INTO training_jobs (id, name, owner_id, status, task, params, epoch, step, attempts, "
                "created_at, updated_at, history) VALUES (:id, 'old', (SELECT id FROM users), 'completed', 'mlp', "
                "'{}', 1, 1, 1, now(), now(), (SELECT jsonb_agg(jsonb_build_object('epoch', i) ORDER BY i) "
                "FROM generate_series(1, :n) AS i))"), {"id": job_id, "n": n})
        db.session.commit()
        flask_migrate.upgrade()
        assert columns() == {"history", "history_recent", "history_length"}
        rows = {row.id: row for row in db.session.execute(text(
            "SELECT id, history_recent, history_length FROM training_jobs"))}
        db.session.commit()
        long_row, short_row = rows[long_job], rows[short_job]
        assert long_row.history_length == 1500 and long_row.history_recent == [{"epoch": i} for i in range(501, 1501)]
        assert short_row.history_length == 3 and short_row.history_recent == [{"epoch": i} for i in (1, 2, 3)]
        flask_migrate.downgrade(revision="0011")
        assert columns() == {"history"}


def test_0014_adds_sweeps_and_the_pruned_status_and_goes_back(settings, postgres_server):
    url = postgres_server.create_database(f"migrate_{uuid.uuid4().hex[:8]}")
    app = make_app(settings, DATABASE_URL=url)

    def shape() -> tuple[bool, bool, bool]:
        sweeps = db.session.execute(text("SELECT to_regclass('public.sweeps') IS NOT NULL")).scalar()
        schema = db.session.execute(text("SELECT 1 FROM information_schema.schemata WHERE schema_name = 'optuna'"
                                         )).scalar()
        check = db.session.execute(text("SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                                        "WHERE conname = 'ck_training_jobs_status'")).scalar()
        db.session.commit()
        return bool(sweeps), bool(schema), "pruned" in check

    with app.app_context():
        flask_migrate.upgrade()
        assert shape() == (True, True, True)
        flask_migrate.downgrade(revision="0013")
        assert shape() == (False, False, False)
        flask_migrate.upgrade()
        assert shape() == (True, True, True)
        db.session.remove()
        db.engine.dispose()


def test_0015_queues_a_sweeps_end_once_from_its_commit_and_goes_back(settings, postgres_server):
    url = postgres_server.create_database(f"migrate_{uuid.uuid4().hex[:8]}")
    app = make_app(settings, DATABASE_URL=url)

    def shape() -> tuple[bool, bool, bool]:
        trigger = db.session.execute(text("SELECT 1 FROM pg_trigger WHERE tgname = 'trg_sweeps_webhook_outbox'"
                                          )).scalar()
        columns = {(t, c) for t, c in db.session.execute(text(
            "SELECT table_name, column_name FROM information_schema.columns WHERE column_name = 'sweep_id' "
            "AND table_name IN ('webhook_outbox', 'webhook_deliveries')"))}
        db.session.commit()
        return bool(trigger), ("webhook_outbox", "sweep_id") in columns, ("webhook_deliveries", "sweep_id") in columns

    def queued(sweep_id: uuid.UUID) -> list[str]:
        found = list(db.session.scalars(text("SELECT event FROM webhook_outbox WHERE sweep_id = :id"),
                                        {"id": sweep_id}))
        db.session.commit()
        return found

    with app.app_context():
        flask_migrate.upgrade()
        assert shape() == (True, True, True)
        db.session.execute(text("INSERT INTO users (name, is_admin, created_at) VALUES ('old', true, now())"))
        sweep_id = uuid.uuid4()
        db.session.execute(text(
            "INSERT INTO sweeps (id, name, owner_id, task, params, space, objective_metric, objective_mode, sampler, "
            "pruner, max_trials, parallel, state, study_name, created_at, updated_at) VALUES (:id, 's', (SELECT id "
            "FROM users), 'mlp', '{}', '{}', 'loss', 'min', 'random', 'none', 2, 1, 'running', :study, now(), "
            "now())"), {"id": sweep_id, "study": f"s-{sweep_id}"})
        db.session.commit()
        db.session.execute(text("UPDATE sweeps SET updated_at = now() WHERE id = :id"), {"id": sweep_id})
        db.session.commit()
        assert queued(sweep_id) == []  # still running: no event
        db.session.execute(text("UPDATE sweeps SET state = 'stopped', finished_at = now() WHERE id = :id"),
                           {"id": sweep_id})
        db.session.rollback()
        assert queued(sweep_id) == []  # an end rolled back queues nothing
        for _ in range(2):  # the end, then a write after it: one event
            db.session.execute(text("UPDATE sweeps SET state = 'stopped', finished_at = now() WHERE id = :id"),
                               {"id": sweep_id})
            db.session.commit()
        assert queued(sweep_id) == ["sweep_finished"]
        flask_migrate.downgrade(revision="0014")
        assert shape() == (False, False, False)
        flask_migrate.upgrade()
        assert shape() == (True, True, True)
        db.session.remove()
        db.engine.dispose()
