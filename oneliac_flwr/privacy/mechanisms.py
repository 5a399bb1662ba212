"""Per-release mechanisms: noise calibrated for one (epsilon, delta) release.

- Gaussian: the analytic Gaussian mechanism of Balle and Wang ("Improving the
  Gaussian Mechanism for Differential Privacy", ICML 2018), valid for every
  epsilon > 0, unlike the classic ``sqrt(2 ln(1.25/delta)) / epsilon`` (valid
  only for epsilon < 1, and larger).
- Laplace: pure epsilon-DP, scale ``L1 sensitivity / epsilon``.

Every call of :meth:`DifferentialPrivacy.add_noise_to_gradients` is a release;
with a ledger attached it is budget-checked before the noise is drawn and
recorded before the result is returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar, cast

import numpy as np
from numpy.typing import NDArray

from oneliac_flwr.privacy._validation import (
    PrivacyConfigError,
    make_rng,
    require_non_negative,
    require_positive,
    require_positive_int,
    require_probability,
)
from oneliac_flwr.privacy.events import GaussianRelease, LaplaceRelease
from oneliac_flwr.privacy.gdp import gdp_mu

if TYPE_CHECKING:
    from oneliac_flwr.privacy.ledger import PrivacyLedger

__all__ = [
    "DEFAULT_DELTA",
    "MECHANISMS",
    "DifferentialPrivacy",
    "calibrate_analytic_gaussian",
    "laplace_scale",
]

MECHANISMS = ("gaussian", "laplace")

DEFAULT_DELTA = 1e-5
"""Delta of a Gaussian :class:`DifferentialPrivacy` release when none is given."""

Gradients = TypeVar("Gradients", bound=NDArray[np.floating] | Sequence[NDArray[np.floating]])
"""An array, or a list or tuple of arrays; returned in the same form."""


def calibrate_analytic_gaussian(*, epsilon: float, delta: float, sensitivity: float) -> float:
    """Smallest Gaussian noise std giving (epsilon, delta)-DP for one release.

    Solves the exact condition of Balle and Wang (2018, Theorem 8) by bisection::

        Phi(D/(2s) - eps*s/D) - exp(eps) * Phi(-D/(2s) - eps*s/D) <= delta

    where ``D`` is the L2 sensitivity and ``s`` the standard deviation. This is
    the mu-GDP condition with ``mu = D/s`` (:func:`~oneliac_flwr.privacy.gdp.gdp_mu`).

    Parameters
    ----------
    epsilon : float
        Epsilon of the release (> 0, any size).
    delta : float
        Delta of the release, in (0, 1).
    sensitivity : float
        L2 sensitivity (>= 0).

    Returns
    -------
    float
        ``sigma``; the condition holds at the returned value (rounded up).
    """
    epsilon = require_positive("epsilon", epsilon)
    delta = require_probability("delta", delta)
    sensitivity = require_non_negative("sensitivity", sensitivity)
    if sensitivity == 0:
        return 0.0
    return sensitivity / gdp_mu(epsilon=epsilon, delta=delta)


def laplace_scale(*, epsilon: float, sensitivity: float) -> float:
    """Laplace scale ``b = L1 sensitivity / epsilon`` for pure epsilon-DP.

    Parameters
    ----------
    epsilon : float
        Epsilon of the release (> 0).
    sensitivity : float
        L1 sensitivity (>= 0).

    Returns
    -------
    float
        The scale ``b`` (variance ``2 b**2``).
    """
    epsilon = require_positive("epsilon", epsilon)
    sensitivity = require_non_negative("sensitivity", sensitivity)
    return sensitivity / epsilon


class DifferentialPrivacy:
    """Adds calibrated noise to gradients; each call is one recorded release.

    Parameters
    ----------
    epsilon : float
        Epsilon of each release (> 0).
    delta : float or None
        Delta of each release, in (0, 1). For ``"gaussian"``, None means
        :data:`DEFAULT_DELTA` (1e-5), so ``DifferentialPrivacy(0.1)`` is a
        (0.1, 1e-5) Gaussian release. For ``"laplace"`` (pure DP) it is
        ignored and :attr:`delta` is 0: a delta passed with Laplace does not
        change the noise.
    mechanism : {"gaussian", "laplace"}
        Noise distribution.
    rng : numpy.random.Generator or None
        Source of noise; None (default) seeds a new generator with 128 bits
        of OS entropy (``secrets``), never a fixed seed.
    ledger : PrivacyLedger or None
        If given, every release is checked against its budget first
        (:class:`~oneliac_flwr.errors.PrivacyBudgetExhausted`, no noise drawn)
        and recorded after.
    label : str
        Label of the recorded releases.

    Notes
    -----
    ``sensitivity`` is the L2 (Gaussian) or L1 (Laplace) sensitivity of all
    the arrays passed to one call taken together; clip first (see
    :func:`~oneliac_flwr.privacy.clipping.clip_l2`).
    """

    def __init__(
        self,
        epsilon: float,
        delta: float | None = None,
        mechanism: str = "gaussian",
        *,
        rng: np.random.Generator | None = None,
        ledger: PrivacyLedger | None = None,
        label: str = "release",
    ) -> None:
        if mechanism not in MECHANISMS:
            raise PrivacyConfigError("mechanism", f"must be one of {list(MECHANISMS)}, got {mechanism!r}")
        self._epsilon = require_positive("epsilon", epsilon)
        self._mechanism = mechanism
        if mechanism == "gaussian":
            self._delta = require_probability("delta", DEFAULT_DELTA if delta is None else delta)
            self._noise_multiplier = calibrate_analytic_gaussian(
                epsilon=self._epsilon, delta=self._delta, sensitivity=1.0
            )
        else:
            self._delta = 0.0
            self._noise_multiplier = 1.0 / self._epsilon
        self._rng = make_rng(rng)
        self._ledger = ledger
        if not isinstance(label, str) or not label:
            raise PrivacyConfigError("label", f"must be a non-empty string, got {label!r}")
        self._label = label

    @property
    def epsilon(self) -> float:
        """Epsilon of each release."""
        return self._epsilon

    @property
    def delta(self) -> float:
        """Delta of each release (0 for Laplace)."""
        return self._delta

    @property
    def mechanism(self) -> str:
        """``"gaussian"`` or ``"laplace"``."""
        return self._mechanism

    @property
    def noise_multiplier(self) -> float:
        """Noise scale per unit sensitivity: Gaussian std / L2, or Laplace scale / L1."""
        return self._noise_multiplier

    def noise_scale(self, sensitivity: float) -> float:
        """Gaussian standard deviation or Laplace scale for ``sensitivity``."""
        return self._noise_multiplier * require_non_negative("sensitivity", sensitivity)

    def release_event(self) -> GaussianRelease | LaplaceRelease:
        """The event one call records.

        A Gaussian release is recorded as the Gaussian mechanism itself (its
        noise multiplier), which composes more tightly than its (eps, delta).
        """
        if self._mechanism == "gaussian":
            return GaussianRelease(self._noise_multiplier)
        return LaplaceRelease(self._epsilon)

    def add_noise_to_gradients(
        self,
        gradients: Gradients,
        sensitivity: float,
        *,
        round_number: int = 0,
    ) -> Gradients:
        """Return ``gradients`` plus calibrated noise, same structure, shapes and dtypes.

        Parameters
        ----------
        gradients : ndarray or list/tuple of ndarray
            Values to release (already clipped to ``sensitivity``).
        sensitivity : float
            L2 (Gaussian) or L1 (Laplace) sensitivity of all arrays together (>= 0).
        round_number : int
            Round recorded in the ledger (0 for stand-alone releases).

        Returns
        -------
        ndarray or list/tuple of ndarray
            Noisy copies (floating inputs keep their dtype, others become float64).

        Raises
        ------
        PrivacyBudgetExhausted
            If the attached ledger cannot afford the release (nothing is released).
        PrivacyConfigError
            If ``sensitivity`` is negative or not finite.
        """
        scale = self.noise_scale(sensitivity)
        round_number = require_positive_int("round_number", round_number, minimum=0)
        single = isinstance(gradients, np.ndarray)
        if not single and (not isinstance(gradients, Sequence) or isinstance(gradients, (str, bytes))):
            raise PrivacyConfigError(
                "gradients", f"must be an ndarray or a list of ndarrays, got {type(gradients).__name__}"
            )
        arrays = [np.asarray(gradients)] if single else [np.asarray(item) for item in gradients]
        event = self.release_event()
        if self._ledger is not None:
            self._ledger.ensure_budget([event])

        noisy: list[NDArray[np.floating]] = []
        for array in arrays:
            dtype = array.dtype if np.issubdtype(array.dtype, np.floating) else np.dtype(np.float64)
            if self._mechanism == "gaussian":
                noise = self._rng.normal(0.0, scale, size=array.shape)
            else:
                noise = self._rng.laplace(0.0, scale, size=array.shape)
            noisy.append((array.astype(np.float64) + noise).astype(dtype))

        if self._ledger is not None:
            self._ledger.record(
                [event], round_number=round_number, label=self._label, clip_norm=float(sensitivity)
            )
        if single:
            return cast(Gradients, noisy[0])
        if isinstance(gradients, tuple):
            return cast(Gradients, tuple(noisy))
        return cast(Gradients, noisy)
