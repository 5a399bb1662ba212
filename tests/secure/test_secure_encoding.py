"""Ring planning, fixed-point encoding and decoding."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from oneliac_flwr.errors import ConfigError, ProtocolViolation
from oneliac_flwr.secure import RingSpec, decode_sum, encode, error_bound, plan_ring


def fits(spec: RingSpec, frac_bits: int) -> bool:
    n, w, c = spec.max_participants, Fraction(spec.weight_bound), Fraction(spec.clip_bound)
    load = n * (w * c * 2**frac_bits * (1 + Fraction(1, 2**52)) + Fraction(1, 2))
    return load < 2 ** (spec.bits - 1)


def test_picks_32_bits_where_it_fits() -> None:
    spec = plan_ring(clip_bound=1.0, weight_bound=1.0, max_participants=100)
    assert spec.bits == 32
    assert spec.frac_bits == 24  # 100 * 2^24 < 2^31 <= 100 * 2^25
    assert fits(spec, spec.frac_bits) and not fits(spec, spec.frac_bits + 1)
    assert spec.dtype == np.uint32


def test_falls_back_to_64_bits_when_32_leaves_too_few_fractional_bits() -> None:
    spec = plan_ring(clip_bound=10.0, weight_bound=1e5, max_participants=100)
    assert spec.bits == 64
    assert fits(spec, spec.frac_bits) and not fits(spec, spec.frac_bits + 1)
    assert spec.frac_bits == 36


def test_explicit_frac_bits_choose_smallest_ring() -> None:
    assert plan_ring(clip_bound=1.0, weight_bound=10.0, max_participants=20, frac_bits=20).bits == 32
    assert plan_ring(clip_bound=1.0, weight_bound=10.0, max_participants=20, frac_bits=30).bits == 64


def test_refuses_impossible_config_with_the_numbers() -> None:
    with pytest.raises(ConfigError) as info:
        plan_ring(clip_bound=10.0, weight_bound=1000.0, max_participants=20, frac_bits=56)
    msg = str(info.value)
    assert info.value.field == "ring"
    for part in ("needs 75 bits", "ring has 64", "20 participants", "weight 1000", "clip 10", "2^56"):
        assert part in msg, (part, msg)
    with pytest.raises(ConfigError, match=r"needs 39 bits but the ring has 32"):
        plan_ring(clip_bound=10.0, weight_bound=1000.0, max_participants=20, bits=32, frac_bits=20)
    with pytest.raises(ConfigError, match=r"max_participants: expected an integer >= 2"):
        plan_ring(clip_bound=1.0, weight_bound=1.0, max_participants=1)
    with pytest.raises(ConfigError, match=r"clip_bound: expected a finite number > 0"):
        plan_ring(clip_bound=float("nan"), weight_bound=1.0, max_participants=3)
    with pytest.raises(ConfigError, match=r"bits: expected 32 or 64"):
        plan_ring(clip_bound=1.0, weight_bound=1.0, max_participants=3, bits=16)
    with pytest.raises(ConfigError, match=r"ring: needs"):
        RingSpec(bits=32, frac_bits=30, clip_bound=1.0, weight_bound=1.0, max_participants=10)


def test_extreme_sum_does_not_wrap() -> None:
    spec = plan_ring(clip_bound=2.0, weight_bound=50.0, max_participants=7, bits=32)
    x = np.full(4, spec.clip_bound)
    for sign in (1.0, -1.0):
        total = np.zeros(4, dtype=spec.dtype)
        for _ in range(spec.max_participants):
            total += encode(sign * x, weight=spec.weight_bound, spec=spec)
        expected = sign * spec.max_participants * spec.weight_bound * spec.clip_bound
        assert np.all(np.abs(decode_sum(total, spec=spec) - expected) <= error_bound(spec, 7))


def test_decode_is_twos_complement() -> None:
    spec = plan_ring(clip_bound=1.0, weight_bound=1.0, max_participants=2, bits=64, frac_bits=10)
    enc = encode(np.array([-0.5, 0.25, -1.0]), weight=1.0, spec=spec)
    assert enc.dtype == np.uint64
    assert enc[0] == 2**64 - 512
    np.testing.assert_array_equal(decode_sum(enc, spec=spec), [-0.5, 0.25, -1.0])


@settings(max_examples=40, deadline=None, database=None)
@given(
    bits=st.sampled_from([32, 64]),
    xs=hnp.arrays(np.float64, st.integers(1, 30), elements=st.floats(-1.0, 1.0)),
    weight=st.floats(1e-3, 100.0),
    n=st.integers(1, 9),
)
def test_encode_decode_within_bound(bits: int, xs: np.ndarray, weight: float, n: int) -> None:
    spec = plan_ring(clip_bound=1.0, weight_bound=100.0, max_participants=9, bits=bits)
    total = np.zeros(xs.shape, dtype=spec.dtype)
    for _ in range(n):
        total += encode(xs, weight=weight, spec=spec)
    got = decode_sum(total, spec=spec)
    exact = [n * Fraction(weight) * Fraction(float(x)) for x in xs]
    worst = max(abs(Fraction(float(g)) - e) for g, e in zip(got, exact, strict=True))
    assert worst <= Fraction(error_bound(spec, n))


def test_encode_refuses_out_of_range() -> None:
    spec = plan_ring(clip_bound=1.0, weight_bound=10.0, max_participants=4)
    with pytest.raises(ProtocolViolation, match=r"clip_bound 1 \(the caller clips\), got max \|x_i\| = 1.5"):
        encode(np.array([0.0, 1.5]), weight=1.0, spec=spec)
    with pytest.raises(ProtocolViolation, match=r"weight: expected a number in \(0, 10\]"):
        encode(np.zeros(2), weight=11.0, spec=spec)
    with pytest.raises(ProtocolViolation, match="weight"):
        encode(np.zeros(2), weight=0.0, spec=spec)
    with pytest.raises(ProtocolViolation, match="1 non-finite"):
        encode(np.array([np.nan, 0.0]), weight=1.0, spec=spec)
    with pytest.raises(ProtocolViolation, match="float array"):
        encode(np.array([1, 0]), weight=1.0, spec=spec)
    with pytest.raises(ProtocolViolation, match="expected dtype uint32"):
        decode_sum(np.zeros(2, dtype=np.uint64), spec=spec)


def test_error_bound_formula() -> None:
    spec = plan_ring(clip_bound=10.0, weight_bound=1e5, max_participants=100)
    n, f = 40, spec.frac_bits
    assert error_bound(spec, n) == pytest.approx(n * 2.0 ** -(f + 1) + n * (1e6 + 1) * 2.0**-52)
