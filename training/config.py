"""The training configuration and its validation.

Validation lives here, next to the fields, so the API and the trainer agree on what is valid and
every error names the field it is about.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

DATASETS = ("digits", "synthetic")
MODELS = ("mlp",)


class ConfigError(ValueError):
    """A config value is missing, of the wrong type or out of range; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _int(data: dict[str, Any], name: str, default: int, lo: int, hi: int) -> int:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, f"must be an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise ConfigError(name, f"must be between {lo} and {hi}, got {value}")
    return value


def _choice(data: dict[str, Any], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = data.get(name, default)
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(name, f"must be one of {', '.join(choices)}, got {value!r}")
    return value


@dataclass(frozen=True)
class TrainingConfig:
    dataset: str = "digits"
    model: str = "mlp"
    hidden_sizes: tuple[int, ...] = field(default=(64,))
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 0.01
    seed: int = 0
    checkpoint_every: int = 0
    num_workers: int = 0

    @classmethod
    def from_dict(cls, data: Any) -> TrainingConfig:
        """Validate a JSON-like mapping; unknown keys are errors, missing keys take defaults."""
        if not isinstance(data, dict):
            raise ConfigError("config", "must be a JSON object")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(unknown[0], "unknown field")
        hidden = data.get("hidden_sizes", [64])
        if not isinstance(hidden, list | tuple) or not 1 <= len(hidden) <= 8:
            raise ConfigError("hidden_sizes", "must be a list of 1 to 8 layer sizes")
        for size in hidden:
            if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 4096:
                raise ConfigError("hidden_sizes", f"each size must be an integer 1..4096, got {size!r}")
        lr = data.get("learning_rate", 0.01)
        if isinstance(lr, bool) or not isinstance(lr, int | float):
            raise ConfigError("learning_rate", f"must be a number, got {type(lr).__name__}")
        if not 0 < lr <= 10:
            raise ConfigError("learning_rate", f"must be > 0 and <= 10, got {lr}")
        return cls(
            dataset=_choice(data, "dataset", "digits", DATASETS),
            model=_choice(data, "model", "mlp", MODELS),
            hidden_sizes=tuple(hidden),
            epochs=_int(data, "epochs", 10, 1, 100_000),
            batch_size=_int(data, "batch_size", 32, 1, 65_536),
            learning_rate=float(lr),
            seed=_int(data, "seed", 0, 0, 2**31 - 1),
            checkpoint_every=_int(data, "checkpoint_every", 0, 0, 100_000),
            num_workers=_int(data, "num_workers", 0, 0, 8),
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["hidden_sizes"] = list(self.hidden_sizes)
        return data
