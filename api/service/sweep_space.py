"""A sweep's search space: each searched param's range (pydantic models), checked first on its own (an empty range,
a choice with no choices, a log range through zero, a grid over a float without a step) and then against the
task's published params schema (a name it does not take, a bound outside its own). Every refusal is a
``TaskRejected`` (a 422) whose ``field`` is the path to fix: ``space.lr.high``."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from api.service.catalogue import TaskRejected, TaskSpec, check_params

Scalar = str | int | float | bool | None


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FloatParam(_Param):
    """A real number in [low, high]; ``log``: drawn on a log scale; ``step``: only low + k * step."""

    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)


class IntParam(_Param):
    """A whole number in [low, high], every ``step`` from low."""

    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int | None = Field(None, ge=1)


class ChoiceParam(_Param):
    """One of ``choices`` (strings, numbers, booleans or null)."""

    type: Literal["choice"]
    choices: list[Scalar]


Param = Annotated[FloatParam | IntParam | ChoiceParam, Field(discriminator="type")]
_PARAM: TypeAdapter[Any] = TypeAdapter(Param)
MAX_PARAMS = 64
MAX_CHOICES = 1000


def _refuse(field: str, message: str) -> TaskRejected:
    return TaskRejected("invalid_space", f"{field}: {message}", field)


def parse(raw: Any) -> dict[str, FloatParam | IntParam | ChoiceParam]:
    """``raw`` (the request's ``space``) as checked params, in its order; a 422 naming the field otherwise."""
    if not isinstance(raw, dict) or not raw:
        raise _refuse("space", "must be an object naming at least one param to search")
    if len(raw) > MAX_PARAMS:
        raise _refuse("space", f"at most {MAX_PARAMS} params")
    space: dict[str, FloatParam | IntParam | ChoiceParam] = {}
    for name, spec in raw.items():
        where = f"space.{name}"
        try:
            param = _PARAM.validate_python(spec)
        except ValidationError as exc:
            error = exc.errors(include_url=False, include_input=False)[0]
            loc = [str(part) for part in error["loc"]][1:]  # the first part is the type's tag
            if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
                loc = ["type"]
                error["msg"] = "must be one of float, int, choice"
            field = ".".join([where, *loc])
            raise _refuse(field, error["msg"][0].lower() + error["msg"][1:]) from None
        _check_range(where, param)
        space[name] = param
    return space


def _check_range(where: str, param: FloatParam | IntParam | ChoiceParam) -> None:
    if isinstance(param, ChoiceParam):
        if not param.choices:
            raise _refuse(f"{where}.choices", "a choice needs at least one value")
        if len(param.choices) > MAX_CHOICES:
            raise _refuse(f"{where}.choices", f"at most {MAX_CHOICES} values")
        if len({repr(c) for c in param.choices}) != len(param.choices):
            raise _refuse(f"{where}.choices", "each value at most once")
        return
    for bound in ("low", "high"):
        value = getattr(param, bound)
        if isinstance(value, float) and not math.isfinite(value):
            raise _refuse(f"{where}.{bound}", "must be a finite number")
    if param.high < param.low or (isinstance(param, FloatParam) and param.high == param.low):
        raise _refuse(f"{where}.high", f"must be above low ({param.low}): the range is empty")
    if param.log:
        if param.low <= 0:
            raise _refuse(f"{where}.low", "a log range starts above 0")
        if param.step not in (None, 1):
            raise _refuse(f"{where}.step", "a log range takes no step")
    if param.step is not None and param.step > param.high - param.low and param.high > param.low:
        raise _refuse(f"{where}.step", f"larger than the range ({param.high - param.low})")


def first_value(param: FloatParam | IntParam | ChoiceParam) -> Any:
    return param.choices[0] if isinstance(param, ChoiceParam) else param.low


def _bounds(param: FloatParam | IntParam | ChoiceParam) -> list[tuple[str, Any]]:
    if isinstance(param, ChoiceParam):
        return [(f"choices.{i}", choice) for i, choice in enumerate(param.choices)]
    return [("low", param.low), ("high", param.high)]


def _types(prop: dict[str, Any]) -> set[str]:
    """The JSON types a param's schema allows (pydantic writes an optional one as anyOf)."""
    found = {prop["type"]} if isinstance(prop.get("type"), str) else set(prop.get("type") or [])
    for option in prop.get("anyOf", []):
        found |= _types(option)
    return found


def check_against(spec: TaskSpec, fixed: Any, space: dict[str, FloatParam | IntParam | ChoiceParam]) -> dict[str, Any]:
    """``fixed`` params (every trial's) with the task's defaults filled in, once the space fits the task's published
    schema: each searched name is a param of the task, each bound (or choice) a value its schema takes."""
    if fixed is not None and not isinstance(fixed, dict):
        raise TaskRejected("invalid_params", "params: must be a JSON object", "params")
    fixed = dict(fixed or {})
    properties = spec.params_schema.get("properties", {})
    for name, param in space.items():
        if name not in properties:
            raise _refuse(f"space.{name}", f"task {spec.name} takes no param {name!r} "
                          f"(it takes: {', '.join(properties) or 'none'})")
        if name in fixed:
            raise TaskRejected("invalid_params", f"params.{name}: searched in space too; give it in one place",
                               f"params.{name}")
        if isinstance(param, FloatParam) and _types(properties[name]) == {"integer"}:
            raise _refuse(f"space.{name}.type", f"param {name} is a whole number: search it as int")
    base = {**fixed, **{name: first_value(param) for name, param in space.items()}}
    try:
        checked = check_params(spec.name, spec.params_schema, base)
    except TaskRejected as exc:
        name = exc.field.removeprefix("params.").split(".")[0]
        if name in space:
            raise _refuse(f"space.{name}.{_bounds(space[name])[0][0]}", exc.message.split(": ", 1)[-1]) from None
        raise
    for name, param in space.items():
        for where, value in _bounds(param)[1:] if not isinstance(param, ChoiceParam) else _bounds(param):
            try:
                check_params(spec.name, spec.params_schema, {**base, name: value})
            except TaskRejected as exc:
                raise _refuse(f"space.{name}.{where}", exc.message.split(": ", 1)[-1]) from None
    return {name: value for name, value in checked.items() if name not in space}


def grid_needs_steps(space: dict[str, FloatParam | IntParam | ChoiceParam]) -> None:
    """The grid sampler walks every value: a float range needs a step (or be a choice)."""
    for name, param in space.items():
        if isinstance(param, FloatParam) and param.step is None:
            raise _refuse(f"space.{name}.step", "the grid sampler needs a step for a float range (or make it a "
                          "choice): an unbounded number of values otherwise")
        if isinstance(param, FloatParam) and param.log:
            raise _refuse(f"space.{name}.log", "the grid sampler walks even steps: no log range")


def as_json(space: dict[str, FloatParam | IntParam | ChoiceParam]) -> dict[str, Any]:
    return {name: param.model_dump(exclude_none=True) for name, param in space.items()}
