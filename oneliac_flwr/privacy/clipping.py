"""L2 clipping of model updates (bounds the sensitivity of a sum).

After :func:`clip_l2` the update, taken as one flat vector, has L2 norm at most
``clip_norm``, both with flat and per-layer clipping, so ``clip_norm`` is the
L2 sensitivity to pass to the noise mechanisms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar, cast

import numpy as np
from numpy.typing import NDArray

from oneliac_flwr.privacy._validation import PrivacyConfigError, require_non_negative

__all__ = ["clip_l2", "l2_norm"]

Update = TypeVar("Update", bound=NDArray[np.floating] | Sequence[NDArray[np.floating]])
"""An array, or a list or tuple of arrays; returned in the same form."""


def _layer_norm(array: NDArray[np.floating]) -> float:
    """L2 norm in float64, safe against overflow (scaled by the largest magnitude)."""
    values = np.asarray(array, dtype=np.float64).ravel()
    if values.size == 0:
        return 0.0
    largest = float(np.max(np.abs(values)))
    if not math.isfinite(largest):
        raise PrivacyConfigError("update", "must contain only finite values (found nan or inf)")
    if largest == 0.0:
        return 0.0
    scaled = values / largest
    return largest * math.sqrt(float(np.dot(scaled, scaled)))


def l2_norm(update: NDArray[np.floating] | Sequence[NDArray[np.floating]]) -> float:
    """L2 norm of an array, or of a list of arrays taken as one flat vector."""
    arrays = [update] if isinstance(update, np.ndarray) else list(update)
    return math.hypot(*(_layer_norm(np.asarray(array)) for array in arrays)) if arrays else 0.0


def _scaled(array: NDArray[np.floating], factor: float) -> NDArray[np.floating]:
    array = np.asarray(array)
    dtype = array.dtype if np.issubdtype(array.dtype, np.floating) else np.dtype(np.float64)
    if factor == 1.0:
        return array.astype(dtype, copy=True)
    # Shrink by a few units of rounding so that casting back to ``dtype`` can
    # never leave the norm above the bound.
    factor *= 1.0 - 4.0 * float(np.finfo(dtype).eps)
    return (array.astype(np.float64) * factor).astype(dtype)


def _factor(norm: float, bound: float) -> float:
    # Never divides by zero: a zero (or small) update is left unchanged.
    return 1.0 if norm <= bound else bound / norm


def clip_l2(
    update: Update,
    clip_norm: float,
    *,
    per_layer: bool = False,
) -> tuple[Update, float]:
    """Scale ``update`` down so its L2 norm is at most ``clip_norm``.

    Parameters
    ----------
    update : ndarray or list/tuple of ndarray
        One array or the layers of a model update.
    clip_norm : float
        Bound ``C`` on the L2 norm of the whole update (>= 0).
    per_layer : bool
        If False (default) the layers are clipped together, as one flat vector.
        If True each of the ``L`` layers is clipped separately to
        ``C / sqrt(L)``, so the whole update still has norm <= ``C``.

    Returns
    -------
    tuple
        ``(clipped, original_norm)``: copies with the same structure, shapes and
        floating dtypes, and the L2 norm of the whole update before clipping.

    Raises
    ------
    PrivacyConfigError
        If ``clip_norm`` is negative or the update holds nan or inf.
    """
    bound = require_non_negative("clip_norm", clip_norm)
    single = isinstance(update, np.ndarray)
    if not single and (not isinstance(update, Sequence) or isinstance(update, (str, bytes))):
        raise PrivacyConfigError(
            "update", f"must be an ndarray or a list of ndarrays, got {type(update).__name__}"
        )
    arrays = [np.asarray(update)] if single else [np.asarray(item) for item in update]
    norms = [_layer_norm(array) for array in arrays]
    total = math.hypot(*norms) if norms else 0.0

    if per_layer and arrays:
        layer_bound = bound / math.sqrt(len(arrays))
        clipped = [
            _scaled(array, _factor(norm, layer_bound)) for array, norm in zip(arrays, norms, strict=True)
        ]
    else:
        factor = _factor(total, bound)
        clipped = [_scaled(array, factor) for array in arrays]

    if single:
        return cast(Update, clipped[0]), total
    if isinstance(update, tuple):
        return cast(Update, tuple(clipped)), total
    return cast(Update, clipped), total
