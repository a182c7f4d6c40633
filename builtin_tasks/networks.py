"""Model builders, by the config's ``model`` name."""

from __future__ import annotations

from torch import nn


def build_model(name: str, n_features: int, hidden_sizes: tuple[int, ...], n_classes: int) -> nn.Module:
    if name != "mlp":
        raise ValueError(f"unknown model {name!r}")
    layers: list[nn.Module] = []
    width = n_features
    for size in hidden_sizes:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)
