"""The trainq command's -p NAME=VALUE: values typed by the task's params schema."""

from __future__ import annotations

import pytest

from builtin_tasks.config import TrainingConfig
from trainq.cli import parse_param
from trainq.client import ClientError

SCHEMA = TrainingConfig.model_json_schema()


@pytest.mark.parametrize(("text", "expected"), [
    ("epochs=5", ("epochs", 5)),
    ("learning_rate=0.01", ("learning_rate", 0.01)),
    ("learning_rate=1e-3", ("learning_rate", 0.001)),
    ("hidden_sizes=[64,32]", ("hidden_sizes", [64, 32])),
    ("hidden_sizes=[]", ("hidden_sizes", [])),
    ("dataset=synthetic", ("dataset", "synthetic")),
    (" epochs = 7 ", ("epochs", 7)),
])
def test_values_are_typed_by_the_schema(text, expected):
    assert parse_param(text, SCHEMA) == expected


@pytest.mark.parametrize(("text", "message", "field"), [
    ("nope=1", "no such param", "params.nope"),
    ("epochs", "write -p NAME=VALUE", "params"),
    ("=3", "write -p NAME=VALUE", "params"),
    ("hidden_sizes=[64,", "not JSON", "params.hidden_sizes"),
    ("epochs=many", "not a valid integer", "params.epochs"),
])
def test_bad_values_say_which_param(text, message, field):
    with pytest.raises(ClientError, match=message) as caught:
        parse_param(text, SCHEMA)
    assert caught.value.field == field


def test_booleans_and_nulls():
    schema = {"properties": {"flag": {"type": "boolean"}, "limit": {"anyOf": [{"type": "integer"}, {"type": "null"}]}}}
    assert parse_param("flag=yes", schema) == ("flag", True)
    assert parse_param("flag=false", schema) == ("flag", False)
    assert parse_param("limit=null", schema) == ("limit", None)
    assert parse_param("limit=4", schema) == ("limit", 4)
    with pytest.raises(ClientError, match="not a valid boolean"):
        parse_param("flag=maybe", schema)
