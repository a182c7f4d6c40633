"""The tasks workers offer: what each worker published when it started, and params validated against the
published JSON Schema. The API never imports a task's code (it may run where the task's dependencies or
GPUs are not): it knows a task only by what a worker published."""

from __future__ import annotations

import functools
import json
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from redis.exceptions import RedisError
from sqlalchemy import delete, func, select

from api import queue
from api.record.tables import TaskOffer
from api.stores import db


class TaskRejected(ValueError):
    """An unknown task or params its schema refuses (a 422); ``field`` names what to fix."""

    def __init__(self, code: str, message: str, field: str) -> None:
        super().__init__(message)
        self.code, self.message, self.field = code, message, field


class WorkersStarting(RuntimeError):
    """A task no worker has published yet, while an agent is starting (it may be the one to offer it): a 503 with
    ``Retry-After``, not an unknown task."""

    retry_after = 3

    def __init__(self, task: str, agents: list[str]) -> None:
        super().__init__(f"task {task[:100]!r} is not offered yet, and {len(agents)} worker(s) are starting (they "
                         f"publish their tasks once they have imported them): workers are starting; retry in a few "
                         f"seconds")
        self.field = "task"


@dataclass(frozen=True)
class TaskSpec:
    """A task as the newest worker to offer it published it, and how many live workers offer it now."""

    name: str
    description: str
    params_schema: dict[str, Any]
    params_order: list[str]  # the params as the model declares them (JSONB keeps no key order)
    code_version: str
    module: str
    workers: int | None  # None: unknown (Redis unreachable)
    published_at: str
    metric: str | None = None  # the primary metric the task declares, and which way is better
    metric_mode: str | None = None
    resources: dict[str, Any] | None = None  # its jobs' defaults, as the task declares them (@task(resources=))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "params_schema": self.params_schema,
                "params_order": self.params_order, "workers": self.workers, "code_version": self.code_version,
                "module": self.module, "metric": self.metric, "metric_mode": self.metric_mode,
                "resources": self.resources or {},
                "published_at": self.published_at}


def publish(worker_name: str, specs: Iterable[dict[str, Any]]) -> None:
    """Record what ``worker_name`` offers (replacing what it offered before)."""
    now, host = db.session.scalar(select(func.now())), socket.gethostname()  # the database's clock, as every age
    db.session.execute(delete(TaskOffer).where(TaskOffer.worker_name == worker_name))
    for spec in specs:
        db.session.add(TaskOffer(worker_name=worker_name, task=spec["name"], description=spec["description"],
                                 params_schema=spec["params_schema"],
                                 params_order=list(spec["params_schema"].get("properties", {})),
                                 code_version=spec["code_version"],
                                 module=spec["module"], metric=(spec.get("metric") or {}).get("name"),
                                 metric_mode=(spec.get("metric") or {}).get("mode"),
                                 resources=spec.get("resources") or {}, hostname=host, published_at=now))
    db.session.commit()


def catalog() -> dict[str, TaskSpec]:
    """Every task any worker ever offered, by name: its newest published spec and its live workers."""
    offers = db.session.scalars(select(TaskOffer).order_by(TaskOffer.task, TaskOffer.published_at)).all()
    try:
        live: set[str] | None = queue.live_worker_names()
    except RedisError:  # the catalog is PostgreSQL's; only the live counts are unknown while Redis is down
        live = None
    newest: dict[str, TaskOffer] = {}
    workers: dict[str, int | None] = {}
    for offer in offers:
        newest[offer.task] = offer
        if live is None:
            workers[offer.task] = None
        else:
            workers[offer.task] = (workers.get(offer.task) or 0) + queue.any_worker_of(offer.worker_name, live)
    specs = {name: TaskSpec(name, o.description, o.params_schema, o.params_order, o.code_version, o.module,
                            workers[name], o.published_at.isoformat(), o.metric, o.metric_mode, o.resources)
             for name, o in sorted(newest.items())}
    db.session.commit()  # after the rows are read: a commit expires them, and each would be read again, one by one
    return specs


def _path(parts: Iterable[Any]) -> str:
    return ".".join(["params", *(str(part) for part in parts)])


def validate(task: Any, params: Any) -> tuple[TaskSpec, dict[str, Any]]:
    """The task's spec and ``params`` with its top-level defaults filled in; a 422 naming the field otherwise
    (``task``, or ``params.<path>``)."""
    spec = find(task)
    return spec, check_params(spec.name, spec.params_schema, params)


def find(task: Any) -> TaskSpec:
    """The spec of a task some worker published; a 422 naming ``task`` otherwise."""
    if not isinstance(task, str) or not task:
        raise TaskRejected("invalid_task", "task must be the name of a task (GET /api/tasks lists them)", "task")
    known = catalog()
    spec = known.get(task)
    if spec is None:
        try:
            starting = queue.agents_starting()
        except RedisError:
            starting = []
        if starting:
            raise WorkersStarting(task, starting)
        names = ", ".join(known) or "none yet: start a worker"
        raise TaskRejected("unknown_task", f"unknown task {task[:100]!r}; known tasks: {names}", "task")
    return spec


@functools.lru_cache(maxsize=256)
def _validator(schema: str) -> Draft202012Validator:
    """A validator of the schema (JSON text), checked against the metaschema once, not at every submit; a
    ``SchemaError`` (not cached) when it is not a schema."""
    loaded = json.loads(schema)
    Draft202012Validator.check_schema(loaded)
    return Draft202012Validator(loaded)


def check_params(task: str, schema: dict[str, Any], params: Any) -> dict[str, Any]:
    """``params`` checked against ``schema`` (JSON Schema 2020-12, as pydantic writes it), with its top-level
    defaults filled in; ``TaskRejected`` whose ``field`` is the path (``params.lr``) otherwise."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise TaskRejected("invalid_params", "params: must be a JSON object", "params")
    try:
        validator = _validator(json.dumps(schema, sort_keys=True))
    except SchemaError as exc:  # a worker published something that is not a schema
        raise TaskRejected("invalid_task", f"task {task!r} published an invalid params schema: {exc.message}",
                           "task") from None
    errors = sorted(validator.iter_errors(params),
                    key=lambda e: (len(e.absolute_path), [str(part) for part in e.absolute_path]))
    if errors:
        error = errors[0]
        path, message = list(error.absolute_path), error.message
        if error.validator == "required" and isinstance(error.instance, dict):
            path += [name for name in error.validator_value if name not in error.instance][:1]
        properties = schema.get("properties", {})
        unknown = sorted(set(params) - set(properties))
        if error.validator == "additionalProperties" and not path and unknown:
            path, message = unknown[:1], f"unknown field (task {task} takes: {', '.join(properties)})"
        raise TaskRejected("invalid_params", f"{_path(path)}: {message}", _path(path))
    defaults = {name: prop["default"] for name, prop in schema.get("properties", {}).items()
                if "default" in prop and name not in params}
    return {**defaults, **params}
