"""The global model as the hospital downloads it: checksum verified, ready to use in torch."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load as safetensors_load
from torch import nn

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.errors import ConfigError, CoordinatorError
from oneliac_flwr.models import new_model
from oneliac_flwr.sdk.transport import CoordinatorClient

__all__ = ["GlobalModel", "fetch_model"]


class GlobalModel(nn.Module):
    """A global model version: a torch module with its registry facts.

    Attributes
    ----------
    model_version : str
        e.g. ``"1.0.5"`` (``"1.0.0"`` is the initial model).
    accuracy : float or None
        The aggregated federated evaluation reported for it (``None``: none reported).
    organizations_contributed : int
        Organizations whose updates built it.
    training_round : int
        The round that produced it (0: initial).
    epsilon_spent : float or None
        The federation's privacy spent up to it, as the coordinator reports.
    checksum_sha256 : str
        SHA-256 of its safetensors file (verified on download).
    """

    def __init__(self, module: nn.Module, *, names: list[str], meta: dict[str, Any]) -> None:
        super().__init__()
        self.module = module
        self.names = list(names)
        self.model_version: str = str(meta["model_version"])
        self.accuracy: float | None = meta.get("accuracy")
        self.organizations_contributed: int = int(meta.get("organizations_contributed", 0))
        self.training_round: int = int(meta.get("training_round", 0))
        self.epsilon_spent: float | None = meta.get("epsilon_spent")
        self.checksum_sha256: str = str(meta["checksum_sha256"])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logits of the wrapped module."""
        return self.module(features)

    def arrays(self) -> dict[str, np.ndarray]:
        """The weights as float32 arrays by tensor name (the coordinator's names)."""
        state = self.module.state_dict()
        return {name: state[name].detach().cpu().numpy().copy() for name in self.names}

    @torch.no_grad()
    def predict(self, features: np.ndarray) -> np.ndarray:
        """Class indices for already-scaled features of shape ``(n, d)``."""
        self.module.eval()
        return self.module(torch.as_tensor(np.asarray(features, np.float32))).argmax(dim=1).numpy()

    def extra_repr(self) -> str:
        return f"version={self.model_version}, round={self.training_round}, contributors={self.organizations_contributed}"


def load_weights(module: nn.Module, tensors: dict[str, np.ndarray]) -> None:
    """Load named arrays into ``module`` (its ``state_dict`` names must be the same).

    Raises
    ------
    ConfigError
        If names or shapes differ from the federation's model (names the tensor).
    """
    state = module.state_dict()
    if sorted(state) != sorted(tensors):
        raise ConfigError("model", f"the coordinator's model has tensors {sorted(tensors)}; the configured model has "
                                   f"{sorted(state)}: use the federation's model settings")  # fmt: skip
    for name, value in tensors.items():
        if tuple(value.shape) != tuple(state[name].shape):
            raise ConfigError(f"model.{name}", f"the coordinator's tensor has shape {tuple(value.shape)}, the configured "
                                               f"model {tuple(state[name].shape)}: use the federation's model settings")  # fmt: skip
    module.load_state_dict({n: torch.as_tensor(np.array(v)) for n, v in tensors.items()})


def fetch_model(client: CoordinatorClient, config: ExperimentConfig, *, version: str = "latest") -> GlobalModel:
    """Download a model version, verify its checksum and build it as a torch module.

    Raises
    ------
    CoordinatorError
        If the file does not match its SHA-256 checksum, or is not a safetensors file.
    ConfigError
        If its tensors do not fit the configured model.
    """
    meta = client.get_json("/model", params=None if version == "latest" else {"version": version})
    weights = str(meta.get("weights", ""))
    try:
        blob = bytes.fromhex(weights[2:] if weights.startswith("0x") else "!")
    except ValueError:
        raise CoordinatorError("the model's weights are not 0x-prefixed hex", problem="model_download") from None
    digest = hashlib.sha256(blob).hexdigest()
    if not hmac.compare_digest(digest, str(meta.get("checksum_sha256", ""))):
        raise CoordinatorError(f"model {meta.get('model_version')}: SHA-256 {digest} does not match the published "
                               f"checksum {meta.get('checksum_sha256')}", problem="checksum_mismatch")  # fmt: skip
    try:
        tensors = safetensors_load(blob)
    except (SafetensorError, ValueError) as exc:
        raise CoordinatorError(f"the model's weights are not a safetensors file: {exc}", problem="model_download") from None
    module = new_model(config)
    load_weights(module, tensors)
    return GlobalModel(module, names=sorted(tensors), meta=meta)
