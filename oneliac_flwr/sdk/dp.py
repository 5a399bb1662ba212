"""``DifferentialPrivacy`` as the SDK documents it: clip, then calibrated noise, per release.

A thin layer over the core mechanism (:class:`oneliac_flwr.privacy.DifferentialPrivacy`:
the analytic Gaussian mechanism of Balle and Wang, or Laplace) and the core clipping
(:func:`oneliac_flwr.privacy.clip_l2`). Noise comes from a generator seeded by the
operating system. Each call returns the update noised, carrying its :class:`Release`;
the release is recorded in the hospital's ledger when it is sent
(:meth:`FederatedLearner.submit_gradients <oneliac_flwr.sdk.FederatedLearner.submit_gradients>`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from oneliac_flwr.errors import PrivacyError
from oneliac_flwr.privacy import DifferentialPrivacy as _Mechanism
from oneliac_flwr.privacy import clip_l2, l2_norm
from oneliac_flwr.privacy.entropy import os_generator
from oneliac_flwr.privacy.mechanisms import DEFAULT_DELTA
from oneliac_flwr.sdk.update import ModelUpdate, Release, as_update

__all__ = ["DifferentialPrivacy"]


def _clip_l1(arrays: list[np.ndarray], bound: float) -> list[np.ndarray]:
    """Scale so the L1 norm of all arrays together is at most ``bound`` (Laplace sensitivity)."""
    total = float(sum(np.abs(a).sum() for a in arrays))
    return arrays if total <= bound else [a * (bound / total) for a in arrays]


class DifferentialPrivacy:
    """One (epsilon, delta) release per call of :meth:`add_noise_to_gradients`.

    Parameters
    ----------
    epsilon : float
        Epsilon of each release (> 0; documented value 0.1).
    delta : float
        Delta of each Gaussian release, in (0, 1) (documented 1e-5). Laplace is pure
        epsilon-DP: its delta is 0.
    mechanism : {"gaussian", "laplace"}
        The noise distribution.

    Raises
    ------
    PrivacyError
        If a parameter is out of range (names the field).
    """

    def __init__(self, epsilon: float = 0.1, *, delta: float = DEFAULT_DELTA, mechanism: str = "gaussian") -> None:
        self._mechanism = _Mechanism(epsilon, delta, mechanism, rng=os_generator())

    @property
    def epsilon(self) -> float:
        """Epsilon of each release."""
        return self._mechanism.epsilon

    @property
    def delta(self) -> float:
        """Delta of each release (0 for Laplace)."""
        return self._mechanism.delta

    @property
    def mechanism(self) -> str:
        """``"gaussian"`` or ``"laplace"``."""
        return self._mechanism.mechanism

    def noise_scale(self, sensitivity: float) -> float:
        """The noise's standard deviation (Gaussian) or scale (Laplace) for ``sensitivity``."""
        return self._mechanism.noise_scale(sensitivity)

    def add_noise_to_gradients(
        self, gradients: ModelUpdate | Mapping[str, np.ndarray], sensitivity: float = 1.0
    ) -> ModelUpdate:
        """Clip ``gradients`` to ``sensitivity`` and add calibrated noise.

        Parameters
        ----------
        gradients : ModelUpdate or mapping of str to numpy.ndarray
            The update (e.g. ``learner.train_local(...).gradients``).
        sensitivity : float
            The clip bound: the whole update's L2 norm (Gaussian) or L1 norm (Laplace)
            is scaled down to at most this, which is then the release's sensitivity.

        Returns
        -------
        ModelUpdate
            The noised update, same names, shapes and dtypes, carrying its
            :class:`~oneliac_flwr.sdk.update.Release` (``.release``): mechanism, epsilon,
            delta, sensitivity, noise multiplier and scale, and its id.

        Raises
        ------
        PrivacyError
            If ``sensitivity`` is not a number >= 0, the update holds NaN or infinity, or
            it was already noised (noise it once, with the epsilon you mean to spend).
        """
        update = as_update(gradients)
        if update.release is not None:
            raise PrivacyError(
                "gradients: already noised by a DifferentialPrivacy release; noise the training update once"
            )
        scale = self.noise_scale(sensitivity)  # checks the sensitivity
        originals = update.arrays()
        arrays = [np.asarray(a, dtype=np.float64) for a in originals]
        if self.mechanism == "gaussian":
            clipped, _ = clip_l2(arrays, sensitivity)
        else:
            l2_norm(arrays)  # refuses NaN and infinity
            clipped = _clip_l1(arrays, float(sensitivity))
        noisy = self._mechanism.add_noise_to_gradients(list(clipped), sensitivity)
        dtypes = [a.dtype if np.issubdtype(a.dtype, np.floating) else np.dtype(np.float32) for a in originals]
        released = [np.asarray(n).astype(d) for n, d in zip(noisy, dtypes, strict=True)]
        probe = update.replaced(released, release=None)
        release = Release(
            release_id=probe.digest(),
            mechanism=self.mechanism,
            epsilon=self.epsilon,
            delta=self.delta,
            sensitivity=float(sensitivity),
            noise_multiplier=self._mechanism.noise_multiplier,
            noise_scale=scale,
        )
        return update.replaced(released, release=release)
