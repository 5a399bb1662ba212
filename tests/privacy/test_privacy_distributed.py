"""Distributed DP: noise shares, quantization lemma and the accounted sensitivity."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from oneliac_flwr.privacy import (
    ExactRelease,
    GaussianRelease,
    PrivacyLedger,
    client_noise_std,
    distributed_noise_share,
    distributed_release,
    effective_sensitivity,
    quantize,
    share_bound,
)
from oneliac_flwr.privacy.distributed import (
    central_secure_sum_release,
    lattice_split,
    quantized_sensitivity,
    share_bound_failure_probability,
    share_failure_release,
)


def test_client_noise_std_formula() -> None:
    assert client_noise_std(noise_multiplier=1.2, clip_norm=0.5, min_contributors=9) == pytest.approx(0.2)


def test_sum_of_t_shares_has_std_z_times_c() -> None:
    z, clip, t, n = 1.1, 2.0, 8, 50_000
    std = client_noise_std(noise_multiplier=z, clip_norm=clip, min_contributors=t)
    rng = np.random.default_rng(5)
    total = sum(
        distributed_noise_share(np.zeros(n), noise_std=std, fractional_bits=20, rng=rng) for _ in range(t)
    )
    target = z * clip
    statistic = (n - 1) * np.var(total, ddof=1) / target**2
    assert stats.chi2.ppf(0.0005, n - 1) < statistic < stats.chi2.ppf(0.9995, n - 1)


def test_effective_sensitivity_bounds() -> None:
    clip, d, t = 1.0, 100_000, 10
    values = [
        effective_sensitivity(clip_norm=clip, dimension=d, fractional_bits=f, min_contributors=t)
        for f in (8, 12, 16, 24, 40)
    ]
    assert all(v > clip for v in values)
    assert values == sorted(values, reverse=True)  # more fractional bits, less inflation
    assert values[-1] == pytest.approx(clip, rel=1e-6)
    gamma = 2.0**-16
    closed_form_m_equals_t = math.sqrt((clip + math.sqrt(d) * gamma / 2) ** 2 + d * t**2 * gamma**2 / 4)
    assert values[2] <= closed_form_m_equals_t


def test_coarse_grid_uses_fewer_clients_in_the_split() -> None:
    # With a coarse grid the best split uses m < t clients, and beats m = t.
    clip, d, t, f = 1.0, 10_000, 1_000, 6
    gamma = 2.0**-f
    delta_q = clip + math.sqrt(d) * gamma / 2
    at_t = math.sqrt(delta_q**2 + d * t**2 * gamma**2 / 4)
    value = effective_sensitivity(clip_norm=clip, dimension=d, fractional_bits=f, min_contributors=t)
    assert value < at_t


@settings(max_examples=50, deadline=None)
@given(
    values=st.lists(st.floats(-50, 50, allow_nan=False), min_size=1, max_size=20),
    shift=st.lists(st.integers(-10_000, 10_000), min_size=20, max_size=20),
    bits=st.integers(0, 20),
)
def test_quantize_commutes_with_grid_shifts(values: list[float], shift: list[int], bits: int) -> None:
    gamma = 2.0**-bits
    y = np.array(values)
    # Include exact half-way points, where round-half-even would break the lemma.
    y[::2] = (np.floor(y[::2] / gamma) + 0.5) * gamma
    v = np.array(shift[: len(values)], dtype=np.float64) * gamma
    np.testing.assert_array_equal(
        quantize(y + v, fractional_bits=bits), quantize(y, fractional_bits=bits) + v
    )


@settings(max_examples=50, deadline=None)
@given(
    units=st.lists(st.integers(-100_000, 100_000), min_size=1, max_size=30),
    parts=st.integers(1, 40),
    bits=st.integers(0, 16),
)
def test_lattice_split_meets_the_bound_used_in_the_proof(units: list[int], parts: int, bits: int) -> None:
    gamma = 2.0**-bits
    v = np.array(units, dtype=np.float64) * gamma
    split = lattice_split(v, parts=parts, fractional_bits=bits)
    np.testing.assert_array_equal(split.sum(axis=0), v)
    np.testing.assert_array_equal(np.rint(split / gamma), split / gamma)
    d = v.size
    assert np.sum(split**2) <= np.sum(v**2) / parts + d * parts * gamma**2 / 4 + 1e-9 * (1 + np.sum(v**2))


def test_share_is_on_the_grid_and_exact_without_noise() -> None:
    rng = np.random.default_rng(1)
    update = [rng.normal(size=(4, 3)), rng.normal(size=5)]
    shares = distributed_noise_share(update, noise_std=0.3, fractional_bits=16, rng=rng)
    for share, original in zip(shares, update, strict=True):
        assert share.shape == original.shape
        scaled = share * 2**16
        np.testing.assert_array_equal(scaled, np.rint(scaled))
    plain = distributed_noise_share(update[0], noise_std=0.0, fractional_bits=16, rng=rng)
    np.testing.assert_array_equal(plain, quantize(update[0], fractional_bits=16))
    assert np.max(np.abs(plain - update[0])) <= 2.0**-17


def test_release_event_accounts_the_inflated_sensitivity() -> None:
    clip, d, f, t, z = 1.0, 50_000, 12, 20, 1.3
    sensitivity = effective_sensitivity(clip_norm=clip, dimension=d, fractional_bits=f, min_contributors=t)
    # Shares sized from the clip norm: accounted multiplier is a bit below z.
    std = client_noise_std(noise_multiplier=z, clip_norm=clip, min_contributors=t)
    event = distributed_release(
        noise_std=std, clip_norm=clip, dimension=d, fractional_bits=f, min_contributors=t
    )
    assert event == GaussianRelease(z * clip / sensitivity)
    assert event.noise_multiplier < z
    # Shares sized from the effective sensitivity: accounted multiplier is z.
    std = client_noise_std(noise_multiplier=z, clip_norm=sensitivity, min_contributors=t)
    event = distributed_release(
        noise_std=std, clip_norm=clip, dimension=d, fractional_bits=f, min_contributors=t
    )
    assert event.noise_multiplier == pytest.approx(z, rel=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"noise_multiplier": 0.0, "clip_norm": 1.0, "min_contributors": 2}, "noise_multiplier: must be > 0"),
        ({"noise_multiplier": 1.0, "clip_norm": -1.0, "min_contributors": 2}, "clip_norm: must be > 0"),
        (
            {"noise_multiplier": 1.0, "clip_norm": 1.0, "min_contributors": 0},
            "min_contributors: must be an integer >= 1",
        ),
    ],
)
def test_bad_distributed_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        client_noise_std(**kwargs)


def test_fractional_bits_range() -> None:
    with pytest.raises(ValueError, match="fractional_bits: must be <= 52, got 60"):
        effective_sensitivity(clip_norm=1.0, dimension=3, fractional_bits=60, min_contributors=2)
    with pytest.raises(ValueError, match="vector: must lie on the grid"):
        lattice_split(np.array([0.3]), parts=2, fractional_bits=2)


def test_share_bound_holds_empirically_and_grows_with_confidence() -> None:
    std, d, p, trials = 0.5, 500, 0.2, 300
    bound = share_bound(clip_norm=1.0, noise_std=std, dimension=d, fractional_bits=16, failure_probability=p)
    rng = np.random.default_rng(11)
    update = np.full(d, 1.0 / np.sqrt(d))
    exceeded = sum(
        np.max(np.abs(distributed_noise_share(update, noise_std=std, fractional_bits=16, rng=rng))) > bound
        for _ in range(trials)
    )
    assert exceeded / trials <= p + 3 * np.sqrt(p * (1 - p) / trials)
    tighter = share_bound(
        clip_norm=1.0, noise_std=std, dimension=d, fractional_bits=16, failure_probability=1e-12
    )
    assert tighter > bound > 1.0


# ------------------------------------------------ share-bound failure delta
def test_failure_probability_inverts_share_bound() -> None:
    std, clip, d, f = 0.3, 1.0, 10_000, 16
    for p in (1e-6, 1e-9, 1e-12):
        bound = share_bound(
            clip_norm=clip, noise_std=std, dimension=d, fractional_bits=f, failure_probability=p
        )
        got = share_bound_failure_probability(
            bound=bound, clip_norm=clip, noise_std=std, dimension=d, fractional_bits=f
        )
        assert got == pytest.approx(p, rel=1e-6)
    # A bound inside C + gamma always fails; no noise never does.
    common = {"clip_norm": 1.0, "dimension": 3, "fractional_bits": 8}
    assert share_bound_failure_probability(bound=1.0, noise_std=0.1, **common) == 1.0
    assert share_bound_failure_probability(bound=2.0, noise_std=0.0, **common) == 0.0


def test_failure_probability_is_an_upper_bound_by_simulation() -> None:
    std, clip, d, f = 1.0, 0.5, 4, 10
    bound = clip + 2.0**-f + 2.0 * std  # loose: failures are frequent enough to count
    p = share_bound_failure_probability(
        bound=bound, clip_norm=clip, noise_std=std, dimension=d, fractional_bits=f
    )
    rng = np.random.default_rng(3)
    trials = 20_000
    update = np.full(d, clip / 2.0)  # ||x|| = C
    shares = np.stack(
        [distributed_noise_share(update, noise_std=std, fractional_bits=f, rng=rng) for _ in range(trials)]
    )
    observed = float(np.mean(np.any(np.abs(shares) > bound, axis=1)))
    assert observed <= p
    assert observed > 0.3 * p  # and not absurdly loose here


def test_share_failure_release_adds_its_delta_to_the_ledger() -> None:
    event = share_failure_release(failure_probability=1e-9, clients=10, epsilon_budget=2.0)
    assert event == ExactRelease(0.0, (1.0 + math.exp(2.0)) * 1e-8)
    round_event = distributed_release(
        noise_std=0.5, clip_norm=1.0, dimension=100, fractional_bits=16, min_contributors=4
    )
    plain = PrivacyLedger(epsilon_budget=2.0, delta=1e-5, cross_check=None)
    plain.record(round_event, round_number=1)
    with_failure = PrivacyLedger(epsilon_budget=2.0, delta=1e-5, cross_check=None)
    entry = with_failure.record([round_event, event], round_number=1)
    assert entry.noise_multiplier == round_event.noise_multiplier  # the delta event carries no noise
    assert with_failure.get_current_epsilon() > plain.get_current_epsilon()
    with pytest.raises(ValueError, match="failure_probability: gives delta_extra"):
        share_failure_release(failure_probability=0.2, clients=10, epsilon_budget=2.0)


# ------------------------------------------------ shares on the grid
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_noise_share_is_float64_on_the_grid_exactly(dtype: type) -> None:
    f = 24
    rng = np.random.default_rng(8)
    update = [rng.normal(0, 0.1, size=(7, 5)).astype(dtype), rng.normal(0, 0.1, size=3).astype(dtype)]
    shares = distributed_noise_share(update, noise_std=0.7, fractional_bits=f, rng=rng)
    for share in shares:
        assert share.dtype == np.float64
        scaled = share * 2.0**f
        assert np.array_equal(scaled, np.rint(scaled))
        assert not np.array_equal(share.astype(np.float32).astype(np.float64) * 2.0**f, np.rint(scaled))


# ------------------------------------------------ central noise under secure sum
def test_central_noise_under_secure_sum_accounts_for_rounding() -> None:
    clip, d, f, z = 1.0, 10_000, 12, 1.5
    sensitivity = quantized_sensitivity(clip_norm=clip, dimension=d, fractional_bits=f)
    assert sensitivity == pytest.approx(1.0 + 100.0 * 2.0**-13)
    event = central_secure_sum_release(noise_multiplier=z, clip_norm=clip, dimension=d, fractional_bits=f)
    assert event == GaussianRelease(z * clip / sensitivity)
    assert event.noise_multiplier < z
    # The bound holds for a worst case: every coordinate rounded up by gamma/2.
    gamma = 2.0**-f
    x = np.full(d, clip / math.sqrt(d))
    x = np.floor(x / gamma) * gamma + gamma / 2.0 - 1e-15  # just below the round-up point...
    x *= clip / np.linalg.norm(x)
    rounded = quantize(x, fractional_bits=f)
    assert np.linalg.norm(rounded) > clip
    assert np.linalg.norm(rounded) <= sensitivity
