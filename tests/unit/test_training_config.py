import pytest

from training.config import ConfigError, TrainingConfig


def test_defaults_and_roundtrip():
    cfg = TrainingConfig.from_dict({})
    assert cfg.dataset == "digits" and cfg.epochs == 10
    assert TrainingConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ([], "config"),
        ({"epochs": 0}, "epochs"),
        ({"epochs": 100_001}, "epochs"),
        ({"epochs": "10"}, "epochs"),
        ({"epochs": True}, "epochs"),
        ({"epochs": 1.5}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"learning_rate": "fast"}, "learning_rate"),
        ({"hidden_sizes": []}, "hidden_sizes"),
        ({"hidden_sizes": [0]}, "hidden_sizes"),
        ({"hidden_sizes": "64"}, "hidden_sizes"),
        ({"dataset": "imagenet"}, "dataset"),
        ({"model": "resnet"}, "model"),
        ({"seed": -1}, "seed"),
        ({"checkpoint_every": -1}, "checkpoint_every"),
        ({"num_workers": 9}, "num_workers"),
        ({"optimizer": "adam"}, "optimizer"),
    ],
)
def test_invalid_values_name_their_field(data, field):
    with pytest.raises(ConfigError) as err:
        TrainingConfig.from_dict(data)
    assert err.value.field == field
    assert err.value.message
