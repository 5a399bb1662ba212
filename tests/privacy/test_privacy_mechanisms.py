"""Per-release mechanisms: analytic Gaussian calibration, noise distributions, validation."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from scipy import stats

from oneliac_flwr.errors import ConfigError, PrivacyBudgetExhausted, PrivacyError
from oneliac_flwr.privacy import (
    DEFAULT_DELTA,
    DifferentialPrivacy,
    GaussianRelease,
    LaplaceRelease,
    PrivacyLedger,
    calibrate_analytic_gaussian,
    gaussian_delta,
    gdp_epsilon,
    gdp_mu,
    laplace_scale,
)

DELTA = 1e-5


# ------------------------------------------------------------ exact Gaussian math
@pytest.mark.parametrize("mu", [0.01, 0.3, 1.0, 3.0, 10.0, 40.0])
@pytest.mark.parametrize("delta", [1e-7, 1e-5, 1e-2])
def test_gdp_epsilon_matches_dp_accounting_and_is_never_below(mu: float, delta: float) -> None:
    ours = gdp_epsilon(mu=mu, delta=delta)
    reference = dp_accounting.get_epsilon_gaussian(1.0 / mu, delta)
    assert ours == pytest.approx(reference, rel=1e-9, abs=1e-12)
    # Rounded up: the condition holds at the returned epsilon.
    assert gaussian_delta(mu=mu, epsilon=ours) <= delta


def test_known_value_one_round_z_one() -> None:
    # z = 1, one release: 4.377 exactly (Flower's RDP says 4.73).
    assert gdp_epsilon(mu=1.0, delta=DELTA) == pytest.approx(4.3771781, abs=1e-6)


@pytest.mark.parametrize("epsilon", [0.05, 0.5, 1.0, 3.0, 20.0])
def test_gdp_mu_inverts_gdp_epsilon(epsilon: float) -> None:
    mu = gdp_mu(epsilon=epsilon, delta=DELTA)
    assert gaussian_delta(mu=mu, epsilon=epsilon) <= DELTA
    assert gdp_epsilon(mu=mu, delta=DELTA) == pytest.approx(epsilon, rel=1e-9)


@pytest.mark.parametrize("epsilon", [0.1, 0.5, 0.9, 1.0, 2.0, 5.0, 10.0])
def test_analytic_gaussian_matches_dp_accounting(epsilon: float) -> None:
    sigma = calibrate_analytic_gaussian(epsilon=epsilon, delta=DELTA, sensitivity=2.0)
    assert sigma == pytest.approx(2.0 * dp_accounting.get_sigma_gaussian(epsilon, DELTA), rel=1e-9)


@pytest.mark.parametrize("epsilon", [0.1, 0.5, 0.9])
def test_analytic_gaussian_beats_classic_formula_below_one(epsilon: float) -> None:
    classic = math.sqrt(2 * math.log(1.25 / DELTA)) / epsilon
    analytic = calibrate_analytic_gaussian(epsilon=epsilon, delta=DELTA, sensitivity=1.0)
    assert analytic < classic


@pytest.mark.parametrize("epsilon", [1.0, 2.0, 5.0, 10.0, 50.0])
def test_analytic_gaussian_is_valid_and_tight_above_one(epsilon: float) -> None:
    sigma = calibrate_analytic_gaussian(epsilon=epsilon, delta=DELTA, sensitivity=1.0)
    # Independent check with dp_accounting's PLD (pessimistic, so an upper bound).
    interval = 1e-4 * epsilon
    pld = dp_accounting.pld.PLDAccountant(value_discretization_interval=interval)
    pld.compose(dp_accounting.GaussianDpEvent(sigma))
    spent = pld.get_epsilon(DELTA)
    assert spent <= epsilon + 2 * interval
    assert spent >= 0.999 * epsilon


def test_zero_sensitivity_needs_no_noise() -> None:
    assert calibrate_analytic_gaussian(epsilon=1.0, delta=DELTA, sensitivity=0.0) == 0.0
    assert laplace_scale(epsilon=1.0, sensitivity=0.0) == 0.0


# ------------------------------------------------------------ noise distribution
def test_gaussian_noise_variance_matches_sigma_squared() -> None:
    n = 200_000
    sensitivity = 2.0
    dp = DifferentialPrivacy(0.7, DELTA, "gaussian", rng=np.random.default_rng(1234))
    sigma = calibrate_analytic_gaussian(epsilon=0.7, delta=DELTA, sensitivity=sensitivity)
    noise = dp.add_noise_to_gradients(np.zeros(n), sensitivity)
    assert noise.shape == (n,)
    statistic = (n - 1) * np.var(noise, ddof=1) / sigma**2
    assert stats.chi2.ppf(0.0005, n - 1) < statistic < stats.chi2.ppf(0.9995, n - 1)
    assert abs(noise.mean()) < 4 * sigma / math.sqrt(n)
    # Normal, not Laplace: mean absolute deviation is sigma * sqrt(2 / pi).
    assert np.mean(np.abs(noise)) == pytest.approx(sigma * math.sqrt(2 / math.pi), rel=0.01)


def test_laplace_noise_variance_is_two_b_squared() -> None:
    n = 200_000
    dp = DifferentialPrivacy(0.5, None, "laplace", rng=np.random.default_rng(99))
    scale = laplace_scale(epsilon=0.5, sensitivity=3.0)
    assert scale == pytest.approx(6.0)
    noise = dp.add_noise_to_gradients(np.zeros(n), 3.0)
    # Relative std of the sample variance is about sqrt(5/n) = 0.5% here.
    assert np.var(noise) == pytest.approx(2 * scale**2, rel=0.025)
    assert np.mean(np.abs(noise)) == pytest.approx(scale, rel=0.01)


def test_noise_keeps_structure_shapes_and_dtypes() -> None:
    dp = DifferentialPrivacy(1.0, DELTA, rng=np.random.default_rng(0))
    layers = [np.ones((3, 4), dtype=np.float32), np.zeros(5, dtype=np.float64), np.arange(4)]
    noisy = dp.add_noise_to_gradients(layers, 1.0)
    assert isinstance(noisy, list)
    assert [a.shape for a in noisy] == [(3, 4), (5,), (4,)]
    assert [a.dtype for a in noisy] == [np.float32, np.float64, np.float64]
    assert not np.array_equal(noisy[0], layers[0])
    as_tuple = dp.add_noise_to_gradients(tuple(layers), 1.0)
    assert isinstance(as_tuple, tuple)


def test_same_seed_same_noise() -> None:
    first = DifferentialPrivacy(1.0, DELTA, rng=np.random.default_rng(7)).add_noise_to_gradients(
        np.zeros(10), 1.0
    )
    second = DifferentialPrivacy(1.0, DELTA, rng=np.random.default_rng(7)).add_noise_to_gradients(
        np.zeros(10), 1.0
    )
    np.testing.assert_array_equal(first, second)


# ------------------------------------------------------------ ledger integration
def test_every_release_is_recorded() -> None:
    ledger = PrivacyLedger(epsilon_budget=100.0, delta=DELTA)
    gaussian = DifferentialPrivacy(1.0, DELTA, rng=np.random.default_rng(0), ledger=ledger, label="org-a")
    laplace = DifferentialPrivacy(0.5, None, "laplace", rng=np.random.default_rng(1), ledger=ledger)
    gaussian.add_noise_to_gradients(np.zeros(3), 1.0, round_number=1)
    gaussian.add_noise_to_gradients(np.zeros(3), 1.0, round_number=2)
    laplace.add_noise_to_gradients(np.zeros(3), 1.0, round_number=2)
    events = ledger.events
    assert events == (
        GaussianRelease(gaussian.noise_multiplier),
        GaussianRelease(gaussian.noise_multiplier),
        LaplaceRelease(0.5),
    )
    assert [entry.label for entry in ledger.entries] == ["org-a", "org-a", "release"]
    # One analytic-Gaussian release spends exactly its epsilon.
    assert ledger.entries[0].epsilon_cumulative == pytest.approx(1.0, rel=1e-3)
    assert ledger.entries[0].epsilon_cumulative >= 1.0 - 1e-9


def test_release_refused_when_budget_exhausted_and_nothing_drawn() -> None:
    ledger = PrivacyLedger(epsilon_budget=1.2, delta=DELTA)  # two releases would spend ~1.5
    rng = np.random.default_rng(3)
    dp = DifferentialPrivacy(1.0, DELTA, rng=rng, ledger=ledger)
    dp.add_noise_to_gradients(np.zeros(4), 1.0, round_number=1)
    state_before = rng.bit_generator.state
    with pytest.raises(PrivacyBudgetExhausted, match="epsilon_budget"):
        dp.add_noise_to_gradients(np.zeros(4), 1.0, round_number=2)
    assert len(ledger.entries) == 1
    assert rng.bit_generator.state == state_before


# ------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epsilon": 0, "delta": DELTA}, "epsilon: must be > 0, got 0"),
        ({"epsilon": -1, "delta": DELTA}, "epsilon: must be > 0, got -1"),
        ({"epsilon": 1.0, "delta": 0.0}, r"delta: must be in \(0, 1\), got 0.0"),
        ({"epsilon": 1.0, "delta": 1.0}, r"delta: must be in \(0, 1\), got 1.0"),
        ({"epsilon": 1.0, "delta": -0.1}, r"delta: must be in \(0, 1\), got -0.1"),
        ({"epsilon": 1.0, "delta": DELTA, "mechanism": "exponential"}, "mechanism: must be one of"),
        ({"epsilon": float("nan"), "delta": DELTA}, "epsilon: must be a number"),
    ],
)
def test_bad_parameters_are_rejected_with_the_field_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        DifferentialPrivacy(**kwargs)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, PrivacyError)


def test_negative_sensitivity_is_rejected() -> None:
    dp = DifferentialPrivacy(1.0, DELTA, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="sensitivity: must be >= 0, got -1"):
        dp.add_noise_to_gradients(np.zeros(3), -1)
    with pytest.raises(ValueError, match=r"sensitivity: must be >= 0, got -0\.5"):
        calibrate_analytic_gaussian(epsilon=1.0, delta=DELTA, sensitivity=-0.5)


def test_laplace_ignores_delta_and_records_pure_dp() -> None:
    dp = DifferentialPrivacy(2.0, 0.3, "laplace")
    assert dp.delta == 0.0
    assert dp.release_event() == LaplaceRelease(2.0)
    assert dp.release_event().to_dict()["delta"] == 0.0


def test_rng_must_be_a_generator() -> None:
    with pytest.raises(ValueError, match=r"rng: must be a numpy\.random\.Generator"):
        DifferentialPrivacy(1.0, DELTA, rng=np.random.RandomState(0))  # type: ignore[arg-type]


def test_epsilon_alone_is_a_gaussian_release_at_the_documented_delta() -> None:
    dp = DifferentialPrivacy(0.1)
    assert dp.mechanism == "gaussian"
    assert dp.delta == DEFAULT_DELTA == 1e-5
    explicit = DifferentialPrivacy(0.1, 1e-5, "gaussian")
    assert dp.noise_multiplier == explicit.noise_multiplier
    assert dp.release_event() == GaussianRelease(explicit.noise_multiplier)
    # The analytic Gaussian at (0.1, 1e-5) needs sigma ~ 30.75 per unit sensitivity
    # (the classic sqrt(2 ln(1.25/delta)) / epsilon would be 48.4).
    assert dp.noise_multiplier == pytest.approx(30.7496, abs=1e-3)


def test_default_noise_is_drawn_from_os_entropy_not_a_fixed_seed() -> None:
    np.random.seed(0)
    first = DifferentialPrivacy(1.0).add_noise_to_gradients(np.zeros(16), 1.0)
    np.random.seed(0)
    second = DifferentialPrivacy(1.0).add_noise_to_gradients(np.zeros(16), 1.0)
    assert not np.array_equal(first, second)
