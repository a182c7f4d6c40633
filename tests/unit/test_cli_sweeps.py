"""``trainq sweep``'s own parsing: --space and --objective as the API's JSON, and bad ones named."""

import click
import pytest

from trainq.cli_sweeps import parse_objective, parse_space


def test_space_options_become_the_apis_space():
    assert parse_space(("lr=loguniform:1e-4:0.3", "hidden=int:16:256:16", "opt=choice:sgd,adam",
                        "x=uniform:0:1:0.25", "n=logint:1:1024", "flag=choice:true,false,16")) == {
        "lr": {"type": "float", "low": 1e-4, "high": 0.3, "log": True},
        "hidden": {"type": "int", "low": 16, "high": 256, "step": 16},
        "opt": {"type": "choice", "choices": ["sgd", "adam"]},
        "x": {"type": "float", "low": 0.0, "high": 1.0, "step": 0.25},
        "n": {"type": "int", "low": 1, "high": 1024, "log": True},
        "flag": {"type": "choice", "choices": [True, False, 16]},
    }


@pytest.mark.parametrize("bad", ["lr", "lr=", "lr=uniform", "lr=normal:0:1", "lr=uniform:0", "n=int:1.5:4",
                                 "lr=uniform:a:1", "=int:1:2"])
def test_bad_space_options_are_refused(bad):
    with pytest.raises(click.BadParameter):
        parse_space((bad,))


def test_objective():
    assert parse_objective("val_loss:min") == {"metric": "val_loss", "mode": "min"}
    assert parse_objective("val_accuracy:max") == {"metric": "val_accuracy", "mode": "max"}
    assert parse_objective("loss") == {"metric": "loss", "mode": "min"}
    assert parse_objective(None) is None
    with pytest.raises(click.BadParameter):
        parse_objective("loss:down")
