"""Issue #14 through the API: list filters (name, date, owner), sorting by a final metric with its own cursor,
clone (``cloned_from``), and a job's metric history exported as JSON and CSV."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import text, update

from api.record.status import utcnow
from api.record.tables import TrainingJob
from api.stores import db
from tests.support import submit


def set_row(job_id: str, **values) -> None:
    db.session.execute(update(TrainingJob).where(TrainingJob.id == uuid.UUID(job_id)).values(**values))
    db.session.commit()


def names(client, query: str) -> list[str]:
    response = client.get(f"/api/training?{query}")
    assert response.status_code == 200, response.get_json()
    return [job["name"] for job in response.get_json()["jobs"]]


def error_field(response, status: int = 400) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()["error"]["field"]


def test_name_substring_any_case_and_like_characters_are_plain(client):
    for name in ("resnet-lr-0.1", "ResNet-lr-0.01", "mlp_base", "mlp%x"):
        submit(client, {"epochs": 1}, name=name)
    assert sorted(names(client, "name=resnet")) == ["ResNet-lr-0.01", "resnet-lr-0.1"]
    assert names(client, "name=0.01") == ["ResNet-lr-0.01"]
    assert names(client, "name=_") == ["mlp_base"]  # not LIKE's any-character
    assert names(client, "name=%25") == ["mlp%x"]
    assert names(client, "name=nothing-like-it") == []
    assert names(client, "name=resnet&status=queued&task=mlp") == names(client, "name=resnet")
    assert error_field(client.get("/api/training?name=" + "x" * 201)) == "name"


def test_since_and_until_filter_by_creation_date(client):
    old, new = submit(client, {"epochs": 1}, name="old"), submit(client, {"epochs": 1}, name="new")
    now = utcnow()
    set_row(old, created_at=now - timedelta(days=3))
    day = (now - timedelta(days=3)).date().isoformat()
    assert names(client, f"since={day}") == ["new", "old"]
    assert names(client, f"until={day}") == ["old"]  # a plain date takes in that whole day
    assert names(client, f"since={(now - timedelta(days=1)).date().isoformat()}") == ["new"]
    stamp = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert names(client, f"since={stamp}") == ["new"] and names(client, f"until={stamp}") == ["old"]
    assert new
    for bad in ("yesterday", "2026-13-01", "2026-11-26T25:00"):
        assert error_field(client.get(f"/api/training?since={bad}")) == "since"
    assert error_field(client.get("/api/training?until=soon")) == "until"


def test_owner_filter_and_every_user_reads_the_list(client, make_user):
    _, alice, _ = make_user("alice")
    mine = submit(client, {"epochs": 1}, name="admin's")
    theirs = submit(alice, {"epochs": 1}, name="alice's")
    alice_name = alice.get(f"/api/training/{theirs}").get_json()["owner"]
    assert names(client, f"owner={alice_name}") == ["alice's"]
    assert names(alice, "owner=nobody-by-that-name") == []
    assert mine


def test_sort_by_a_final_metric_best_first_paged_by_its_cursor(client):
    losses = {"a": 0.5, "b": 0.1, "c": 0.9, "d": 0.3, "e": 0.7}
    for name, loss in losses.items():
        job_id = submit(client, {"epochs": 1}, name=name)
        set_row(job_id, metrics={"val_loss": loss, "val_accuracy": 1 - loss})
    submit(client, {"epochs": 1}, name="no metrics yet")
    set_row(submit(client, {"epochs": 1}, name="not a number"), metrics={"val_loss": "n/a"})
    assert names(client, "sort=val_loss") == ["b", "d", "a", "e", "c"]  # lowest first, the rest left out
    assert names(client, "sort=-val_accuracy") == ["b", "d", "a", "e", "c"]  # highest first
    seen, cursor = [], None
    while True:
        page = client.get("/api/training?sort=-val_loss&limit=2" + (f"&cursor={cursor}" if cursor else "")).get_json()
        seen += [job["name"] for job in page["jobs"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ["c", "e", "a", "d", "b"]
    newest_cursor = client.get("/api/training?limit=1").get_json()["next_cursor"]
    assert error_field(client.get(f"/api/training?sort=val_loss&cursor={newest_cursor}")) == "cursor"
    assert error_field(client.get("/api/training?sort=val loss")) == "sort"
    assert names(client, "sort=no_such_metric") == []


def test_clone_records_its_source_and_a_bad_source_is_refused_naming_the_field(client, make_user):
    source = submit(client, {"epochs": 2, "seed": 4}, name="first")
    response = client.post("/api/training", json={"task": "mlp", "params": {"epochs": 3, "seed": 4},
                                                  "name": "first again", "cloned_from": source})
    assert response.status_code == 201, response.get_json()
    clone = response.get_json()["job"]
    assert clone["cloned_from"] == source and clone["params"]["epochs"] == 3
    assert client.get(f"/api/training/{clone['id']}").get_json()["cloned_from"] == source
    assert client.get(f"/api/training/{source}").get_json()["cloned_from"] is None
    for bad, status in ((str(uuid.uuid4()), 404), ("not-an-id", 422), (5, 422)):  # 404: a well-formed id of no job
        response = client.post("/api/training", json={"task": "mlp", "params": {}, "cloned_from": bad})
        assert error_field(response, status) == "cloned_from"
    assert db.session.query(TrainingJob).count() == 2  # nothing was created by the refused ones
    db.session.commit()


@pytest.fixture
def reported(client) -> str:
    job_id = submit(client, {"epochs": 3}, name="lr 0.1, run/1")
    set_row(job_id, history=[{"epoch": 1, "step": 10, "train_loss": 1.5, "val_loss": 1.25},
                             {"epoch": 2, "step": 20, "train_loss": 0.75, "val_loss": 0.5},
                             {"step": 25, "loss": 0.6}])
    return job_id


def test_history_exports_as_json_and_csv(client, reported):
    response = client.get(f"/api/training/{reported}/history")
    assert response.status_code == 200
    body = response.get_json()
    assert body["columns"] == ["epoch", "step", "loss", "train_loss", "val_loss"]
    assert body["history"][1] == {"epoch": 2, "step": 20, "train_loss": 0.75, "val_loss": 0.5}
    assert body["job_id"] == reported and body["name"] == "lr 0.1, run/1"
    response = client.get(f"/api/training/{reported}/history?format=csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"] == \
        f'attachment; filename="lr-0.1-run-1-{reported[:8]}-history.csv"'
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows == [["epoch", "step", "loss", "train_loss", "val_loss"], ["1", "10", "", "1.5", "1.25"],
                    ["2", "20", "", "0.75", "0.5"], ["", "25", "0.6", "", ""]]
    assert error_field(client.get(f"/api/training/{reported}/history?format=xml")) == "format"


def test_history_of_an_unknown_job_is_a_404_and_needs_a_token(client, anon, reported):
    for job_id in (str(uuid.uuid4()), "nope"):
        response = client.get(f"/api/training/{job_id}/history?format=csv")
        assert response.status_code == 404 and response.get_json()["error"]["code"] == "job_not_found"
    assert anon.get(f"/api/training/{reported}/history").status_code == 401


def test_the_sort_index_follows_every_write_of_the_metrics(client):
    job_id = submit(client, {"epochs": 1}, name="x")

    def indexed() -> dict:
        rows = db.session.execute(text("SELECT name, value FROM job_metric_values WHERE job_id = :id"),
                                  {"id": uuid.UUID(job_id)}).all()
        db.session.commit()
        return dict(rows)

    assert indexed() == {}
    set_row(job_id, metrics={"val_loss": 0.5, "note": "text", "big": 1e300, "n": 3})
    assert indexed() == {"val_loss": 0.5, "n": 3.0}  # numbers only (1e300 is past what it keeps)
    set_row(job_id, metrics={"val_loss": 0.25})
    assert indexed() == {"val_loss": 0.25}
    earlier = utcnow() - timedelta(days=1)
    set_row(job_id, created_at=earlier)  # the keyset's tie-break follows the job's creation time
    assert db.session.scalar(text("SELECT created_at FROM job_metric_values WHERE job_id = :id"),
                             {"id": uuid.UUID(job_id)}) == earlier
    db.session.commit()
    set_row(job_id, metrics=None)
    assert indexed() == {}
    set_row(job_id, metrics={"val_loss": 0.1})
    client.delete(f"/api/training/{job_id}")
    db.session.execute(text("DELETE FROM training_jobs WHERE id = :id"), {"id": uuid.UUID(job_id)})
    db.session.commit()
    assert indexed() == {}
