"""Fixed-point encoding of weighted, clipped updates into the ring Z_{2^k}.

See ``docs/secure-sum.md`` section 4 for the bit budget and the error bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from numbers import Real

import numpy as np

from oneliac_flwr.errors import ConfigError, ProtocolViolation

__all__ = ["RingSpec", "decode_sum", "encode", "error_bound", "plan_ring", "ring_dtype"]

#: Largest number of fractional bits ``plan_ring`` will choose or accept.
MAX_FRAC_BITS = 512
#: ``plan_ring`` prefers a 32-bit ring when at least this many fractional bits fit.
MIN_FRAC_BITS_FOR_32 = 16
_FLOAT_MARGIN = Fraction(1) + Fraction(1, 2**52)


def ring_dtype(bits: int) -> np.dtype:
    """Return the numpy dtype of ring elements for a ``bits``-bit ring.

    Parameters
    ----------
    bits : int
        32 or 64.

    Returns
    -------
    numpy.dtype
        ``uint32`` or ``uint64`` (native byte order).
    """
    if bits == 32:
        return np.dtype(np.uint32)
    if bits == 64:
        return np.dtype(np.uint64)
    raise ConfigError("bits", f"expected 32 or 64, got {bits!r}")


def _load(n: int, weight_bound: float, clip_bound: float, frac_bits: int) -> Fraction:
    """Worst-case magnitude of a sum of ``n`` encodings, in ring units (exact)."""
    per_client = Fraction(weight_bound) * Fraction(clip_bound) * (1 << frac_bits) * _FLOAT_MARGIN
    return n * (per_client + Fraction(1, 2))


def _fits(bits: int, n: int, weight_bound: float, clip_bound: float, frac_bits: int) -> bool:
    return _load(n, weight_bound, clip_bound, frac_bits) < (1 << (bits - 1))


def _bits_needed(load: Fraction) -> int:
    j = max(1, math.floor(load).bit_length() - 1)
    while Fraction(2**j) <= load:
        j += 1
    return j + 1


def _no_fit_message(bits: int, n: int, weight_bound: float, clip_bound: float, frac_bits: int) -> str:
    load = _load(n, weight_bound, clip_bound, frac_bits)
    return (
        f"needs {_bits_needed(load)} bits but the ring has {bits}: {n} participants x "
        f"(weight {weight_bound:g} x clip {clip_bound:g} x 2^{frac_bits} + 1/2 rounding) "
        f"= 2^{math.log2(load):.2f}, which must be < 2^{bits - 1}; lower frac_bits, "
        "clip_bound, weight_bound or max_participants"
    )


@dataclass(frozen=True, kw_only=True)
class RingSpec:
    """Parameters of the fixed-point ring of one secure-sum run.

    Parameters
    ----------
    bits : int
        Ring size ``k``: 32 or 64 (values live in ``Z_{2^k}``).
    frac_bits : int
        Fractional bits ``f`` of the fixed-point grid (``0 <= f <= 512``).
    clip_bound : float
        Bound ``C`` on ``|x_i|`` of every update coordinate.
    weight_bound : float
        Bound ``W`` on the weight of one client (``0 < w <= W``).
    max_participants : int
        Largest number of clients summed in one round (``>= 2``).

    Raises
    ------
    ConfigError
        If a field is out of range or the sum of ``max_participants`` encodings could
        leave the signed range of ``Z_{2^k}``.
    """

    bits: int
    frac_bits: int
    clip_bound: float
    weight_bound: float
    max_participants: int

    def __post_init__(self) -> None:
        ring_dtype(self.bits)
        _check_int(self.frac_bits, "frac_bits", lo=0, hi=MAX_FRAC_BITS)
        _check_positive(self.clip_bound, "clip_bound")
        _check_positive(self.weight_bound, "weight_bound")
        _check_int(self.max_participants, "max_participants", lo=2, hi=None)
        object.__setattr__(self, "clip_bound", float(self.clip_bound))
        object.__setattr__(self, "weight_bound", float(self.weight_bound))
        if not _fits(self.bits, self.max_participants, self.weight_bound, self.clip_bound, self.frac_bits):
            raise ConfigError(
                "ring",
                _no_fit_message(self.bits, self.max_participants, self.weight_bound, self.clip_bound, self.frac_bits),
            )

    @property
    def dtype(self) -> np.dtype:
        """Numpy dtype of ring elements (``uint32`` or ``uint64``)."""
        return ring_dtype(self.bits)


def _check_int(value: object, field: str, *, lo: int, hi: int | None) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ConfigError(field, f"expected an integer {rng}, got {value!r}")


def _check_positive(value: object, field: str) -> None:
    if not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ConfigError(field, f"expected a finite number > 0, got {value!r}")


def _largest_frac_bits(bits: int, n: int, weight_bound: float, clip_bound: float) -> int | None:
    if not _fits(bits, n, weight_bound, clip_bound, 0):
        return None
    lo, hi = 0, MAX_FRAC_BITS
    if _fits(bits, n, weight_bound, clip_bound, hi):
        return hi
    while hi - lo > 1:  # invariant: fits(lo) and not fits(hi)
        mid = (lo + hi) // 2
        if _fits(bits, n, weight_bound, clip_bound, mid):
            lo = mid
        else:
            hi = mid
    return lo


def plan_ring(
    *,
    clip_bound: float,
    weight_bound: float,
    max_participants: int,
    bits: int | None = None,
    frac_bits: int | None = None,
) -> RingSpec:
    """Choose the ring size and fractional bits so that no sum can overflow.

    Parameters
    ----------
    clip_bound : float
        Bound ``C`` on every coordinate of a (clipped) update.
    weight_bound : float
        Bound ``W`` on one client's weight (e.g. the largest sample count).
    max_participants : int
        Largest number of clients in one round.
    bits : int or None
        32 or 64; ``None`` picks 32 when it fits (with at least 16 fractional bits if
        ``frac_bits`` is also ``None``), else 64.
    frac_bits : int or None
        Fractional bits; ``None`` picks the largest that fits in the chosen ring.

    Returns
    -------
    RingSpec
        A spec satisfying ``n (W C 2^f (1 + 2^-52) + 1/2) < 2^(k-1)``.

    Raises
    ------
    ConfigError
        If no ring satisfies the constraint; the message quotes the numbers.
    """
    _check_positive(clip_bound, "clip_bound")
    _check_positive(weight_bound, "weight_bound")
    _check_int(max_participants, "max_participants", lo=2, hi=None)
    if bits is not None:
        ring_dtype(bits)
    if frac_bits is not None:
        _check_int(frac_bits, "frac_bits", lo=0, hi=MAX_FRAC_BITS)
    n, w, c = max_participants, float(weight_bound), float(clip_bound)

    if frac_bits is not None:
        candidates = [bits] if bits is not None else [32, 64]
        for k in candidates:
            if _fits(k, n, w, c, frac_bits):
                return RingSpec(bits=k, frac_bits=frac_bits, clip_bound=c, weight_bound=w, max_participants=n)
        raise ConfigError("ring", _no_fit_message(candidates[-1], n, w, c, frac_bits))

    if bits is None:
        f32 = _largest_frac_bits(32, n, w, c)
        if f32 is not None and f32 >= MIN_FRAC_BITS_FOR_32:
            return RingSpec(bits=32, frac_bits=f32, clip_bound=c, weight_bound=w, max_participants=n)
        bits = 64
    f = _largest_frac_bits(bits, n, w, c)
    if f is None:
        raise ConfigError("ring", _no_fit_message(bits, n, w, c, 0))
    return RingSpec(bits=bits, frac_bits=f, clip_bound=c, weight_bound=w, max_participants=n)


def encode(vec: np.ndarray, *, weight: float, spec: RingSpec) -> np.ndarray:
    """Encode ``weight * vec`` on the fixed-point grid, as ring elements.

    Parameters
    ----------
    vec : numpy.ndarray
        Float array (any shape) with every ``|x_i| <= spec.clip_bound``.
    weight : float
        Client weight, ``0 < weight <= spec.weight_bound``.
    spec : RingSpec
        The ring.

    Returns
    -------
    numpy.ndarray
        ``rint(x * weight * 2^f) mod 2^k`` as ``spec.dtype``, same shape as ``vec``.

    Raises
    ------
    ProtocolViolation
        If ``vec`` is not a float array, has non-finite values or values beyond the clip
        bound, or ``weight`` is outside ``(0, weight_bound]``. The caller must clip.
    """
    arr = np.asarray(vec)
    if not np.issubdtype(arr.dtype, np.floating):
        raise ProtocolViolation(f"update: expected a float array, got dtype {arr.dtype}")
    if (
        not isinstance(weight, Real)
        or isinstance(weight, bool)
        or not math.isfinite(weight)
        or not 0 < weight <= spec.weight_bound
    ):
        raise ProtocolViolation(f"weight: expected a number in (0, {spec.weight_bound:g}], got {weight!r}")
    x = arr.astype(np.float64, copy=False)
    finite = np.isfinite(x)
    if not finite.all():
        raise ProtocolViolation(f"update: {int(x.size - np.count_nonzero(finite))} non-finite value(s)")
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > spec.clip_bound:
        raise ProtocolViolation(
            f"update: every |x_i| must be <= clip_bound {spec.clip_bound:g} (the caller clips), "
            f"got max |x_i| = {peak:g}"
        )
    scale = float(weight) * 2.0**spec.frac_bits  # exact: power-of-two scaling
    ints = np.rint(x * scale).astype(np.int64)
    if spec.bits == 32:
        return ints.astype(np.uint32)  # keeps the low 32 bits: two's complement mod 2^32
    return ints.view(np.uint64)


def decode_sum(total: np.ndarray, *, spec: RingSpec) -> np.ndarray:
    """Decode a ring sum of encodings into float64 (two's complement, divided by 2^f).

    Parameters
    ----------
    total : numpy.ndarray
        Ring elements of ``spec.dtype``.
    spec : RingSpec
        The ring.

    Returns
    -------
    numpy.ndarray
        float64 array of the same shape: the weighted sum.

    Raises
    ------
    ProtocolViolation
        If ``total`` is not of the ring's dtype.
    """
    arr = np.asarray(total)
    if arr.dtype != spec.dtype:
        raise ProtocolViolation(f"total: expected dtype {spec.dtype} for a {spec.bits}-bit ring, got {arr.dtype}")
    signed = arr.view(np.int32 if spec.bits == 32 else np.int64)
    return np.ldexp(signed.astype(np.float64), -spec.frac_bits)


def error_bound(spec: RingSpec, n_participants: int) -> float:
    """Bound on ``|decoded - exact|`` per coordinate of the weighted sum.

    Parameters
    ----------
    spec : RingSpec
        The ring.
    n_participants : int
        Number of summed (counted) clients.

    Returns
    -------
    float
        ``n 2^-(f+1) + n (W C + 1) 2^-52``: grid rounding plus float64 rounding.
    """
    _check_int(n_participants, "n_participants", lo=0, hi=None)
    n = n_participants
    grid = n * math.ldexp(0.5, -spec.frac_bits)
    floating = n * (spec.weight_bound * spec.clip_bound + 1.0) * 2.0**-52
    return grid + floating
