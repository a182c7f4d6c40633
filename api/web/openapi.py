"""The JSON API's operations, and the OpenAPI 3.1 document generated from them.

A view of the API is wrapped by ``operation``: it parses the query string and the JSON body with the
operation's models (``api.web.schemas``), hands them to the view, and shapes whatever the view returns through
the model of the answer's status code. ``document`` walks the app's URL map and writes the same models out
as ``/api/openapi.json``, with each task's params schema as its workers published it. So a field the code
reads or writes is in the spec, or the request fails a test (``tests/integration/test_openapi.py``), and the
fuzzing in ``tests/e2e/test_fuzz.py`` checks every answer against the spec.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import wraps
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api.web import schemas
from api.web.schemas import ApiError, M

REF = "#/components/schemas/{model}"
BINARY = "binary"  # an answer that is a file, not JSON


@dataclass(frozen=True)
class Operation:
    summary: str
    responses: Mapping[int, type[BaseModel] | str]
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    body_optional: bool = False  # an empty body (no content type) reads as {}
    conditional: bool = False  # a weak ETag: a poll that finds nothing changed gets an empty 304
    public: bool = False  # answers without a credential (api.web.auth.PUBLIC_ENDPOINTS)
    errors: tuple[int, ...] = field(default=())  # what else it answers, besides what its parts imply
    media: tuple[str, ...] = ()  # other media types of the 200 answer (text/csv), as a string


def operation(summary: str, responses: Mapping[int, type[BaseModel] | str], **options: Any) -> Callable:
    """Declare a view an operation of the JSON API (see the module's docstring). The view takes ``query`` and
    ``body`` keyword arguments where the operation has them, and returns ``data`` (200), ``(data, status)``,
    ``(data, status, headers)`` or a ``Response`` (a file)."""
    spec = Operation(summary, responses, **options)

    def wrap(view: Callable) -> Callable:
        @wraps(view)
        def run(**kwargs: Any) -> Any:
            if spec.query is not None:
                kwargs["query"] = read_query(spec.query, request.args.to_dict())
            if spec.body is not None:
                kwargs["body"] = schemas.parse(spec.body, json_body(spec.body_optional))
            answer = view(**kwargs)
            if isinstance(answer, Response):
                return answer
            data, status, headers = (*answer, {})[:3] if isinstance(answer, tuple) else (answer, 200, {})
            shaped = schemas.shape(spec.responses[status], data)
            response = jsonify(shaped)
            response.status_code = status
            response.headers.update(headers)
            return conditional(response, shaped) if spec.conditional else response

        run.openapi = spec  # type: ignore[attr-defined]
        return run

    return wrap


# ---------------------------------------------------------------- requests


def json_body(optional: bool = False) -> dict[str, Any]:
    """The request's JSON object; state-changing calls accept nothing else (415), so no HTML form can.
    With ``optional``, an empty body without a content type is an empty object."""
    if optional and not request.get_data(cache=True) and (not request.content_type or request.is_json):
        return {}
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send the body as JSON with Content-Type: application/json")
    try:
        data = json.loads(request.get_data(cache=True), parse_constant=_no_constant)
    except RecursionError:
        raise ApiError(400, "malformed_json", "the body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_body", "the body must be a JSON object")
    _check_text(data, "")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")  # PostgreSQL stores neither a NUL nor a lone UTF-16 surrogate
TEXT = r"^[^\x00\ud800-\udfff]*$"  # the same rule, as a JSON Schema pattern for a task's free-text params


def _check_text(value: Any, path: str, depth: int = 0) -> None:
    """No string in the body (keys included) may hold a NUL or a lone surrogate: a 400 naming where."""
    if depth > 64:
        raise ApiError(400, "malformed_json", "the body is nested too deeply (over 64 levels)", path or None)
    if isinstance(value, str):
        if _BAD_TEXT.search(value):
            raise ApiError(400, "invalid_text", f"{path or 'body'}: a string holds a NUL character or a lone "
                           "UTF-16 surrogate", path or None)
    elif isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            _check_text(key, where, depth + 1)
            _check_text(item, where, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_text(item, f"{path}.{index}" if path else str(index), depth + 1)


def read_query(model: type[M], args: Mapping[str, str]) -> M:
    """A query string as ``model`` (a 400 naming the parameter to fix); no value may hold a control character."""
    for name, value in args.items():
        if _BAD_TEXT.search(value) or any(ch < " " for ch in value):
            raise ApiError(400, "invalid_parameter", f"{name}: holds a control character", name)
    return schemas.parse(model, args, query=True)


# ---------------------------------------------------------------- answers


def _without_ages(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_ages(v) for k, v in value.items() if k != "heartbeat_age_seconds"}
    if isinstance(value, list):
        return [_without_ages(v) for v in value]
    return value


def conditional(response: Response, payload: dict[str, Any]) -> Response:
    """``payload``'s answer with a weak ETag, so a poll that finds nothing changed gets an empty 304
    (If-None-Match). The tag leaves out ``heartbeat_age_seconds``, which grows every instant: a client counts
    it on from its last full answer, and ``stale`` (in the tag) says when it matters."""
    if "ETag" not in response.headers:  # a view that knows its version (api.service.history) sets its own
        canonical = json.dumps(_without_ages(payload), sort_keys=True, separators=(",", ":"), default=str)
        response.set_etag(hashlib.blake2b(canonical.encode(), digest_size=12).hexdigest(), weak=True)
    response.headers["Cache-Control"] = "no-cache"
    return response.make_conditional(request)


def with_json_text(model: type[BaseModel], data: dict[str, Any], status: int = 200, **json_text: str) -> Response:
    """``data`` shaped by ``model`` as ``operation`` shapes an answer, with each field of ``json_text`` added as
    the JSON text given, unparsed: for a large value that comes from the database as JSON already (a job's recent
    history), which parsing and writing again would cost more than the rest of the answer. ``data`` holds each
    such field too, as an empty list (``model`` checks the rest)."""
    shaped = schemas.shape(model, data)
    for name in json_text:
        shaped.pop(name, None)
    head = current_app.json.dumps(shaped, separators=(",", ":"))
    tail = "".join(f",{json.dumps(name)}:{text}" for name, text in json_text.items())
    body = "{" + tail[1:] + "}" if head == "{}" else head[:-1] + tail + "}"
    return current_app.response_class(body + "\n", status=status, mimetype="application/json")


# ---------------------------------------------------------------- the document

_CONVERTER = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")
_PATH_PARAMS = {
    "job_id": {"type": "string", "format": "uuid", "description": "the job's id"},
    "name": {"type": "string", "minLength": 1, "maxLength": 128, "description": "the artifact's file name"},
    "hook_id": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1, "description": "the webhook's id"},
    "delivery_id": {"type": "string", "format": "uuid", "description": "the delivery's id (its idempotency key)"},
    "sweep_id": {"type": "string", "format": "uuid", "description": "the sweep's id"},
}
_ERROR_TEXT = {
    304: "Not modified since the ETag in If-None-Match",
    400: "Bad query string, JSON or Host header (field names it)",
    401: "No credential, or an unknown, expired or revoked token",
    403: "Not allowed: not the job's owner, an admin-only operation, or a token's scope",
    404: "No such job (or artifact); for a submit, no job with the id in cloned_from",
    409: "The job's status does not allow this now (job_status says what it is)",
    413: "The body is over MAX_CONTENT_LENGTH",
    415: "The body is not JSON",
    422: "A field of the body is wrong (field is its path)",
    429: "Too many refused credentials from this address (Retry-After says when to try again); for a submit, "
         "also over the user's limit of queued jobs",
    503: "PostgreSQL or Redis is unreachable; try again shortly. For a submit, also a task no worker has published "
         "yet while workers are starting (Retry-After says when to try again)",
}


def operations(app: Flask) -> list[tuple[str, str, str, Operation]]:
    """(path in OpenAPI's form, method, endpoint, operation) of every documented view, in URL-map order."""
    found = []
    for rule in app.url_map.iter_rules():
        spec = getattr(app.view_functions[rule.endpoint], "openapi", None)
        if spec is None:
            continue
        path = _CONVERTER.sub(r"{\1}", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            found.append((path, method.lower(), rule.endpoint, spec))
    return found


def document(app: Flask, task_params: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``app``'s JSON API; ``task_params`` maps each task to its params schema."""
    ops = operations(app)
    bodies = {spec.body for *_, spec in ops if spec.body is not None}
    answers = {model for *_, spec in ops for model in spec.responses.values() if isinstance(model, type)}
    _, defs = models_json_schema([(model, "validation" if model in bodies else "serialization")
                                  for model in sorted(bodies | answers | {schemas.Error}, key=lambda m: m.__name__)],
                                 ref_template=REF)
    components = dict(defs.get("$defs", {}))
    for task, params in sorted(task_params.items()):
        components.update(_embed(params, f"params.{task}"))
    paths: dict[str, dict[str, Any]] = {}
    for path, method, endpoint, spec in ops:
        paths.setdefault(path, {})[method] = _operation(path, method, endpoint, spec, task_params, ops)
    return {
        "openapi": "3.1.0",
        "info": {"title": "trainq", "version": app.config.get("API_VERSION", "1"),
                 "description": "Training jobs: submit, follow, cancel, pause and resume them. Every operation "
                                "needs a bearer token (flask tokens create) unless marked otherwise. Errors share "
                                "one shape: {\"error\": {\"code\", \"message\", \"field\"}}, field being the "
                                "path to what to fix."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "a token: Authorization: Bearer tq_..."}},
        },
        "security": [{"bearer": []}],
    }


def _operation(path: str, method: str, endpoint: str, spec: Operation, task_params: Mapping[str, dict[str, Any]],
               ops: list[tuple[str, str, str, Operation]]) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": endpoint.replace(".", "_"), "summary": spec.summary,
                          "tags": [endpoint.split(".")[0]]}
    params = [{"name": name, "in": "path", "required": True, "schema": _PATH_PARAMS[name]}
              for name in re.findall(r"{([a-z_]+)}", path)]
    if spec.query is not None:
        schema = spec.query.model_json_schema(ref_template=REF)
        for name, prop in schema["properties"].items():
            prop = _not_null(prop)
            params.append({"name": name, "in": "query", "required": name in schema.get("required", ()),
                           "schema": prop, **({"description": prop["description"]} if "description" in prop else {})})
    if params:
        op["parameters"] = params
    if spec.body is not None:
        body = _submit_forms(task_params) if spec.body is schemas.SubmitRequest else {"$ref": _ref(spec.body)}
        op["requestBody"] = {"required": not spec.body_optional,
                             "content": {"application/json": {"schema": body}}}
    if spec.public:
        op["security"] = [{}, {"bearer": []}]
    responses: dict[str, Any] = {}
    for status, model in sorted(spec.responses.items()):
        if model == BINARY:
            content = {"application/octet-stream": {"schema": {"type": "string", "contentMediaType":
                                                               "application/octet-stream"}}}
        else:
            content = {"application/json": {"schema": {"$ref": _ref(model)}}}
            if status == 200:
                content.update({media: {"schema": {"type": "string"}} for media in spec.media})
        responses[str(status)] = {"description": _describe(model), "content": content}
        if model is schemas.Submitted:
            responses[str(status)]["links"] = _links_to_the_job(ops)
    for status in sorted(_errors(path, method, spec) - set(spec.responses)):
        responses[str(status)] = {"description": _ERROR_TEXT[status]} if status == 304 else {
            "description": _ERROR_TEXT[status], "content": {"application/json": {"schema": {"$ref":
                                                                                            _ref(schemas.Error)}}}}
    op["responses"] = responses
    return op


def _links_to_the_job(ops: list[tuple[str, str, str, Operation]]) -> dict[str, Any]:
    """From a new job's answer to every operation on it (what a client, or a stateful fuzzer, does next)."""
    return {endpoint.split(".")[-1]: {"operationId": endpoint.replace(".", "_"),
                                      "parameters": {"job_id": "$response.body#/job/id"}}
            for path, _, endpoint, _ in ops if re.findall(r"{([a-z_]+)}", path) == ["job_id"]}


def _errors(path: str, method: str, spec: Operation) -> set[int]:
    found = {400, 401, 403, 429, 503, *spec.errors}  # any request: a bad Host header, its credential (refused too
    # often from one address: 429), the database
    if spec.conditional:
        found.add(304)
    if "{" in path or spec.body is schemas.SubmitRequest:  # a job in the path, or the one cloned_from names
        found.add(404)
    if spec.body is not None:
        found |= {413, 415, 422}
    return found


def _ref(model: Any) -> str:
    return REF.format(model=model.__name__)


def _describe(model: Any) -> str:
    if model == BINARY:
        return "The file"
    return (model.__doc__ or model.__name__).strip().splitlines()[0]


def _not_null(prop: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema without pydantic's ``null`` branch: a query string has no null."""
    if "anyOf" in prop:
        branches = [b for b in prop["anyOf"] if b.get("type") != "null"]
        rest = {k: v for k, v in prop.items() if k not in ("anyOf", "default") or (k == "default" and v is not None)}
        if len(branches) == 1:
            return {**branches[0], **rest}
        return {**rest, "anyOf": branches}
    return prop


def _submit_forms(task_params: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """``POST /api/training``'s body: one form per task, its ``params`` that task's schema."""
    base = schemas.SubmitRequest.model_json_schema(ref_template=REF)
    common = {name: prop for name, prop in base["properties"].items() if name not in ("task", "params")}
    forms = []
    for task in sorted(task_params):
        ref = {"$ref": REF.format(model=f"params.{task}")}
        if task_params[task].get("required"):  # a param without a default: params must be sent
            params, required = ref, ["task", "params"]
        else:
            params = {"anyOf": [ref, {"type": "null"}], "description": "left out or null: the task's defaults"}
            required = ["task"]
        forms.append({"type": "object", "title": task, "additionalProperties": False, "required": required,
                      "properties": {"task": {"const": task}, "params": params, **common}})
    return {"oneOf": forms} if forms else base


def _embed(schema: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    """A task's params schema as components: ``name`` and its ``$defs`` beside it (``name.Def``), its
    ``$ref``s pointed at them."""
    defs = schema.get("$defs", {})

    def point(value: Any) -> Any:
        if isinstance(value, dict):
            pointed = {k: (REF.format(model=f"{name}.{v.removeprefix('#/$defs/')}") if k == "$ref"
                           and isinstance(v, str) and v.startswith("#/$defs/") else point(v))
                       for k, v in value.items() if k not in ("$defs", "$schema")}
            if pointed.get("type") == "string" and not pointed.keys() & {"enum", "const", "pattern", "format"}:
                pointed["pattern"] = TEXT  # what PostgreSQL stores: the API refuses the rest (a 400 naming it)
            return pointed
        if isinstance(value, list):
            return [point(v) for v in value]
        return value

    found = {name: point(schema)}
    for def_name, definition in defs.items():
        found[f"{name}.{def_name}"] = point(definition)
    return found
