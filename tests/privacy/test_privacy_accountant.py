"""Accountants: PLD against dp_accounting and exact GDP, RDP cross-check, state."""

from __future__ import annotations

import math

import dp_accounting
import pytest

from oneliac_flwr.errors import PrivacyError
from oneliac_flwr.privacy import (
    DpSgdSteps,
    ExactRelease,
    GaussianRelease,
    GdpAccountant,
    LaplaceRelease,
    PldAccountant,
    PoissonSampling,
    RdpAccountant,
    gaussian_full_participation_epsilon,
    make_accountant,
)

DELTA = 1e-5


@pytest.mark.parametrize(
    ("z", "rounds"),
    [(0.8, 1), (0.8, 100), (1.0, 10), (1.0, 100), (1.5, 100), (3.0, 50), (5.0, 3), (0.6, 300)],
)
def test_pld_within_one_percent_of_exact_gdp_and_never_below(z: float, rounds: int) -> None:
    exact = gaussian_full_participation_epsilon(noise_multiplier=z, rounds=rounds, delta=DELTA)
    accountant = PldAccountant().compose(GaussianRelease(z, count=rounds))
    epsilon = accountant.get_epsilon(DELTA)
    assert epsilon >= exact * (1 - 1e-9)  # pessimistic PLD: an upper bound (up to float rounding)
    assert epsilon <= exact * 1.01
    gdp = GdpAccountant().compose(GaussianRelease(z, count=rounds))
    assert gdp.get_epsilon(DELTA) == exact


def test_rounds_one_by_one_equal_one_grouped_event() -> None:
    one_by_one = PldAccountant()
    for _ in range(25):
        one_by_one.compose(GaussianRelease(1.2))
    grouped = PldAccountant().compose(GaussianRelease(1.2, count=25))
    assert one_by_one.get_epsilon(DELTA) == grouped.get_epsilon(DELTA)


def test_heterogeneous_gaussians_compose_exactly() -> None:
    accountant = PldAccountant()
    for z in (0.9, 1.4, 2.0, 1.4):
        accountant.compose(GaussianRelease(z))
    mu = math.sqrt(1 / 0.9**2 + 2 / 1.4**2 + 1 / 2.0**2)
    exact = dp_accounting.get_epsilon_gaussian(1 / mu, DELTA)
    assert exact * (1 - 1e-9) <= accountant.get_epsilon(DELTA) <= exact * 1.01


def test_pld_matches_dp_accounting_built_separately() -> None:
    ours = PldAccountant()
    # Every event composed separately, on a fixed 1e-3 grid: an independent computation.
    reference = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-3)
    for _ in range(5):
        ours.compose(GaussianRelease(1.2))
        reference.compose(dp_accounting.GaussianDpEvent(1.2))
    for _ in range(2):
        ours.compose(LaplaceRelease(0.3))
        reference.compose(dp_accounting.LaplaceDpEvent(1 / 0.3))
    ours.compose(GaussianRelease(1.0, count=20, sampling=PoissonSampling(0.1)))
    reference.compose(dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(1.0)), 20)
    ours.compose(DpSgdSteps(1.1, 0.01, 200))
    reference.compose(dp_accounting.PoissonSampledDpEvent(0.01, dp_accounting.GaussianDpEvent(1.1)), 200)
    assert ours.get_epsilon(DELTA) == pytest.approx(reference.get_epsilon(DELTA), rel=0.01)


SEQUENCES = {
    "gaussian": [GaussianRelease(1.0, count=30)],
    "poisson": [GaussianRelease(0.9, count=50, sampling=PoissonSampling(0.05))],
    "laplace": [LaplaceRelease(0.2, count=10)],
    "mixed": [
        GaussianRelease(2.0, count=4),
        LaplaceRelease(0.5),
        ExactRelease(0.3, 1e-7),
        DpSgdSteps(1.2, 0.02, 100),
    ],
}


