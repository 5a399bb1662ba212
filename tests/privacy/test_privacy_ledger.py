"""Ledger: recording, report, budget checks, atomic save and resume."""

from __future__ import annotations

import json
from pathlib import Path

import dp_accounting
import pytest

from oneliac_flwr.errors import PrivacyBudgetExhausted, PrivacyError
from oneliac_flwr.privacy import (
    ExactRelease,
    GaussianRelease,
    LaplaceRelease,
    PoissonSampling,
    PrivacyLedger,
    gaussian_full_participation_epsilon,
    rounds_affordable,
    rounds_epsilon,
)

DELTA = 1e-5


def _build_mixed_ledger() -> PrivacyLedger:
    ledger = PrivacyLedger(epsilon_budget=50.0, delta=DELTA)
    for round_number in (1, 2, 3):
        ledger.record(GaussianRelease(1.5), round_number=round_number, clip_norm=1.0, participants=4)
    ledger.record([LaplaceRelease(0.3)], round_number=3, label="org-b")
    ledger.record(
        GaussianRelease(2.0, sampling=PoissonSampling(0.2)), round_number=4, label="central", participants=2
    )
    ledger.record(ExactRelease(0.1, 1e-8), round_number=5, label="org-a")
    return ledger


_MIXED: dict[str, object] = {}


def _mixed_ledger() -> PrivacyLedger:
    """A fresh copy of one mixed ledger (built once: recording is the slow part)."""
    if "data" not in _MIXED:
        _MIXED["data"] = _build_mixed_ledger().to_dict()
    return PrivacyLedger.from_dict(_MIXED["data"])  # type: ignore[arg-type]


def test_ledger_matches_dp_accounting_pld_built_in_the_test() -> None:
    ledger = PrivacyLedger(epsilon_budget=50.0, delta=DELTA)
    reference = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-3)
    for round_number in (1, 2, 3):
        ledger.record(GaussianRelease(1.5), round_number=round_number)
        reference.compose(dp_accounting.GaussianDpEvent(1.5))
    ledger.record(LaplaceRelease(0.3), round_number=3, label="org-b")
    reference.compose(dp_accounting.LaplaceDpEvent(1 / 0.3))
    ledger.record(GaussianRelease(2.0, sampling=PoissonSampling(0.2)), round_number=4)
    reference.compose(dp_accounting.PoissonSampledDpEvent(0.2, dp_accounting.GaussianDpEvent(2.0)))
    assert ledger.get_current_epsilon() == pytest.approx(reference.get_epsilon(DELTA), rel=0.01)
    # Same events plus an (eps, delta) release: it costs something.
    assert _mixed_ledger().get_current_epsilon() > ledger.get_current_epsilon()


@pytest.mark.parametrize(("z", "rounds"), [(0.8, 4), (1.0, 6), (2.5, 5)])
def test_full_participation_rounds_recorded_one_by_one_track_exact_gdp(z: float, rounds: int) -> None:
    ledger = PrivacyLedger(epsilon_budget=1e6, delta=DELTA)
    for round_number in range(1, rounds + 1):
        entry = ledger.record(GaussianRelease(z), round_number=round_number)
        exact = gaussian_full_participation_epsilon(noise_multiplier=z, rounds=round_number, delta=DELTA)
        assert exact * (1 - 1e-9) <= entry.epsilon_cumulative <= exact * 1.01
    assert ledger.closed_form_epsilon() == pytest.approx(
        gaussian_full_participation_epsilon(noise_multiplier=z, rounds=rounds, delta=DELTA)
    )
    assert ledger.cross_check_epsilon() >= ledger.get_current_epsilon()


