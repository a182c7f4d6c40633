"""Datasets that need no download: scikit-learn's bundled ``digits`` and a seeded ``synthetic`` one."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.datasets import load_digits  # here, not in the function: a worker's job processes inherit it
from torch.utils.data import TensorDataset

VALIDATION_FRACTION = 0.2


@dataclass(frozen=True)
class Splits:
    train: TensorDataset
    val: TensorDataset
    n_features: int
    n_classes: int


def _digits() -> tuple[np.ndarray, np.ndarray]:
    bunch = load_digits()
    return bunch.data.astype(np.float32) / 16.0, bunch.target.astype(np.int64)


def _synthetic(seed: int, n: int = 2000, features: int = 20, classes: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 2.0, size=(classes, features))
    y = rng.integers(0, classes, size=n)
    x = centers[y] + rng.normal(0, 1.0, size=(n, features))
    return x.astype(np.float32), y.astype(np.int64)


def load_splits(name: str, seed: int) -> Splits:
    """Load ``name`` and split it into train/validation with a permutation fixed by ``seed``."""
    if name == "digits":
        x, y = _digits()
    elif name == "synthetic":
        x, y = _synthetic(seed)
    else:
        raise ValueError(f"unknown dataset {name!r}")
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = int(len(x) * VALIDATION_FRACTION)
    val_idx, train_idx = order[:n_val], order[n_val:]

    def subset(idx: np.ndarray) -> TensorDataset:
        return TensorDataset(torch.from_numpy(x[idx]), torch.from_numpy(y[idx]))

    return Splits(subset(train_idx), subset(val_idx), x.shape[1], int(y.max()) + 1)
