"""The core privacy guard over its storage seam (LedgerStore): resume, record once,
integrity, budget; the same guard the Flower path and the REST service use."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.coordinator import Aggregate
from oneliac_flwr.coordinator.privacy_guard import (
    LEDGER_FILE,
    LedgerGuard,
    TaggedFileLedgerStore,
    build_privacy_guard,
)
from oneliac_flwr.errors import ConfigError
from oneliac_flwr.privacy import PrivacyLedger, rounds_epsilon
from oneliac_flwr.privacy.integrity import StateIntegrityError

Z = 2.0
DELTA = 1e-5
KEY = b"k" * 32


class DictStore:
    """A LedgerStore holding the tagged document in memory (as a database row would)."""

    source = "test store"

    def __init__(self) -> None:
        self.document: dict | None = None
        self.saves = 0

    def load(self) -> PrivacyLedger | None:
        if self.document is None:
            return None
        return PrivacyLedger.from_signed_dict(json.loads(json.dumps(self.document)), key=KEY, source=self.source)

    def save(self, ledger: PrivacyLedger) -> None:
        self.document = ledger.to_signed_dict(key=KEY)
        self.saves += 1


def config(mode: str, *, epsilon: float = 50.0, **budget: object) -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "aggregation_config": {"max_rounds": 5, "min_participants": 2},
        "privacy_budget": {"mode": mode, "epsilon": epsilon, "delta": DELTA, "noise_multiplier": Z, **budget},
    })  # fmt: skip


def epsilon_of(releases: int) -> float:
    return rounds_epsilon(noise_multiplier=Z, rounds=releases, delta=DELTA)


def test_the_flower_guard_is_the_core_guard() -> None:
    from oneliac_flwr.flower import privacy as flower_privacy

    assert flower_privacy.LedgerGuard is LedgerGuard
    assert flower_privacy.build_privacy_guard is build_privacy_guard


def test_a_fresh_guard_per_transaction_resumes_and_records_a_round_once() -> None:
    store = DictStore()
    template = LedgerGuard(config("release"), dimension=10, round_offset=0)
    first = template.with_store(store, round_offset=0)
    first.on_receipt(1, 1)
    spent = first.ledger.get_current_epsilon()
    assert spent > 0 and store.saves == 2  # started, then the release
    second = template.with_store(store, round_offset=0)  # another request, another process
    assert second.ledger.get_current_epsilon() == spent
    second.on_receipt(1, 1)  # the same round again: already in the ledger, not spent twice
    assert second.ledger.get_current_epsilon() == spent and len(second.ledger.entries) == 1
    second.on_receipt(2, 1)
    assert len(template.with_store(store, round_offset=0).ledger.entries) == 2
    assert template.ledger.entries == ()  # the template stays untouched


def test_organization_noise_is_recorded_when_noised_and_resumed_from_the_store() -> None:
    store = DictStore()
    guard = LedgerGuard(config("organization"), dimension=1000, store=store, round_offset=0)
    zero = Aggregate(mean_update=[np.zeros(1000)], total_weight=2, counted=[0, 1], metrics={})
    noisy = guard.privatize(1, zero, np.random.default_rng(1)).mean_update[0]
    assert noisy.std() > 0.5  # z * C / 2 = 1
    resumed = LedgerGuard(config("organization"), dimension=1000, store=store, round_offset=0)
    assert resumed.ledger.get_current_epsilon() == pytest.approx(epsilon_of(1), rel=1e-6)
    assert resumed.ledger.entries[0].participants == 2


def test_check_round_stops_before_the_budget_is_exceeded() -> None:
    store = DictStore()
    guard = LedgerGuard(config("organization", epsilon=epsilon_of(2) * 1.001), dimension=10, store=store, round_offset=0)
    zero = Aggregate(mean_update=[np.zeros(10)], total_weight=2, counted=[0, 1], metrics={})
    for round_ in (1, 2):
        assert guard.check_round(round_) is None
        guard.privatize(round_, zero, np.random.default_rng(round_))
    reason = LedgerGuard(config("organization", epsilon=epsilon_of(2) * 1.001), dimension=10, store=store,
                         round_offset=0).check_round(3)  # fmt: skip
    assert reason is not None and "round 3 would raise epsilon" in reason


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: {**d, "entries": d["entries"][:-1]},
        lambda d: {**d, "totals": {**d["totals"], "epsilon_spent": 0.0}},
        lambda d: {k: v for k, v in d.items() if k != "mac"},
    ],
    ids=["entry-deleted", "total-lowered", "tag-stripped"],
)
def test_an_edited_stored_ledger_is_refused(tamper) -> None:  # noqa: ANN001
    store = DictStore()
    guard = LedgerGuard(config("release"), dimension=10, store=store, round_offset=0)
    guard.on_receipt(1, 3)
    guard.on_receipt(2, 3)
    store.document = tamper(store.document)
    with pytest.raises(StateIntegrityError):
        LedgerGuard(config("release"), dimension=10, store=store, round_offset=0)


def test_a_stored_ledger_with_another_budget_is_refused() -> None:
    store = DictStore()
    LedgerGuard(config("release"), dimension=10, store=store).on_receipt(1, 2)
    with pytest.raises(ConfigError, match="privacy_budget: .* has a ledger \\(test store\\)"):
        LedgerGuard(config("release", epsilon=99.0), dimension=10, store=store)


def test_the_tagged_file_store_keeps_the_flower_behaviour(tmp_path: Path) -> None:
    state = tmp_path / "federation"
    guard = build_privacy_guard(config("release"), dimension=10, frac_bits=None, state_dir=state)
    assert isinstance(guard, LedgerGuard)
    guard.on_receipt(1, 3)
    assert (state / LEDGER_FILE).is_file()
    again = build_privacy_guard(config("release"), dimension=10, frac_bits=None, state_dir=state)
    assert again.ledger.get_current_epsilon() == guard.ledger.get_current_epsilon()
    assert again.round_offset == 1  # a new Flower run continues the federation's numbering
    (state / LEDGER_FILE).unlink()
    with pytest.raises(StateIntegrityError, match="missing"):
        TaggedFileLedgerStore(state)
