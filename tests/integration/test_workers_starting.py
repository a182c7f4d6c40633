"""A submit of a task no worker has published yet, while an agent is starting (it says so in Redis until it has
published): a 503 with Retry-After, "workers are starting; retry in a few seconds", not a 422 unknown task."""

from __future__ import annotations

from api.queue import starting_key


def test_a_task_not_yet_published_while_an_agent_starts_is_retry_soon(client, redis):
    body = {"name": "early", "task": "offered-in-a-moment", "params": {}}
    before = client.post("/api/training", json=body)
    assert before.status_code == 422 and before.get_json()["error"]["code"] == "unknown_task"

    redis.set(starting_key("agent-starting-now"), "starting", ex=30)
    starting = client.post("/api/training", json=body)
    assert starting.status_code == 503, starting.get_json()
    error = starting.get_json()["error"]
    assert error["code"] == "workers_starting" and error["field"] == "task"
    assert "workers are starting; retry in a few seconds" in error["message"]
    assert int(starting.headers["Retry-After"]) > 0

    redis.delete(starting_key("agent-starting-now"))  # it published (or died): unknown again
    assert client.post("/api/training", json=body).status_code == 422
