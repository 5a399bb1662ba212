"""Local training and evaluation loops (plain PyTorch; DP-SGD plugs in through Opacus)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from oneliac_flwr.data.tables import Table
from oneliac_flwr.errors import ConfigError

__all__ = [
    "EvalResult",
    "TrainResult",
    "evaluate",
    "get_weights",
    "make_loader",
    "make_optimizer",
    "set_weights",
    "train_local",
]


@dataclass(frozen=True)
class TrainResult:
    """Metrics of one local training call (mean over the last epoch)."""

    loss: float
    accuracy: float
    num_examples: int


@dataclass(frozen=True)
class EvalResult:
    """Metrics of one evaluation."""

    loss: float
    accuracy: float
    num_examples: int


def get_weights(model: nn.Module) -> list[np.ndarray]:
    """The model's parameters as float32 numpy arrays, in ``state_dict`` order."""
    return [t.detach().cpu().numpy().astype(np.float32, copy=True) for t in model.state_dict().values()]


def set_weights(model: nn.Module, weights: Sequence[np.ndarray]) -> None:
    """Load numpy arrays into the model (shapes must match ``state_dict`` order)."""
    state = model.state_dict()
    if len(weights) != len(state):
        raise ConfigError("arrays", f"expected {len(state)} arrays, got {len(weights)}")
    new_state = {}
    for (key, current), value in zip(state.items(), weights, strict=True):
        if tuple(value.shape) != tuple(current.shape):
            raise ConfigError(f"arrays.{key}", f"expected shape {tuple(current.shape)}, got {tuple(value.shape)}")
        new_state[key] = torch.as_tensor(np.asarray(value), dtype=current.dtype)
    model.load_state_dict(new_state)


def make_loader(table: Table, *, batch_size: int, generator: torch.Generator, shuffle: bool = True) -> DataLoader:
    """A DataLoader over a table whose shuffling is driven by ``generator``."""
    dataset = TensorDataset(torch.from_numpy(table.features), torch.from_numpy(table.labels))
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


def make_optimizer(
    model: nn.Module, *, name: str, learning_rate: float, momentum: float = 0.0
) -> torch.optim.Optimizer:
    """SGD (with optional momentum) or Adam over the model's parameters."""
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=momentum)
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=learning_rate)
    raise ConfigError("training.optimizer", f"expected 'sgd' or 'adam', got {name!r}")


def train_local(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    proximal_mu: float = 0.0,
) -> TrainResult:
    """Run ``epochs`` of local training.

    Parameters
    ----------
    model : nn.Module
        Trained in place.
    loader : DataLoader
        Batches of ``(features, labels)``.
    optimizer : torch.optim.Optimizer
        Already bound to the model (possibly made private by Opacus).
    epochs : int
        Passes over the local data.
    proximal_mu : float
        FedProx proximal weight: adds ``mu/2 * ||w - w_global||^2`` to the loss, where
        ``w_global`` are the weights at the start of the call.
    """
    if epochs < 1:
        raise ConfigError("training.local_epochs", f"must be >= 1, got {epochs}")
    criterion = nn.CrossEntropyLoss()
    global_params = [p.detach().clone() for p in model.parameters()] if proximal_mu > 0 else []
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    for _ in range(epochs):
        loss_sum, correct, seen = 0.0, 0, 0
        for features, labels in loader:
            if len(labels) == 0:  # Poisson sampling (Opacus) may draw an empty batch
                continue
            optimizer.zero_grad()
            logits = model(features)
            loss = criterion(logits, labels)
            objective = loss
            if global_params:
                proximal = sum(((p - g) ** 2).sum() for p, g in zip(model.parameters(), global_params, strict=True))
                objective = loss + 0.5 * proximal_mu * proximal
            objective.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(labels)
            correct += int((logits.argmax(dim=1) == labels).sum())
            seen += len(labels)
    num_examples = len(loader.dataset)  # type: ignore[arg-type]
    if seen == 0:
        return TrainResult(loss=float("nan"), accuracy=float("nan"), num_examples=num_examples)
    return TrainResult(loss=loss_sum / seen, accuracy=correct / seen, num_examples=num_examples)


@torch.no_grad()
def evaluate(model: nn.Module, table: Table) -> EvalResult:
    """Cross-entropy loss and accuracy of the model on a table."""
    if len(table) == 0:
        return EvalResult(loss=float("nan"), accuracy=float("nan"), num_examples=0)
    model.eval()
    features = torch.from_numpy(table.features)
    labels = torch.from_numpy(table.labels)
    logits = model(features)
    loss = float(nn.functional.cross_entropy(logits, labels))
    accuracy = float((logits.argmax(dim=1) == labels).float().mean())
    return EvalResult(loss=loss, accuracy=accuracy, num_examples=len(table))