def test_report_has_one_row_per_round_with_the_adapter_fields() -> None:
    report = _mixed_ledger().report()
    assert report["accountant"] == "pld"
    assert report["cross_check_accountant"] == "rdp"
    assert [row["round"] for row in report["rounds"]] == [1, 2, 3, 4, 5]
    first, third = report["rounds"][0], report["rounds"][2]
    assert first["mechanism"] == "gaussian"
    assert first["noise_multiplier"] == 1.5
    assert first["clip_norm"] == 1.0
    assert first["participants"] == 4
    assert first["delta"] == DELTA
    assert third["labels"] == ["central", "org-b"]
    assert third["mechanism"] == "gaussian+laplace"
    assert third["epsilon_round"] > first["epsilon_round"]  # round 3 also had a Laplace release
    cumulative = [row["epsilon_cumulative"] for row in report["rounds"]]
    assert cumulative == sorted(cumulative)
    assert report["epsilon_spent"] == cumulative[-1]
    assert report["epsilon_cross_check"] >= report["epsilon_spent"]
    assert report["epsilon_closed_form_gdp"] is None  # not all full-participation Gaussian
    assert report["epsilon_remaining"] == pytest.approx(50.0 - report["epsilon_spent"])
    json.dumps(report, allow_nan=False)


def test_epsilon_if_does_not_change_the_ledger() -> None:
    ledger = _mixed_ledger()
    before = ledger.get_current_epsilon()
    projected = ledger.epsilon_if([GaussianRelease(1.0)])
    assert projected > before
    assert ledger.get_current_epsilon() == before
    assert len(ledger.events) == 6


def test_budget_check_allows_exactly_the_affordable_rounds() -> None:
    z, k = 2.0, 5
    budget = 0.5 * (
        rounds_epsilon(noise_multiplier=z, rounds=k, delta=DELTA)
        + rounds_epsilon(noise_multiplier=z, rounds=k + 1, delta=DELTA)
    )
    assert rounds_affordable(epsilon=budget, delta=DELTA, noise_multiplier=z) == k
    ledger = PrivacyLedger(epsilon_budget=budget, delta=DELTA)
    decisions = []
    for round_number in range(1, k + 2):
        event = GaussianRelease(z)
        exceeds = ledger.would_exceed([event])
        decisions.append(exceeds)
        if not exceeds:
            ledger.record(event, round_number=round_number)
    assert decisions == [False] * k + [True]
    assert ledger.get_current_epsilon() <= budget
    with pytest.raises(PrivacyBudgetExhausted, match="above the budget"):
        ledger.ensure_budget(GaussianRelease(z))


def test_budget_boundary_is_inclusive() -> None:
    z = 1.7
    spent_after_three = rounds_epsilon(noise_multiplier=z, rounds=3, delta=DELTA)
    ledger = PrivacyLedger(epsilon_budget=spent_after_three, delta=DELTA)
    ledger.record(GaussianRelease(z, count=2), round_number=2)
    assert not ledger.would_exceed(GaussianRelease(z))


def test_record_beyond_budget_is_still_recorded() -> None:
    ledger = PrivacyLedger(epsilon_budget=0.5, delta=DELTA)
    entry = ledger.record(GaussianRelease(1.0), round_number=1)
    assert entry.epsilon_cumulative > 0.5
    assert ledger.report()["budget_exhausted"] is True
    assert ledger.remaining_epsilon() == 0.0


def test_save_load_round_trip_resumes_exactly(tmp_path: Path) -> None:
    ledger = _build_mixed_ledger()
    path = ledger.save(tmp_path / "run" / "privacy_ledger.json")
    assert sorted(p.name for p in path.parent.iterdir()) == ["privacy_ledger.json"]  # no temp file left
    resumed = PrivacyLedger.load(path)
    assert resumed.get_current_epsilon() == ledger.get_current_epsilon()
    assert resumed.cross_check_epsilon() == ledger.cross_check_epsilon()
    assert resumed.entries == ledger.entries
    assert resumed.report() == ledger.report()
    assert resumed.last_round == 5
    # Continuing after a restart gives what continuing without one gives.
    ledger.record(GaussianRelease(1.5), round_number=6)
    resumed.record(GaussianRelease(1.5), round_number=6)
    assert resumed.get_current_epsilon() == ledger.get_current_epsilon()


