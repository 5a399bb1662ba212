"""Events: immutability, dp_accounting conversion, JSON round trip, validation."""

from __future__ import annotations

import dataclasses
import json

import dp_accounting
import pytest

from oneliac_flwr.privacy import (
    DpSgdSteps,
    ExactRelease,
    GaussianRelease,
    LaplaceRelease,
    PoissonSampling,
    event_from_dict,
)
from oneliac_flwr.privacy.events import EpsilonDeltaDpEvent

ALL_EVENTS = [
    GaussianRelease(1.3),
    GaussianRelease(0.9, count=7),
    GaussianRelease(2.0, count=3, sampling=PoissonSampling(0.05)),
    LaplaceRelease(0.25),
    LaplaceRelease(1.5, count=4),
    ExactRelease(0.7, 1e-7),
    ExactRelease(0.2, 0.0, count=3),
    DpSgdSteps(1.1, 0.01, 250),
]


@pytest.mark.parametrize("event", ALL_EVENTS, ids=repr)
def test_json_round_trip(event: object) -> None:
    data = json.loads(json.dumps(event.to_dict(), allow_nan=False))  # type: ignore[attr-defined]
    assert event_from_dict(data) == event


@pytest.mark.parametrize("event", ALL_EVENTS, ids=repr)
def test_events_are_frozen_and_hashable(event: object) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.count = 99  # type: ignore[attr-defined]
    assert len({event, event}) == 1


def test_conversion_to_dp_accounting_events() -> None:
    assert GaussianRelease(1.3).to_dp_event() == dp_accounting.GaussianDpEvent(1.3)
    assert GaussianRelease(0.9, count=7).to_dp_event() == dp_accounting.SelfComposedDpEvent(
        dp_accounting.GaussianDpEvent(0.9), 7
    )
    assert GaussianRelease(2.0, 3, PoissonSampling(0.05)).to_dp_event() == dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(0.05, dp_accounting.GaussianDpEvent(2.0)), 3
    )
    assert LaplaceRelease(0.25).to_dp_event() == dp_accounting.LaplaceDpEvent(4.0)
    assert DpSgdSteps(1.1, 0.01, 250).to_dp_event() == dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(0.01, dp_accounting.GaussianDpEvent(1.1)), 250
    )
    assert ExactRelease(0.7, 1e-7).to_dp_event() == EpsilonDeltaDpEvent(0.7, 1e-7)
    assert isinstance(ExactRelease(0.7, 1e-7).to_dp_event(), dp_accounting.DpEvent)


def test_sample_rate_one_is_full_participation() -> None:
    event = GaussianRelease(1.0, sampling=PoissonSampling(1.0))
    assert event.sampling is None
    assert event.full_participation
    assert event == GaussianRelease(1.0)


def test_single_strips_the_count() -> None:
    assert GaussianRelease(1.0, 5, PoissonSampling(0.1)).single() == GaussianRelease(
        1.0, 1, PoissonSampling(0.1)
    )
    assert DpSgdSteps(1.0, 0.1, 9).single() == DpSgdSteps(1.0, 0.1, 1)
    assert DpSgdSteps(1.0, 0.1, 9).count == 9


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: GaussianRelease(0.0), "noise_multiplier: must be > 0, got 0.0"),
        (lambda: GaussianRelease(-1.0), "noise_multiplier: must be > 0, got -1.0"),
        (lambda: GaussianRelease(float("inf")), "noise_multiplier: must be finite"),
        (lambda: GaussianRelease(1.0, count=0), "count: must be an integer >= 1, got 0"),
        (lambda: GaussianRelease(1.0, count=True), "count: must be an integer >= 1, got True"),
        (lambda: PoissonSampling(0.0), r"sample_rate: must be in \(0, 1\], got 0.0"),
        (lambda: PoissonSampling(1.5), r"sample_rate: must be in \(0, 1\], got 1.5"),
        (lambda: LaplaceRelease(0.0), "epsilon: must be > 0, got 0.0"),
        (lambda: ExactRelease(-0.1, 0.0), "epsilon: must be >= 0, got -0.1"),
        (lambda: ExactRelease(1.0, 1.0), r"delta: must be in \[0, 1\), got 1.0"),
        (lambda: DpSgdSteps(1.0, 0.1, 0), "steps: must be an integer >= 1, got 0"),
        (lambda: event_from_dict({"type": "bogus"}), "event.type: must be one of"),
        (lambda: event_from_dict({"type": "gaussian"}), "event.noise_multiplier: is missing"),
        (lambda: event_from_dict([1, 2]), "event: must be a mapping"),
    ],
)
def test_invalid_events_name_the_field(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]


def test_stock_dp_accounting_does_not_claim_to_support_epsilon_delta_events() -> None:
    # Only our accountants know how to compose it (see the accountant tests).
    stock = dp_accounting.pld.PLDAccountant()
    assert not stock.supports(EpsilonDeltaDpEvent(1.0, 1e-6))
