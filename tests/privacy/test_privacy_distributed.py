"""Distributed DP: noise shares, quantization lemma and the accounted sensitivity."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from oneliac_flwr.privacy import (
    GaussianRelease,
    client_noise_std,
    distributed_noise_share,
    distributed_release,
    effective_sensitivity,
    quantize,
    share_bound,
)
from oneliac_flwr.privacy.distributed import lattice_split


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
