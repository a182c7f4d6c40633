"""A job with a long history (issue 21, item 5): its read carries only the last 1,000 reports, its ETag is the
row's version (a 304 reads no history), and the whole series stays at /history, paged or downsampled."""

from __future__ import annotations

import re
import time

from sqlalchemy import event, text

from api.service.history import INLINE_POINTS
from api.stores import db
from api.web import schemas
from tests.support import SHORT, submit

POINTS = 20_000


def _long_history(job_id: str, points: int = POINTS) -> None:
    db.session.execute(text(
        "UPDATE training_jobs SET history = (SELECT jsonb_agg(jsonb_build_object('epoch', i, 'step', i * 10, "
        "'loss', 1.0 / i, 'val_accuracy', CASE WHEN i = 777 THEN 0.99 ELSE 0.5 END) ORDER BY i) "
        "FROM generate_series(1, :n) AS i), updated_at = now() WHERE id = :id"), {"n": points, "id": job_id})
    db.session.commit()


def test_a_long_history_is_capped_inline_and_whole_at_history(client):
    job_id = submit(client, SHORT)
    _long_history(job_id)
    response = client.get(f"/api/training/{job_id}")
    job = response.get_json()
    assert job["history_truncated"] is True and job["history_length"] == POINTS
    assert [entry["epoch"] for entry in job["history"]] == list(range(POINTS - 999, POINTS + 1))
    assert len(response.data) < 200_000

    paged = client.get(f"/api/training/{job_id}/history", query_string={"offset": 10, "limit": 5}).get_json()
    assert [entry["epoch"] for entry in paged["history"]] == [11, 12, 13, 14, 15]
    assert paged["history_length"] == POINTS
    assert len(client.get(f"/api/training/{job_id}/history").get_json()["history"]) == POINTS
    sampled = client.get(f"/api/training/{job_id}/history", query_string={"points": 200}).get_json()["history"]
    assert 100 <= len(sampled) <= 2000
    assert any(entry["epoch"] == 777 for entry in sampled)  # the spike survives downsampling (min/max per bucket)
    epochs = [entry["epoch"] for entry in sampled]
    assert epochs == sorted(epochs) and epochs[0] == 1 and epochs[-1] == POINTS
    bad = client.get(f"/api/training/{job_id}/history", query_string={"points": "abc"})
    assert bad.status_code == 400 and bad.get_json()["error"]["field"] == "points"


def test_the_etag_is_the_rows_version_and_a_304_is_cheap(client):
    job_id = submit(client, SHORT)
    _long_history(job_id)
    first = client.get(f"/api/training/{job_id}")
    etag = first.headers["ETag"]
    started = time.perf_counter()
    for _ in range(20):
        again = client.get(f"/api/training/{job_id}", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.headers["ETag"] == etag
    assert (time.perf_counter() - started) / 20 < 0.05  # loose: the benchmark measures it (BENCHMARKS.md)
    short = client.get(f"/api/training/{job_id}/events")  # other reads keep their payload ETags
    assert short.headers["ETag"]
    db.session.execute(text("UPDATE training_jobs SET updated_at = now() WHERE id = :id"), {"id": job_id})
    db.session.commit()
    changed = client.get(f"/api/training/{job_id}", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag


def test_the_read_its_304_and_the_job_pages_polls_never_read_the_whole_history(client):
    """The recent reports are stored apart (``history_recent``, ``history_length``): neither the full answer nor
    the 304 names the ``history`` column in any statement (PostgreSQL would detoast all of it to cut its end), nor
    does the job page or anything else it polls (the column is deferred: only an explicit read loads it)."""
    job_id = submit(client, SHORT)
    _long_history(job_id)
    statements: list[str] = []

    def seen(conn, cursor, statement: str, *args: object) -> None:
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        first = client.get(f"/api/training/{job_id}")
        again = client.get(f"/api/training/{job_id}", headers={"If-None-Match": first.headers["ETag"]})
        polled = [client.get(f"/api/training/{job_id}/{part}").status_code
                  for part in ("events", "logs", "checkpoints", "artifacts", "trackers")]
        page = client.get(f"/jobs/{job_id}")
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    assert first.status_code == 200 and again.status_code == 304 and page.status_code == 200
    assert polled == [200] * 5
    body = first.get_json()  # the recent history goes out as PostgreSQL wrote it: still the spec's answer
    assert first.mimetype == "application/json" and schemas.JobDetail.model_validate(body)
    assert body["history_length"] == POINTS and body["history"][-1]["epoch"] == POINTS
    assert len(body["history"]) == INLINE_POINTS  # what migration 0012's trigger keeps: the two must agree
    whole = [s for s in statements if re.search(r"\bhistory\b", s)]  # history_recent and history_length may
    assert statements and not whole, whole


def test_the_job_page_inlines_the_capped_history(client):
    job_id = submit(client, SHORT)
    _long_history(job_id)
    page = client.get(f"/jobs/{job_id}")
    assert page.status_code == 200 and len(page.data) < 300_000 and b'"history_truncated": true' in page.data
