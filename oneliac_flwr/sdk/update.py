"""A model update as the SDK hands it around: named arrays plus what travels with them.

:class:`ModelUpdate` is a read-only mapping from the model's tensor names to arrays (the
same structure as the weights), carrying the base model version it was trained from,
its number of examples, and, once noised, the :class:`Release` that made it private.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from oneliac_flwr.errors import ConfigError
from oneliac_flwr.privacy.events import GaussianRelease, LaplaceRelease, PrivacyEvent
from oneliac_flwr.validation import DeclaredPrivacy

__all__ = ["ModelUpdate", "Release", "as_update"]


@dataclass(frozen=True, kw_only=True)
class Release:
    """The parameters of one differentially private release of an update.

    Parameters
    ----------
    release_id : str
        SHA-256 of the released arrays: sending the same noisy update again (a retry, or
        another round) is post-processing, not a new release, and is recorded once.
    mechanism : {"gaussian", "laplace"}
        The noise distribution.
    epsilon, delta : float
        The release's privacy parameters (delta 0 for Laplace).
    sensitivity : float
        The clip bound: L2 (Gaussian) or L1 (Laplace) norm of the whole update.
    noise_multiplier : float
        Noise scale per unit of sensitivity (Gaussian std / L2, Laplace scale / L1).
    noise_scale : float
        The noise's standard deviation (Gaussian) or scale (Laplace).
    """

    release_id: str
    mechanism: str
    epsilon: float
    delta: float
    sensitivity: float
    noise_multiplier: float
    noise_scale: float

    def event(self) -> PrivacyEvent:
        """The ledger event of this release (a Gaussian release composes by its noise multiplier)."""
        if self.mechanism == "gaussian":
            return GaussianRelease(self.noise_multiplier)
        return LaplaceRelease(self.epsilon)

    def declared(self, *, epsilon_spent: float | None = None) -> DeclaredPrivacy:
        """The declaration ``privacy_check`` compares with the federation's policy."""
        return DeclaredPrivacy(
            clip_norm=self.sensitivity,
            noise_multiplier=self.noise_multiplier,
            mechanism=self.mechanism,
            epsilon_spent=epsilon_spent,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def _digest(names: Sequence[str], arrays: Sequence[np.ndarray]) -> str:
    digest = hashlib.sha256(b"oneliac-sdk/release/v1")
    for name, array in zip(names, arrays, strict=True):
        a = np.ascontiguousarray(array)
        digest.update(f"|{name}|{a.dtype.str}|{a.shape}|".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


class ModelUpdate(Mapping[str, np.ndarray]):
    """A model update: tensor name to array, read-only, with its provenance.

    Parameters
    ----------
    arrays : mapping of str to numpy.ndarray
        The update (trained minus global weights), one array per model tensor.
    model_version : str or None
        The global model version it was computed from.
    num_examples : int or None
        Local training examples behind it.
    release : Release or None
        The DP release that noised it (:class:`~oneliac_flwr.sdk.DifferentialPrivacy`).
    training_privacy : DeclaredPrivacy or None
        What DP-SGD training declares (clip and mechanism), for sample-level DP.
    """

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray],
        *,
        model_version: str | None = None,
        num_examples: int | None = None,
        release: Release | None = None,
        training_privacy: DeclaredPrivacy | None = None,
    ) -> None:
        if not isinstance(arrays, Mapping) or not arrays:
            raise ConfigError("gradients", "expected a non-empty mapping of tensor name to array")
        self._arrays: dict[str, np.ndarray] = {}
        for name, value in arrays.items():
            if not isinstance(name, str):
                raise ConfigError("gradients", f"tensor names must be strings, got {name!r}")
            array = np.array(value, copy=True)
            array.setflags(write=False)
            self._arrays[name] = array
        self.model_version = model_version
        self.num_examples = num_examples
        self.release = release
        self.training_privacy = training_privacy

    def __getitem__(self, name: str) -> np.ndarray:
        return self._arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def __repr__(self) -> str:
        size = sum(a.size for a in self._arrays.values())
        noised = f", {self.release.mechanism} release eps={self.release.epsilon:g}" if self.release else ""
        return f"ModelUpdate({len(self)} tensors, {size} values, base {self.model_version}{noised})"

    @property
    def names(self) -> list[str]:
        """Tensor names, in order."""
        return list(self._arrays)

    def arrays(self) -> list[np.ndarray]:
        """The arrays, in :attr:`names` order."""
        return list(self._arrays.values())

    def declared(self, *, epsilon_spent: float | None = None) -> DeclaredPrivacy | None:
        """The privacy declaration of this update (release, else DP-SGD training, else none)."""
        if self.release is not None:
            return self.release.declared(epsilon_spent=epsilon_spent)
        return self.training_privacy

    def replaced(self, arrays: Sequence[np.ndarray], *, release: Release | None) -> ModelUpdate:
        """The same provenance with new arrays (in :attr:`names` order) and ``release``."""
        return ModelUpdate(
            dict(zip(self.names, arrays, strict=True)),
            model_version=self.model_version,
            num_examples=self.num_examples,
            release=release,
            training_privacy=self.training_privacy,
        )

    def digest(self) -> str:
        """SHA-256 of names, dtypes, shapes and bytes (a :class:`Release`'s id)."""
        return _digest(self.names, self.arrays())


def as_update(gradients: ModelUpdate | Mapping[str, np.ndarray]) -> ModelUpdate:
    """``gradients`` as a :class:`ModelUpdate` (a plain mapping has no provenance).

    Raises
    ------
    ConfigError
        If ``gradients`` is not a mapping of tensor names to arrays (name the field).
    """
    if isinstance(gradients, ModelUpdate):
        return gradients
    if isinstance(gradients, Mapping):
        return ModelUpdate(gradients)
    raise ConfigError(
        "gradients",
        f"expected a ModelUpdate (LocalModel.gradients) or a mapping of tensor name to array, got {type(gradients).__name__}",
    )
