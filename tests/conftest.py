"""Fixtures: real redis-server and PostgreSQL started for the session on free ports, a migrated app,
and real RQ worker processes. Unit tests use none of them."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import text

from api.app import create_app
from api.dev.servers import PostgresServer, RedisServer
from api.stores import db, redis_connection
from tests.support import TOKENS, ApiClient, WorkerProcess, start_flask, start_worker


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    server = PostgresServer(tmp_path_factory.mktemp("postgres"), ephemeral=True).start()
    yield server
    server.remove()


@pytest.fixture(scope="session")
def settings(redis_server: RedisServer, postgres_server: PostgresServer, tmp_path_factory) -> dict[str, str]:
    """The settings shared by the in-process app and every worker process, as env-var strings."""
    return {
        "DATABASE_URL": postgres_server.create_database("trainq_test"),
        "REDIS_URL": redis_server.url,
        "CHECKPOINT_DIR": str(tmp_path_factory.mktemp("checkpoints")),
        "ARTIFACT_DIR": str(tmp_path_factory.mktemp("artifacts")),
        "PROGRESS_INTERVAL": "0.2",
        "LOG_LEVEL": "INFO",
        # each test's agent runs one job at a time, as one RQ worker under its own name, unless the test asks for
        # more slots (tests/e2e/test_gpus.py); make run's test takes the default, one slot per CPU
        "TRAINQ_SLOTS": "1",
    }


def make_app(env: dict[str, str], **overrides: object) -> Flask:
    from api import settings

    application = create_app({**settings.load(env), "TESTING": True, **overrides})
    application.test_client_class = ApiClient  # sends the session admin's token unless told otherwise
    return application


@pytest.fixture(scope="session")
def app(settings: dict[str, str]) -> Flask:
    import flask_migrate

    import trainq
    from api.service import catalogue, users

    application = make_app(settings)
    with application.app_context():
        flask_migrate.upgrade()
        # what a worker with the built-in tasks publishes at start; tests without a worker submit against it
        builtin = [t.spec() for t in trainq.load_task_modules({}).tasks.values() if t.module == "builtin_tasks.tasks"]
        catalogue.publish("published-by-the-test-session", builtin)
        admin = users.first_admin() or users.create_user("admin", admin=True)
        TOKENS["admin"] = users.create_token(admin, "test session")[1]
    return application


@pytest.fixture
def ctx(app: Flask) -> Iterator[Flask]:
    """An app context over clean state: empty tables, empty Redis."""
    with app.app_context():
        db.session.execute(text("TRUNCATE training_jobs, sweeps CASCADE"))
        db.session.commit()
        redis_connection.get().flushdb()
        yield app
        db.session.remove()


@pytest.fixture
def client(ctx: Flask):
    return ctx.test_client()


@pytest.fixture
def anon(ctx: Flask):
    """A test client with no credentials at all."""
    return ctx.test_client(token=None)


_users = itertools.count()


@pytest.fixture
def make_user(ctx: Flask):
    """Factory: a new user (admin or not) and a test client that sends their token."""
    from api.service import users

    def make(prefix: str = "user", admin: bool = False, **limits: int):
        user = users.create_user(f"{prefix}-{next(_users)}-{uuid.uuid4().hex[:6]}", admin=admin, **limits)
        _, raw = users.create_token(user, "test")
        return user, ctx.test_client(token=raw), raw

    return make


@pytest.fixture
def admin_token(app: Flask) -> str:
    return TOKENS["admin"]


@pytest.fixture
def redis(ctx: Flask):
    return redis_connection.get()


_names = itertools.count()


@pytest.fixture
def workers(settings: dict[str, str], ctx: Flask, tmp_path: Path) -> Iterator:
    """Factory for real worker processes; all are SIGKILLed (with their horses) at teardown."""
    started: list[WorkerProcess] = []

    def start(name: str | None = None, **env: str) -> WorkerProcess:
        worker = start_worker({**settings, **env}, name or f"w{next(_names)}-{tmp_path.name[:20]}", tmp_path,
                              redis_connection.get())
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


@pytest.fixture
def reconcilers(settings: dict[str, str], ctx: Flask, tmp_path: Path) -> Iterator:
    """Factory for real ``flask --app api reconciler`` processes, killed at teardown."""
    started: list[WorkerProcess] = []

    def start(**env: str) -> WorkerProcess:
        process = start_flask({**settings, **env}, f"reconciler{len(started)}", tmp_path, "reconciler")
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


PLACEHOLDER_HOST = "published-by-the-test-session"  # the name the session published the built-in tasks under


@pytest.fixture
def placeholder_host(app: Flask) -> Iterator[str]:
    """A host registered for the test (its agent's lock held by a connection of the test's) offering the built-in
    tasks with room for everything: jobs are placed on it and enqueued on its queue, and no one runs them. For
    tests without a worker that need jobs in RQ; with real workers it would take jobs they should run."""
    from api.scheduler.hosts import Inventory, register, seen
    from api.worker.liveness import Beat

    with app.app_context():
        conn = db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        host_id = register(conn, Inventory(name=PLACEHOLDER_HOST, hostname="the-tests", cpus=1024, memory_mb=2**22,
                                           slots=1024))
        beat = Beat("placeholder-host", 1.0, lambda: seen(conn, host_id))  # heard from, as an agent is
        beat.start()
        try:
            yield PLACEHOLDER_HOST
        finally:
            beat.stop()
            conn.execute(text("SELECT pg_advisory_unlock_all()"))  # free now: the next test registers it again
            conn.invalidate()  # closed for good, never back to the pool
            conn.close()

