"""A sweep's space, checked on its own and against the task's published params schema: every refusal names the
field to fix (``space.lr.high``)."""

from __future__ import annotations

import pytest

import trainq
from api.record import sweep_study
from api.service import sweep_space
from api.service.catalogue import TaskRejected, TaskSpec


@pytest.fixture(scope="module")
def diabetes() -> TaskSpec:
    task = trainq.load_task_modules({}).tasks["diabetes-regression"]
    spec = task.spec()
    return TaskSpec(spec["name"], spec["description"], spec["params_schema"], list(spec["params_schema"]["properties"]),
                    spec["code_version"], spec["module"], 1, "now", "val_mse", "min")


def refused(spec: TaskSpec, space: object, fixed: object = None, grid: bool = False) -> str:
    with pytest.raises(TaskRejected) as caught:
        parsed = sweep_space.parse(space)
        if grid:
            sweep_space.grid_needs_steps(parsed)
        sweep_space.check_against(spec, fixed, parsed)
    assert caught.value.message.startswith(caught.value.field + ":"), caught.value.message
    return caught.value.field


GOOD = {"lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
        "hidden": {"type": "int", "low": 16, "high": 256, "step": 16},
        "batch_size": {"type": "choice", "choices": [16, 32, 64]}}


def test_a_good_space_passes_and_the_fixed_params_get_the_task_defaults(diabetes):
    parsed = sweep_space.parse(GOOD)
    fixed = sweep_space.check_against(diabetes, {"epochs": 3}, parsed)
    assert fixed["epochs"] == 3 and fixed["seed"] == 0 and "lr" not in fixed and "hidden" not in fixed
    dists = sweep_study.distributions(sweep_space.as_json(parsed))
    assert dists["lr"].log and dists["hidden"].step == 16 and dists["batch_size"].choices == (16, 32, 64)


@pytest.mark.parametrize(("space", "field"), [
    ({}, "space"),
    ([], "space"),
    ({"nope": {"type": "float", "low": 0.1, "high": 0.2}}, "space.nope"),
    ({"lr": {"type": "float", "low": 0.1, "high": 2.0}}, "space.lr.high"),  # the schema's le=1
    ({"lr": {"type": "float", "low": 0.0, "high": 0.1}}, "space.lr.low"),  # the schema's gt=0
    ({"lr": {"type": "float", "low": 0.3, "high": 0.1}}, "space.lr.high"),  # empty
    ({"lr": {"type": "float", "low": 0.1, "high": 0.1}}, "space.lr.high"),  # empty
    ({"lr": {"type": "float", "low": -1.0, "high": 0.1, "log": True}}, "space.lr.low"),
    ({"lr": {"type": "float", "low": 0.1}}, "space.lr.high"),  # missing
    ({"lr": {"type": "float", "low": "x", "high": 0.2}}, "space.lr.low"),
    ({"lr": {"type": "uniform", "low": 0.1, "high": 0.2}}, "space.lr.type"),
    ({"lr": {"low": 0.1, "high": 0.2}}, "space.lr.type"),
    ({"lr": {"type": "float", "low": 0.1, "high": 0.2, "extra": 1}}, "space.lr.extra"),
    ({"hidden": {"type": "int", "low": 0, "high": 64}}, "space.hidden.low"),  # ge=1
    ({"hidden": {"type": "int", "low": 16, "high": 4096}}, "space.hidden.high"),  # le=1024
    ({"hidden": {"type": "int", "low": 64, "high": 16}}, "space.hidden.high"),
    ({"hidden": {"type": "float", "low": 16, "high": 64}}, "space.hidden.type"),  # a whole number
    ({"batch_size": {"type": "choice", "choices": []}}, "space.batch_size.choices"),
    ({"batch_size": {"type": "choice", "choices": [16, 0]}}, "space.batch_size.choices.1"),
    ({"batch_size": {"type": "choice", "choices": [16, 16]}}, "space.batch_size.choices"),
])
def test_bad_spaces_are_refused_naming_the_field(diabetes, space, field):
    assert refused(diabetes, space) == field


def test_fixed_params_are_checked_too(diabetes):
    assert refused(diabetes, GOOD, {"epochs": 0}) == "params.epochs"
    assert refused(diabetes, GOOD, {"lr": 0.1}) == "params.lr"  # searched and fixed: one place only
    assert refused(diabetes, GOOD, {"unknown": 1}) == "params.unknown"


def test_a_grid_needs_a_step_on_every_float(diabetes):
    assert refused(diabetes, {"lr": {"type": "float", "low": 0.1, "high": 0.2}}, grid=True) == "space.lr.step"
    space = {"lr": {"type": "float", "low": 0.1, "high": 0.3, "step": 0.1},
             "hidden": {"type": "int", "low": 16, "high": 64, "step": 16}}
    assert sweep_study.grid(space) == {"lr": [0.1, 0.2, 0.3], "hidden": [16, 32, 48, 64]}
    assert sweep_study.grid_size(space) == 12
