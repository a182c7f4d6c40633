"""The ``@task`` registry and the discovery of task modules.

Modules are found through the entry point group ``trainq.tasks`` (each entry point's value is a module:
importing it registers its tasks) and through ``TRAINQ_TASKS`` (comma-separated import paths of modules
that are not installed as packages). A worker imports them once, at start.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import re
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel

from trainq.resources import Resources

ENTRY_POINT_GROUP = "trainq.tasks"
MODULES_VARIABLE = "TRAINQ_TASKS"
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
METRIC = re.compile(r"[A-Za-z0-9_.:/][A-Za-z0-9_.:/-]{0,99}")  # as the list's metric sort takes them


class TaskError(ValueError):
    """A task is declared wrongly (bad name, params that are not a pydantic model, a name taken twice)."""


@dataclass(frozen=True)
class Task:
    name: str
    func: Callable[..., Any]
    params: type[BaseModel]
    description: str
    module: str
    metric: str | None = None  # the primary metric: the list's main column and default sort
    mode: str = "min"  # "min": lower is better; "max": higher is better
    resources: Resources | None = None  # what its jobs need unless a submit says otherwise
    fail_on_nan: bool = False  # a non-finite objective (its primary metric, or a loss) fails its jobs

    def params_schema(self) -> dict[str, Any]:
        """The params' JSON Schema, as pydantic writes it (what the API validates a submission against)."""
        return self.params.model_json_schema()

    def code_version(self) -> str:
        """A hash of the task's module source (or, without a source file, of its name and schema), as it was when
        first asked (a worker asks when it publishes its tasks, right after importing them: the code its jobs
        run, even if the file changes later)."""
        cached = _code_versions.get((self.module, self.name))
        if cached is None:
            cached = _code_versions[(self.module, self.name)] = self._hash_source()
        return cached

    def _hash_source(self) -> str:
        module = sys.modules.get(self.module)
        try:
            source = inspect.getsource(module) if module else ""
        except (OSError, TypeError):
            source = ""
        digest = hashlib.sha256((source or f"{self.name}:{self.params_schema()}").encode())
        return digest.hexdigest()[:16]

    def spec(self) -> dict[str, Any]:
        """What a worker publishes about this task."""
        return {"name": self.name, "description": self.description, "params_schema": self.params_schema(),
                "code_version": self.code_version(), "module": self.module,
                "metric": {"name": self.metric, "mode": self.mode} if self.metric else None,
                "resources": self.resources.given() if self.resources else {}}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)


_registry: dict[str, Task] = {}
_code_versions: dict[tuple[str, str], str] = {}


def registry() -> dict[str, Task]:
    """Every task registered in this process, by name."""
    return dict(_registry)


def task(name: str, *, params: type[BaseModel], metric: str | None = None, mode: str = "min",
         resources: Resources | None = None, fail_on_nan: bool = False) -> Callable[[Callable[..., Any]], Task]:
    """Register ``func(ctx, params) -> dict`` as the task ``name``; its docstring is the description.

    ``params`` is a pydantic model: the service publishes its JSON Schema and validates submissions
    against it, and the worker builds the model from the submitted params before calling ``func``.
    ``metric`` names the task's primary metric (one it reports) and ``mode`` which way is better ("min" or
    "max"): the jobs list shows it as its main column and sorts a task's jobs by it. ``resources`` are its jobs'
    defaults (``Resources(gpus=1)``): a submit's own values come first. ``fail_on_nan``: a job ends failed
    ("loss became NaN at step 812") when its primary metric or a loss (``loss``, ``*_loss``) is reported NaN or
    infinite (a submit's ``fail_on_nan`` overrides it).
    """
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise TaskError(f"task name {name!r}: use 1 to 64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit")
    if not (isinstance(params, type) and issubclass(params, BaseModel)):
        raise TaskError(f"task {name!r}: params must be a pydantic BaseModel subclass, got {params!r}")
    if metric is not None and not (isinstance(metric, str) and METRIC.fullmatch(metric)):
        raise TaskError(f"task {name!r}: metric {metric!r} is not a metric name (letters, digits, '_', '.', '/', ':')")
    if resources is not None and not isinstance(resources, Resources):
        raise TaskError(f"task {name!r}: resources must be a trainq.Resources, got {resources!r}")
    if mode not in ("min", "max"):
        raise TaskError(f"task {name!r}: mode must be 'min' (lower is better) or 'max', not {mode!r}")

    def register(func: Callable[..., Any]) -> Task:
        existing = _registry.get(name)
        if existing and (existing.module, existing.func.__qualname__) != (func.__module__, func.__qualname__):
            raise TaskError(f"task {name!r} is declared twice: in {existing.module} and in {func.__module__}")
        description = inspect.cleandoc(func.__doc__ or "").split("\n\n")[0].replace("\n", " ")
        registered = Task(name, func, params, description, func.__module__, metric, mode, resources,
                          bool(fail_on_nan))
        _registry[name] = registered
        return registered

    return register


@dataclass
class LoadReport:
    modules: list[str] = field(default_factory=list)  # imported
    errors: dict[str, str] = field(default_factory=dict)  # module -> traceback

    @property
    def tasks(self) -> dict[str, Task]:
        return registry()


def task_modules(environ: dict[str, str] | None = None) -> list[str]:
    """The modules to import: each ``trainq.tasks`` entry point's value, then ``TRAINQ_TASKS``'s."""
    env = os.environ if environ is None else environ
    found = [ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)]
    found += [name.strip() for name in env.get(MODULES_VARIABLE, "").split(",") if name.strip()]
    return list(dict.fromkeys(found))


def load_task_modules(environ: dict[str, str] | None = None) -> LoadReport:
    """Import every task module once. A module that fails to import (or declares a task wrongly) is reported
    with its traceback, and the tasks it had registered before failing are dropped: it offers nothing."""
    report = LoadReport()
    for module in task_modules(environ):
        before = set(_registry)
        try:
            importlib.import_module(module)
        except Exception:  # a user's module may raise anything; the worker runs on without it
            report.errors[module] = traceback.format_exc()
            for name in set(_registry) - before:
                del _registry[name]
            continue
        report.modules.append(module)
    return report
