"""The built-in MLP's params: a pydantic model whose published JSON Schema is what the API checks a submission
against. Every refusal names its field as a path under ``params``."""

import pytest

from api.service.catalogue import TaskRejected, check_params
from builtin_tasks.config import TrainingConfig

SCHEMA = TrainingConfig.model_json_schema()


def test_defaults_filled_and_the_model_agrees():
    params = check_params("mlp", SCHEMA, {"epochs": 3})
    assert params["dataset"] == "digits" and params["epochs"] == 3 and params["hidden_sizes"] == [64]
    assert TrainingConfig.model_validate(params) == TrainingConfig(epochs=3)
    assert TrainingConfig.model_validate({}).model_dump() == check_params("mlp", SCHEMA, {})


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ([], "params"),
        ({"epochs": 0}, "params.epochs"),
        ({"epochs": 100_001}, "params.epochs"),
        ({"epochs": "10"}, "params.epochs"),
        ({"epochs": True}, "params.epochs"),
        ({"epochs": 1.5}, "params.epochs"),
        ({"batch_size": 0}, "params.batch_size"),
        ({"learning_rate": 0}, "params.learning_rate"),
        ({"learning_rate": "fast"}, "params.learning_rate"),
        ({"hidden_sizes": []}, "params.hidden_sizes"),
        ({"hidden_sizes": [0]}, "params.hidden_sizes.0"),
        ({"hidden_sizes": [64, "lots"]}, "params.hidden_sizes.1"),
        ({"hidden_sizes": "64"}, "params.hidden_sizes"),
        ({"dataset": "imagenet"}, "params.dataset"),
        ({"model": "resnet"}, "params.model"),
        ({"seed": -1}, "params.seed"),
        ({"checkpoint_every": -1}, "params.checkpoint_every"),
        ({"num_workers": 9}, "params.num_workers"),
        ({"optimizer": "adam"}, "params.optimizer"),
    ],
)
def test_invalid_values_name_their_field(data, field):
    with pytest.raises(TaskRejected) as err:
        check_params("mlp", SCHEMA, data)
    assert err.value.field == field
    assert err.value.message.startswith(f"{field}: ")
    if data != []:  # the worker's pydantic model refuses the same values
        with pytest.raises(ValueError):
            TrainingConfig.model_validate(data, strict=True)


def test_an_unknown_field_lists_the_known_ones():
    with pytest.raises(TaskRejected, match="unknown field .*takes: dataset, model, hidden_sizes"):
        check_params("mlp", SCHEMA, {"optimizer": "adam"})


def test_a_missing_required_param_is_named_in_the_field():
    from pydantic import BaseModel

    class Needs(BaseModel):
        layers: list[int]
        rate: float = 0.1

    with pytest.raises(TaskRejected) as err:
        check_params("needs", Needs.model_json_schema(), {"rate": 0.5})
    assert err.value.field == "params.layers" and "'layers' is a required property" in err.value.message
