"""Torch models for tabular diagnosis, chosen by name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from oneliac_flwr.errors import ConfigError

if TYPE_CHECKING:
    from oneliac_flwr.config import ExperimentConfig

__all__ = ["MODEL_NAMES", "build_model", "new_model"]

MODEL_NAMES = ("logistic", "mlp")


def build_model(
    name: str,
    *,
    num_features: int,
    num_classes: int,
    hidden_sizes: Sequence[int] = (32,),
    generator: torch.Generator,
) -> nn.Module:
    """Build a model with parameters initialised from ``generator``.

    Parameters
    ----------
    name : {"logistic", "mlp"}
        Multinomial logistic regression (one linear layer) or a ReLU MLP.
    num_features, num_classes : int
        Input width and number of classes (outputs are logits).
    hidden_sizes : sequence of int
        Hidden layer widths of the MLP.
    generator : torch.Generator
        Source of the initial weights, so that every run is reproducible.
    """
    if num_features < 1:
        raise ConfigError("num_features", f"must be >= 1, got {num_features}")
    if num_classes < 2:
        raise ConfigError("dataset.num_classes", f"must be >= 2, got {num_classes}")
    if name == "logistic":
        model: nn.Module = nn.Sequential(nn.Linear(num_features, num_classes))
    elif name == "mlp":
        layers: list[nn.Module] = []
        width = num_features
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        model = nn.Sequential(*layers)
    else:
        raise ConfigError("model.name", f"expected one of {list(MODEL_NAMES)}, got {name!r}")
    _initialise(model, generator)
    return model


def _initialise(model: nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                bound = 1.0 / module.in_features**0.5
                module.weight.uniform_(-bound, bound, generator=generator)
                module.bias.uniform_(-bound, bound, generator=generator)


def new_model(config: ExperimentConfig) -> torch.nn.Module:
    """The run's model with its seeded initial weights (the same on every party)."""
    from oneliac_flwr.data import num_features

    return build_model(
        config.model.name,
        num_features=num_features(config),
        num_classes=config.dataset.num_classes,
        hidden_sizes=config.model.hidden_sizes,
        generator=torch.Generator().manual_seed(config.seed),
    )
