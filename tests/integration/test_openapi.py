"""The OpenAPI document at /api/openapi.json and the docs page: generated from the models that parse the
requests and shape the answers (api.web.schemas), every JSON operation in it, each task's params schema in it."""

from __future__ import annotations

import pytest
import schemathesis

from api.web import openapi, schemas
from tests.integration.test_api import error_of


def test_every_api_route_is_a_documented_operation(ctx):
    undocumented = [rule.rule for rule in ctx.url_map.iter_rules()
                    if rule.rule.startswith("/api/") and not hasattr(ctx.view_functions[rule.endpoint], "openapi")]
    assert undocumented == []


def test_the_document_is_openapi_3_1_with_every_operation(client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200 and response.headers["ETag"]
    doc = response.get_json()
    assert doc["openapi"] == "3.1.0" and doc["security"] == [{"bearer": []}]
    loaded = schemathesis.openapi.from_dict(doc)  # checks the document against OpenAPI's own schema
    operations = {(op.method.upper(), op.path) for op in (result.ok() for result in loaded.get_all_operations())}
    assert ("POST", "/api/training") in operations and ("DELETE", "/api/training/{job_id}") in operations
    assert len(operations) == len(openapi.operations(client.application)) == 34
    health = doc["paths"]["/api/health"]["get"]
    assert {} in health["security"]  # the one operation that answers without a credential


def test_each_tasks_params_schema_is_in_the_document(client):
    doc = client.get("/api/openapi.json").get_json()
    published = {task["name"]: task["params_schema"] for task in client.get("/api/tasks").get_json()["tasks"]}
    assert {"mlp", "diabetes-regression"} <= set(published)
    components = doc["components"]["schemas"]
    for name, schema in published.items():
        documented = {prop: {k: v for k, v in spec.items() if k != "pattern" or "pattern" in schema["properties"][prop]}
                      for prop, spec in components[f"params.{name}"]["properties"].items()}
        assert documented == schema["properties"]  # as published, free text saying it holds no NUL
    forms = doc["paths"]["/api/training"]["post"]["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    by_task = {form["properties"]["task"]["const"]: form for form in forms if "task" in form["properties"]}
    assert set(by_task) == set(published)
    assert by_task["mlp"]["properties"]["params"]["anyOf"][0] == {"$ref": "#/components/schemas/params.mlp"}
    assert by_task["mlp"]["properties"]["name"]["anyOf"][0]["maxLength"] == 200
    assert "task" not in by_task["mlp"]["properties"]["name"]  # the common fields, from the same model


def test_a_task_with_a_required_param_needs_its_params_in_the_document(app):
    """A task whose params have no default for one of them cannot be submitted without params."""
    doc = openapi.document(app, {"needs-one": {"type": "object", "properties": {"path": {"type": "string"}},
                                               "required": ["path"]},
                                 "all-defaults": {"type": "object", "properties": {"n": {"type": "integer"}}}})
    forms = doc["paths"]["/api/training"]["post"]["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    by_task = {form["title"]: form for form in forms}
    assert by_task["needs-one"]["required"] == ["task", "params"]
    assert by_task["needs-one"]["properties"]["params"] == {"$ref": "#/components/schemas/params.needs-one"}
    assert by_task["all-defaults"]["required"] == ["task"]


def test_a_query_string_is_documented_from_its_model(client):
    doc = client.get("/api/openapi.json").get_json()
    params = {p["name"]: p for p in doc["paths"]["/api/training"]["get"]["parameters"]}
    assert set(params) == set(schemas.ListQuery.model_fields)
    assert params["limit"]["schema"]["maximum"] == schemas.MAX_PAGE and params["limit"]["in"] == "query"
    assert params["status"]["schema"] == {"$ref": "#/components/schemas/JobStatus"}


def test_an_answer_the_model_does_not_declare_fails_loudly_instead_of_drifting():
    with pytest.raises(ValueError, match="extra"):
        schemas.shape(schemas.Logs, {"lines": [], "next_cursor": 0, "truncated": False, "surprise": 1})
    assert schemas.shape(schemas.Submitted, {"job": _job(), "enqueued": True, "message": "m"}).keys() == \
        {"job", "enqueued", "message"}  # an optional field left unset stays out, as before


@pytest.mark.parametrize("body, field", [
    ({"task": "mlp", "max_attempts": True}, "max_attempts"),
    ({"task": "mlp", "max_attempts": "3"}, "max_attempts"),
    ({"task": "mlp", "name": "tab\there"}, "name"),
    ({"task": "mlp", "name": "   "}, "name"),
    ({"task": "mlp", "params": [1]}, "params"),
    ({"config": {}, "task": "mlp"}, "config"),
    ({"name": "no task"}, "task"),
])
def test_bodies_the_models_refuse_name_the_field(client, body, field):
    assert error_of(client.post("/api/training", json=body), 422)["field"] == field


@pytest.mark.parametrize("since, status", [("0115-01-18T13:32:39-22:21", 200), ("2026-11-26", 200),
                                           ("0001-01-01T00:00:00+01:00", 400)])  # before year 1 in UTC
def test_any_iso_date_time_is_a_bound_of_the_list_never_a_500(client, since, status):
    """ISO offsets reach 23:59, PostgreSQL's stop at 15:59: found by the fuzzing, a 500 before."""
    response = client.get("/api/training", query_string={"since": since})
    assert response.status_code == status and (status == 200 or error_of(response, 400)["field"] == "since")


def test_a_whole_number_written_as_a_float_is_an_integer_as_json_schema_says(client):
    response = client.post("/api/training", json={"task": "mlp", "max_attempts": 2.0})
    assert response.status_code == 201 and response.get_json()["job"]["max_attempts"] == 2


def test_the_docs_page_shows_every_operation_and_the_monitor_links_it(client):
    html = client.get("/docs").get_data(as_text=True)
    doc = client.get("/api/openapi.json").get_json()
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            assert f'id="{op["operationId"]}"' in html and f"{method.upper()} {path}" in html
    assert 'id="schema-params.mlp"' in html and "hidden_sizes" in html
    assert 'href="/docs"' in client.get("/").get_data(as_text=True)


def _job() -> dict:
    fields = schemas.Job.model_fields
    sample = {"id": "00000000-0000-0000-0000-000000000000", "name": "n", "owner_id": 1, "owner": "o",
              "status": "queued", "task": "mlp", "params": {}, "epoch": 0, "step": 0, "attempts": 1,
              "max_attempts": 1, "created_at": "2026-01-01T00:00:00+00:00", "updated_at": "2026-01-01T00:00:00+00:00",
              "log_truncated": False, "stale": False, "history": []}
    return {name: sample.get(name) for name in fields}