@pytest.mark.parametrize("name", sorted(SEQUENCES))
def test_rdp_cross_check_is_never_tighter_than_pld(name: str) -> None:
    pld, rdp = PldAccountant(), RdpAccountant()
    for event in SEQUENCES[name]:
        pld.compose(event)
        rdp.compose(event)
    assert rdp.get_epsilon(DELTA) >= pld.get_epsilon(DELTA)


def test_single_exact_release_spends_its_epsilon() -> None:
    accountant = PldAccountant().compose(ExactRelease(1.0, 1e-6))
    assert accountant.get_epsilon(1e-6) == pytest.approx(1.0, abs=1e-3)
    assert accountant.get_epsilon(1e-6) >= 1.0
    assert accountant.get_epsilon(1e-3) < 1.0  # more delta buys less epsilon


def test_exact_releases_compose_better_than_basic_composition() -> None:
    pld = PldAccountant().compose(ExactRelease(0.1, 1e-7, count=50))
    rdp = RdpAccountant().compose(ExactRelease(0.1, 1e-7, count=50))
    basic = 50 * 0.1
    assert pld.get_epsilon(DELTA) < basic
    # The RDP cross-check composes (eps, delta > 0) releases by basic composition.
    assert rdp.get_epsilon(DELTA) == pytest.approx(basic)
    # Not enough delta left: unbounded.
    assert rdp.get_epsilon(4e-6) == math.inf
    assert math.isinf(PldAccountant().compose(ExactRelease(0.1, 1e-4)).get_epsilon(1e-5))


def test_pure_dp_in_rdp_uses_zcdp_bound() -> None:
    rdp = RdpAccountant().compose(ExactRelease(0.05, 0.0, count=400))
    # Basic composition would say 20; (eps^2/2)-zCDP gives far less.
    assert rdp.get_epsilon(DELTA) < 10.0


def test_empty_accountants_report_zero() -> None:
    for name in ("pld", "rdp", "gdp"):
        assert make_accountant(name).get_epsilon(DELTA) == 0.0


def test_gdp_accountant_rejects_what_it_cannot_describe() -> None:
    accountant = GdpAccountant()
    assert not accountant.supports(LaplaceRelease(1.0))
    assert not accountant.supports(GaussianRelease(1.0, sampling=PoissonSampling(0.5)))
    with pytest.raises(PrivacyError, match="gdp accountant cannot account"):
        accountant.compose(LaplaceRelease(1.0))
    assert accountant.events == ()


def test_compose_rejects_non_events() -> None:
    with pytest.raises(ValueError, match="event: must be a privacy event"):
        PldAccountant().compose(dp_accounting.GaussianDpEvent(1.0))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["pld", "rdp", "gdp"])
def test_state_dict_round_trip_is_exact(name: str) -> None:
    events = [GaussianRelease(1.1), GaussianRelease(1.1), GaussianRelease(0.7, count=3)]
    if name != "gdp":
        events += [LaplaceRelease(0.4), ExactRelease(0.2, 1e-8)]
    original = make_accountant(name)
    for event in events:
        original.compose(event)
    restored = make_accountant(name)
    restored.load_state_dict(original.state_dict())
    assert restored.events == original.events
    assert restored.get_epsilon(DELTA) == original.get_epsilon(DELTA)


def test_load_state_dict_refuses_foreign_state() -> None:
    state = RdpAccountant().compose(GaussianRelease(1.0)).state_dict()
    with pytest.raises(PrivacyError, match=r"state\.accountant: expected 'pld'"):
        PldAccountant().load_state_dict(state)
    other_settings = PldAccountant(value_discretization_interval=1e-3).state_dict()
    with pytest.raises(PrivacyError, match=r"state\.settings"):
        PldAccountant().load_state_dict(other_settings)


def test_copy_is_independent() -> None:
    original = PldAccountant().compose(GaussianRelease(1.0))
    before = original.get_epsilon(DELTA)
    clone = original.copy()
    clone.compose(GaussianRelease(1.0))
    assert original.get_epsilon(DELTA) == before
    assert clone.get_epsilon(DELTA) > before


def test_unknown_accountant_name() -> None:
    with pytest.raises(ValueError, match="primary: must be one of"):
        make_accountant("moments", field="primary")
