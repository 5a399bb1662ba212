"""Noise calibration for a budget and rounds affordable."""

from __future__ import annotations

import math

import pytest

from oneliac_flwr.privacy import (
    GaussianRelease,
    PoissonSampling,
    PrivacyLedger,
    calibrate_noise_multiplier,
    gaussian_full_participation_epsilon,
    gdp_mu,
    rounds_affordable,
    rounds_epsilon,
)


@pytest.mark.parametrize(
    ("epsilon", "delta", "rounds"),
    [(1.0, 1e-5, 1), (8.0, 1e-5, 6), (0.5, 1e-5, 20), (4.0, 1e-6, 100), (30.0, 1e-5, 200)],
)
def test_calibrated_z_spends_the_budget_in_exactly_t_rounds(
    epsilon: float, delta: float, rounds: int
) -> None:
    z = calibrate_noise_multiplier(epsilon=epsilon, delta=delta, rounds=rounds)
    ledger = PrivacyLedger(epsilon_budget=epsilon, delta=delta)
    if rounds <= 10:
        for round_number in range(1, rounds + 1):
            assert not ledger.would_exceed(GaussianRelease(z))
            ledger.record(GaussianRelease(z), round_number=round_number)
    else:
        assert not ledger.would_exceed(GaussianRelease(z, count=rounds))
        ledger.record(GaussianRelease(z, count=rounds), round_number=rounds)
    spent = ledger.get_current_epsilon()
    assert 0.99 * epsilon <= spent <= epsilon
    assert ledger.would_exceed(GaussianRelease(z))
    exact = gaussian_full_participation_epsilon(noise_multiplier=z, rounds=rounds, delta=delta)
    assert 0.99 * epsilon <= exact <= epsilon


def test_calibration_with_poisson_sampling_uses_amplification() -> None:
    epsilon, delta, rounds, rate = 3.0, 1e-5, 10, 0.2
    z = calibrate_noise_multiplier(epsilon=epsilon, delta=delta, rounds=rounds, sample_rate=rate)
    ledger = PrivacyLedger(epsilon_budget=epsilon, delta=delta)
    ledger.record(GaussianRelease(z, count=rounds, sampling=PoissonSampling(rate)), round_number=rounds)
    assert 0.99 * epsilon <= ledger.get_current_epsilon() <= epsilon
    assert z < math.sqrt(rounds) / gdp_mu(epsilon=epsilon, delta=delta)  # full participation needs more


def test_sample_rate_one_means_full_participation() -> None:
    assert calibrate_noise_multiplier(epsilon=2.0, delta=1e-5, rounds=3, sample_rate=1.0) == (
        calibrate_noise_multiplier(epsilon=2.0, delta=1e-5, rounds=3)
    )


@pytest.mark.parametrize(("z", "epsilon"), [(1.0, 10.0), (2.0, 8.0), (0.8, 50.0)])
def test_rounds_affordable_is_the_largest_that_fits(z: float, epsilon: float) -> None:
    k = rounds_affordable(epsilon=epsilon, delta=1e-5, noise_multiplier=z)
    assert k >= 1
    assert rounds_epsilon(noise_multiplier=z, rounds=k, delta=1e-5) <= epsilon
    assert rounds_epsilon(noise_multiplier=z, rounds=k + 1, delta=1e-5) > epsilon


def test_rounds_affordable_with_sampling() -> None:
    k = rounds_affordable(epsilon=2.0, delta=1e-5, noise_multiplier=1.5, sample_rate=0.1)
    full = rounds_affordable(epsilon=2.0, delta=1e-5, noise_multiplier=1.5)
    assert k > full
    assert rounds_epsilon(noise_multiplier=1.5, rounds=k, delta=1e-5, sample_rate=0.1) <= 2.0
    assert rounds_epsilon(noise_multiplier=1.5, rounds=k + 1, delta=1e-5, sample_rate=0.1) > 2.0


def test_nothing_affordable_when_one_round_overspends() -> None:
    assert rounds_affordable(epsilon=0.1, delta=1e-5, noise_multiplier=1.0) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epsilon": 0.0, "delta": 1e-5, "rounds": 1}, "epsilon: must be > 0, got 0.0"),
        ({"epsilon": 1.0, "delta": 0.0, "rounds": 1}, r"delta: must be in \(0, 1\)"),
        ({"epsilon": 1.0, "delta": 1e-5, "rounds": 0}, "rounds: must be an integer >= 1, got 0"),
        (
            {"epsilon": 1.0, "delta": 1e-5, "rounds": 1, "sample_rate": 0.0},
            r"sample_rate: must be in \(0, 1\]",
        ),
    ],
)
def test_bad_calibration_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        calibrate_noise_multiplier(**kwargs)
