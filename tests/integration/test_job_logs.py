"""A job's log: lines while it runs (Redis), the whole log after (PostgreSQL), cursors, prints, the size cap."""

from __future__ import annotations

import logging

from api.record.joblog import JobLogCapture
from api.stores import db
from tests.support import submit


def lines_of(client, job_id, after=0):
    response = client.get(f"/api/training/{job_id}/logs?after={after}")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_lines_come_live_then_outlive_redis(client, redis):
    job_id = submit(client, {})
    log = logging.getLogger("trainer-under-test")
    log.setLevel(logging.INFO)  # pytest leaves the root at WARNING; the horse runs at LOG_LEVEL (INFO)
    with JobLogCapture(job_id, 1, redis, db.engine, max_lines=100, ttl=60):
        log.info("epoch %d done", 1)
        print("a line the model printed")
        log.warning("two\nlines")
        live = lines_of(client, job_id)
        assert [line["n"] for line in live["lines"]] == [1, 2, 3, 4] and live["next_cursor"] == 4
        assert live["lines"][0]["line"].endswith("trainer-under-test: epoch 1 done")
        assert live["lines"][1]["line"] == "a line the model printed"
        assert lines_of(client, job_id, after=3)["lines"][0]["line"] == "lines"
        assert lines_of(client, job_id, after=4) == {"lines": [], "next_cursor": 4, "truncated": False}
    redis.flushdb()  # the attempt ended: the whole log is in PostgreSQL now
    saved = lines_of(client, job_id)
    assert [line["n"] for line in saved["lines"]] == [1, 2, 3, 4] and saved["truncated"] is False

    with JobLogCapture(job_id, 2, redis, db.engine, max_lines=100, ttl=60):  # a second attempt continues
        log.info("attempt two")
    assert lines_of(client, job_id, after=4)["lines"] == [{"n": 5, "line": lines_of(client, job_id, 4)["lines"][0]
                                                           ["line"]}]
    assert lines_of(client, job_id, after=4)["lines"][0]["line"].endswith("attempt two")


def test_a_log_past_the_cap_says_it_was_truncated(client, redis):
    job_id = submit(client, {})
    log = logging.getLogger("chatty")
    log.setLevel(logging.INFO)
    with JobLogCapture(job_id, 1, redis, db.engine, max_lines=5, ttl=60):
        for i in range(20):
            log.info("line %d", i)
    body = lines_of(client, job_id)
    assert len(body["lines"]) == 5 and body["truncated"] is True
    assert body["lines"][-1]["line"] == "[log truncated: this job wrote more than 5 lines]"


def test_bad_cursors(client):
    job_id = submit(client, {})
    for query, field in (("after=-1", "after"), ("after=x", "after"), ("limit=0", "limit"), ("limit=5001", "limit")):
        response = client.get(f"/api/training/{job_id}/logs?{query}")
        assert response.status_code == 400 and response.get_json()["error"]["field"] == field
    assert client.get("/api/training/not-a-job/logs").status_code == 404


def test_a_cancel_and_a_mark_failed_are_written_into_the_log_after_what_the_attempt_wrote(client, redis, make_user):
    """Issue 23, item 17: the log never just stops. The stop comes after every line the attempt wrote, those of an
    attempt killed before it saved them (in the Redis stream only) included; each line once, in order."""
    user, alice, _ = make_user("alice")
    job_id = submit(alice, {})
    capture = JobLogCapture(job_id, 1, redis, db.engine, max_lines=100, ttl=60)
    for n in range(3):
        capture.add(f"streamed line {n}")  # never saved: as a horse SIGKILLed mid-attempt
    assert client.delete(f"/api/training/{job_id}").status_code == 200  # an admin cancels alice's job
    lines = lines_of(client, job_id)["lines"]
    assert [line["n"] for line in lines] == [1, 2, 3, 4]
    assert lines[3]["line"].endswith(f"INFO api.service.jobs: job {job_id}: cancelled by admin (api): "
                                     "cancelled by user")
    redis.flushdb()
    assert [line["n"] for line in lines_of(client, job_id)["lines"]] == [1, 2, 3, 4]  # all of it in PostgreSQL

    queued = submit(alice, {})
    assert alice.post(f"/api/training/{queued}/mark-failed", json={"reason": "stuck"}).status_code == 200
    [line] = lines_of(client, queued)["lines"]
    assert line["line"].endswith(f"job {queued}: failed by {user.name} (api): "
                                 "marked failed by user: stuck")
