"""The built-in MLP task's params: a pydantic model, so the service publishes its JSON Schema and every error
names its field."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

DATASETS = ("digits", "synthetic")


class TrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: Literal["digits", "synthetic"] = Field(
        "digits", description="digits: scikit-learn's bundled 8x8 digits; synthetic: seeded Gaussian blobs")
    model: Literal["mlp"] = "mlp"
    hidden_sizes: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        [64], min_length=1, max_length=8, description="1 to 8 layer widths")
    epochs: int = Field(10, ge=1, le=100_000)
    batch_size: int = Field(32, ge=1, le=65_536)
    learning_rate: float = Field(0.01, gt=0, le=10, description="SGD with momentum 0.9")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="same seed, same metrics")
    checkpoint_every: int = Field(0, ge=0, le=100_000, description="epochs between checkpoints, 0 = none")
    num_workers: int = Field(0, ge=0, le=8, description="DataLoader worker processes")
