"""Ledger: recording, report, budget checks, atomic save, resume and integrity."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dp_accounting
import pytest

from oneliac_flwr.errors import PrivacyBudgetExhausted, PrivacyError
from oneliac_flwr.privacy.integrity import StateIntegrityError
from oneliac_flwr.privacy import (
    ExactRelease,
    GaussianRelease,
    LaplaceRelease,
    LedgerIntegrityError,
    PoissonSampling,
    PrivacyLedger,
    gaussian_full_participation_epsilon,
    load_or_create_ledger_key,
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
    with pytest.raises(PrivacyError, match="schema_version: expected 2, got 99"):
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
    template = PrivacyLedger(epsilon_budget=10.0, delta=DELTA).to_dict()
    template["primary_settings"]["relative_precision"] = 1e-3
    ledger = PrivacyLedger.from_dict(template)  # an empty ledger with coarser settings
    ledger.record(GaussianRelease(2.0, sampling=PoissonSampling(0.3)), round_number=1)
    default = PrivacyLedger(epsilon_budget=10.0, delta=DELTA)
    default.record(GaussianRelease(2.0, sampling=PoissonSampling(0.3)), round_number=1)
    path = ledger.save(tmp_path / "ledger.json")
    resumed = PrivacyLedger.load(path)
    assert resumed.to_dict()["primary_settings"]["relative_precision"] == 1e-3
    assert resumed.get_current_epsilon() == ledger.get_current_epsilon()
    # Coarser grid, still pessimistic: never below, and close.
    assert resumed.get_current_epsilon() >= default.get_current_epsilon() * (1 - 1e-9)
    assert resumed.get_current_epsilon() == pytest.approx(default.get_current_epsilon(), rel=0.01)


# ------------------------------------------------------------ integrity
@pytest.fixture(scope="module")
def saved() -> dict[str, Any]:
    return _build_mixed_ledger().to_dict()


def _delete_middle_entry(data: dict[str, Any]) -> None:
    del data["entries"][1]
    data["totals"]["entries"] -= 1
    data["totals"]["releases"] -= 1


def _noise_to_1000(data: dict[str, Any]) -> None:
    data["entries"][0]["events"][0]["noise_multiplier"] = 1000.0
    data["entries"][0]["noise_multiplier"] = 1000.0


def _lower_total(data: dict[str, Any]) -> None:
    data["totals"]["epsilon_spent"] = 0.5


def _lower_cumulative(data: dict[str, Any]) -> None:
    data["entries"][-1]["epsilon_cumulative"] = 0.5


def _change_delta(data: dict[str, Any]) -> None:
    data["delta"] = 1e-3


def _delete_last_entry_only(data: dict[str, Any]) -> None:
    del data["entries"][-1]


TAMPERINGS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "entry deleted": (_delete_middle_entry, r"entries\[1\]\.epsilon_cumulative"),
    "z set to 1000": (_noise_to_1000, r"entries\[0\]\.epsilon_round"),
    "total edited": (_lower_total, "totals.epsilon_spent"),
    "entry total edited": (_lower_cumulative, r"entries\[5\]\.epsilon_cumulative"),
    "delta edited": (_change_delta, r"entries\[0\]\.epsilon_round"),
    "last entry deleted": (_delete_last_entry_only, "totals.entries"),
}


@pytest.mark.parametrize("name", sorted(TAMPERINGS))
def test_tampered_ledger_is_refused_naming_the_file_and_the_field(
    tmp_path: Path, saved: dict[str, Any], name: str
) -> None:
    tamper, field = TAMPERINGS[name]
    data = json.loads(json.dumps(saved))
    tamper(data)
    path = tmp_path / "privacy_ledger.json"
    path.write_text(json.dumps(data))
    with pytest.raises(LedgerIntegrityError, match=field) as caught:
        PrivacyLedger.load(path)
    assert str(path) in str(caught.value)
    assert isinstance(caught.value, PrivacyError)


def test_budget_or_delta_other_than_the_configuration_is_refused(tmp_path: Path) -> None:
    path = _build_mixed_ledger().save(tmp_path / "ledger.json")
    with pytest.raises(LedgerIntegrityError, match="epsilon_budget: the file says 50.0"):
        PrivacyLedger.load(path, epsilon_budget=8.0, delta=DELTA)
    with pytest.raises(LedgerIntegrityError, match="delta: the file says 1e-05"):
        PrivacyLedger.load(path, epsilon_budget=50.0, delta=1e-6)
    assert PrivacyLedger.load(path, epsilon_budget=50.0, delta=DELTA).epsilon_budget == 50.0


def test_honest_save_and_load_with_a_key_round_trips_exactly(tmp_path: Path) -> None:
    key = load_or_create_ledger_key(tmp_path / "state")
    ledger = _build_mixed_ledger()
    path = ledger.save(tmp_path / "ledger.json", key=key)
    assert json.loads(path.read_text())["mac"]["algorithm"] == "hmac-sha256"
    resumed = PrivacyLedger.load(path, key=key)
    assert resumed.entries == ledger.entries
    assert resumed.to_dict() == ledger.to_dict()
    assert resumed.get_current_epsilon() == ledger.get_current_epsilon()
    assert resumed.report() == ledger.report()


def test_key_refuses_a_stripped_a_wrong_or_an_edited_mac(tmp_path: Path) -> None:
    key = load_or_create_ledger_key(tmp_path / "state")
    path = _build_mixed_ledger().save(tmp_path / "ledger.json", key=key)
    original = json.loads(path.read_text())

    stripped = dict(original)
    del stripped["mac"]
    path.write_text(json.dumps(stripped))
    with pytest.raises(LedgerIntegrityError, match="mac: missing"):
        PrivacyLedger.load(path, key=key)

    path.write_text(json.dumps(original))
    with pytest.raises(LedgerIntegrityError, match="mac: does not match"):
        PrivacyLedger.load(path, key=os.urandom(32))

    # A consistent forgery (everything recomputed, here: a budget raised) still fails the MAC.
    forged = json.loads(json.dumps(original))
    forged["epsilon_budget"] = 1000.0
    path.write_text(json.dumps(forged))
    with pytest.raises(LedgerIntegrityError, match="mac: does not match"):
        PrivacyLedger.load(path, key=key)


def test_ledger_key_file_is_0600_and_stable(tmp_path: Path) -> None:
    state = tmp_path / "state"
    key = load_or_create_ledger_key(state)
    assert len(key) == 32
    key_file = state / "ledger.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert sorted(p.name for p in state.iterdir()) == ["ledger.key"]  # no temp file left
    assert load_or_create_ledger_key(state) == key
    assert load_or_create_ledger_key(tmp_path / "other") != key


def test_ledger_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    load_or_create_ledger_key(tmp_path)
    (tmp_path / "ledger.key").chmod(0o644)
    with pytest.raises(StateIntegrityError, match="must be 0600, is 0644"):
        load_or_create_ledger_key(tmp_path)