def test_save_overwrites_atomically(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    ledger = PrivacyLedger(epsilon_budget=10.0, delta=DELTA)
    ledger.save(path)
    ledger.record(GaussianRelease(3.0), round_number=1)
    ledger.save(path)
    assert len(json.loads(path.read_text())["entries"]) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ledger.json"]


def test_infinite_epsilon_is_saved_as_strict_json(tmp_path: Path) -> None:
    ledger = PrivacyLedger(epsilon_budget=1.0, delta=DELTA)
    ledger.record(ExactRelease(0.1, 1e-3), round_number=1)  # delta above the ledger's: unbounded
    assert ledger.get_current_epsilon() == float("inf")
    path = ledger.save(tmp_path / "ledger.json")
    assert "Infinity" not in path.read_text()
    assert PrivacyLedger.load(path).entries[0].epsilon_cumulative == float("inf")


def test_load_rejects_bad_files(tmp_path: Path) -> None:
    with pytest.raises(PrivacyError, match="no privacy ledger"):
        PrivacyLedger.load(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(PrivacyError, match="not valid JSON"):
        PrivacyLedger.load(broken)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(PrivacyError, match="schema_version: expected 1, got 99"):
        PrivacyLedger.load(wrong)


def test_gdp_primary_refuses_events_it_cannot_account_for() -> None:
    ledger = PrivacyLedger(epsilon_budget=10.0, delta=DELTA, primary="gdp", cross_check="pld")
    ledger.record(GaussianRelease(2.0), round_number=1)
    with pytest.raises(PrivacyError, match="gdp accountant cannot account"):
        ledger.record(LaplaceRelease(1.0), round_number=2)
    assert len(ledger.entries) == 1
    assert ledger.get_current_epsilon() == ledger.closed_form_epsilon()


def test_cross_check_that_cannot_describe_an_event_reports_none() -> None:
    ledger = PrivacyLedger(epsilon_budget=10.0, delta=DELTA, cross_check="gdp")
    ledger.record(GaussianRelease(2.0), round_number=1)
    assert ledger.cross_check_epsilon() is not None
    ledger.record(LaplaceRelease(1.0), round_number=2)
    assert ledger.cross_check_epsilon() is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epsilon_budget": 0, "delta": DELTA}, "epsilon_budget: must be > 0, got 0"),
        ({"epsilon_budget": 1.0, "delta": 1.0}, r"delta: must be in \(0, 1\), got 1.0"),
        ({"epsilon_budget": 1.0, "delta": DELTA, "primary": "moments"}, "primary: must be one of"),
        ({"epsilon_budget": 1.0, "delta": DELTA, "cross_check": "x"}, "cross_check: must be one of"),
    ],
)
def test_bad_ledger_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PrivacyLedger(**kwargs)


def test_bad_record_arguments() -> None:
    ledger = PrivacyLedger(epsilon_budget=1.0, delta=DELTA)
    with pytest.raises(ValueError, match="round_number: must be an integer >= 0, got -1"):
        ledger.record(GaussianRelease(1.0), round_number=-1)
    with pytest.raises(ValueError, match="events: must contain at least one"):
        ledger.record([], round_number=1)
    with pytest.raises(ValueError, match="clip_norm: must be >= 0"):
        ledger.record(GaussianRelease(1.0), round_number=1, clip_norm=-2.0)
    assert ledger.entries == ()


def test_resume_keeps_the_accountant_settings_it_was_saved_with(tmp_path: Path) -> None:
    ledger = PrivacyLedger(epsilon_budget=10.0, delta=DELTA)
    ledger.record(GaussianRelease(2.0, sampling=PoissonSampling(0.3)), round_number=1)
    data = ledger.to_dict()
    data["primary_settings"]["relative_precision"] = 1e-3
    path = tmp_path / "ledger.json"
    path.write_text(json.dumps(data))
    resumed = PrivacyLedger.load(path)
    assert resumed.to_dict()["primary_settings"]["relative_precision"] == 1e-3
    # Coarser grid, still pessimistic: never below, and close.
    assert resumed.get_current_epsilon() >= ledger.get_current_epsilon() * (1 - 1e-9)
    assert resumed.get_current_epsilon() == pytest.approx(ledger.get_current_epsilon(), rel=0.01)
