"""A host whose agent has not renewed its lease (``seen_at``) for ``LEASE_FENCE`` is offered nothing: cut off from
PostgreSQL, its session not dropped yet, it would be given jobs it cannot take (the jobs it ran move away from it at
that moment). Heard from again, it is placed on at once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text

import trainq
from api import queue
from api.dev.servers import RedisServer
from api.scheduler.hosts import Gpu, Inventory, register, seen
from api.scheduler.schedule import schedule
from api.service import catalogue
from api.stores import db
from tests.conftest import make_app

QUIET = "quiet-gpu-host"


@pytest.fixture
def quiet_host(ctx) -> Iterator[tuple[object, int]]:
    """A live host with one fake GPU offering the built-in tasks, its lease held by a connection of the test's (no
    beat: the test says when it was last heard from)."""
    conn = db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    host_id = register(conn, Inventory(name=QUIET, hostname="nowhere", cpus=4, memory_mb=8192, slots=4,
                                       gpus=(Gpu(0, "fake-quiet-0", "fake GPU", 16384),), fake=True))
    catalogue.publish(QUIET, [t.spec() for t in trainq.load_task_modules({}).tasks.values()
                              if t.module == "builtin_tasks.tasks"])
    db.session.commit()
    try:
        yield conn, host_id
    finally:
        conn.execute(text("SELECT pg_advisory_unlock_all()"))
        conn.invalidate()
        conn.close()
        db.session.execute(text("DELETE FROM task_offers WHERE worker_name = :n"), {"n": QUIET})
        db.session.execute(text("DELETE FROM hosts WHERE name = :n"), {"n": QUIET})
        db.session.commit()


def test_a_host_unheard_for_the_lease_fence_is_offered_nothing_until_heard_again(client, quiet_host):
    conn, host_id = quiet_host
    conn.execute(text("UPDATE hosts SET seen_at = now() - interval '8 seconds' WHERE id = :id"), {"id": host_id})
    response = client.post("/api/training", json={"task": "mlp", "resources": {"gpus": 1}})
    assert response.status_code == 201, response.get_json()  # a live host could run it: accepted
    job_id = response.get_json()["job"]["id"]
    job = client.get(f"/api/training/{job_id}").get_json()
    assert job["placement"] is None and job["status_reason"].startswith("waiting for"), job["status_reason"]
    assert QUIET in [h["name"] for h in client.get("/api/hosts").get_json()["hosts"]]  # listed: its session lives

    seen(conn, host_id)  # heard from again
    assert schedule().placed == [job_id]
    placement = client.get(f"/api/training/{job_id}").get_json()["placement"]
    assert placement["host"] == QUIET and placement["gpus"] == [0]


def test_a_hosts_paused_workers_are_listed_with_why_and_none_when_redis_cannot_say(client, quiet_host, redis,
                                                                                   settings, tmp_path):
    redis.set(queue.paused_key(QUIET), "disk full: no space left on device writing checkpoint to /c")
    redis.set(queue.paused_key(f"{QUIET}-2"), "storage unwritable: /a")  # a worker of its pool
    redis.set(queue.paused_key("another-host"), "disk full")  # not this host's
    try:
        host = {h["name"]: h for h in client.get("/api/hosts").get_json()["hosts"]}[QUIET]
        assert host["paused"] == {QUIET: "disk full: no space left on device writing checkpoint to /c",
                                  f"{QUIET}-2": "storage unwritable: /a"}
    finally:
        for name in (QUIET, f"{QUIET}-2", "another-host"):
            redis.delete(queue.paused_key(name))
    down = make_app(settings, REDIS_URL=RedisServer(tmp_path / "redis").url, REDIS_TIMEOUT=0.5)  # never started
    with down.app_context():
        answer = down.test_client().get("/api/hosts")
        assert answer.status_code == 200  # the hosts are PostgreSQL's; what their workers say is Redis's: unknown
        assert {h["name"]: h for h in answer.get_json()["hosts"]}[QUIET]["paused"] is None
