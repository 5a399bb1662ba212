"""Differential privacy through the Flower adapter: budget stops, resume, client-side DP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.errors import ConfigError
from oneliac_flwr.flower.privacy import LEDGER_FILE, LedgerGuard, apply_update_privacy
from oneliac_flwr.flower.serverapp import run_federation
from oneliac_flwr.flower.strategy import Aggregate
from oneliac_flwr.privacy import GaussianRelease, PldAccountant, rounds_affordable

from conftest import NODES, RUN_ID, AppGrid

Z = 2.0
DELTA = 1e-5


def _budget_for(rounds: int) -> float:
    """An epsilon that affords exactly ``rounds`` Gaussian rounds of noise multiplier Z."""
    accountant = PldAccountant()
    for _ in range(rounds):
        accountant.compose(GaussianRelease(Z))
    return accountant.get_epsilon(DELTA) * 1.001


def _config(mode: str, *, epsilon: float, max_rounds: int, **groups: dict) -> ExperimentConfig:
    data: dict = {
        "federation": {"num_organizations": len(NODES)},
        "aggregation_config": {"max_rounds": max_rounds, "min_participants": 2},
        "strategy": {"fraction_evaluate": 0.0},
        "privacy_budget": {"mode": mode, "epsilon": epsilon, "delta": DELTA, "noise_multiplier": Z},
    }
    for group, values in groups.items():
        data.setdefault(group, {}).update(values)
    return ExperimentConfig.from_dict(data)


def test_budget_of_k_rounds_stops_after_exactly_k_and_saves_everything(tmp_path: Path) -> None:
    epsilon = _budget_for(3)
    assert rounds_affordable(epsilon=epsilon, delta=DELTA, noise_multiplier=Z) == 3
    config = _config("organization", epsilon=epsilon, max_rounds=6)
    results = run_federation(AppGrid(config), config, output_dir=tmp_path, run_id=RUN_ID)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r.round for r in results.rounds] == [1, 2, 3]
    assert saved["final"]["stopped_reason"] == "privacy_budget_exhausted"
    assert saved["final"]["rounds_completed"] == 3
    assert "round 4 would raise epsilon" in saved["final"]["stop_detail"]
    totals = [r["privacy"]["epsilon_total"] for r in saved["rounds"]]
    assert totals == sorted(totals) and totals[-1] <= epsilon
    assert saved["privacy_report"]["epsilon_budget"] == epsilon
    assert torch.load(tmp_path / "model.pt", weights_only=True)["0.weight"].shape == (2, 30)
    assert (tmp_path / LEDGER_FILE).is_file() and (tmp_path / "epsilon.png").is_file()


def test_a_restarted_coordinator_resumes_the_spent_budget(tmp_path: Path) -> None:
    epsilon = _budget_for(3)
    first = _config("organization", epsilon=epsilon, max_rounds=2)
    run_federation(AppGrid(first), first, output_dir=tmp_path, run_id=RUN_ID)
    spent = json.loads((tmp_path / LEDGER_FILE).read_text())
    second = _config("organization", epsilon=epsilon, max_rounds=5)
    results = run_federation(AppGrid(second), second, output_dir=tmp_path, run_id=RUN_ID)
    assert [r.round for r in results.rounds] == [1]  # 2 already spent, 1 left of 3
    assert results.stopped_reason == "privacy_budget_exhausted"
    ledger = json.loads((tmp_path / LEDGER_FILE).read_text())
    assert len(ledger["entries"]) == len(spent["entries"]) + 1 == 3


def test_a_resumed_ledger_with_another_budget_is_refused(tmp_path: Path) -> None:
    config = _config("organization", epsilon=_budget_for(3), max_rounds=1)
    run_federation(AppGrid(config), config, output_dir=tmp_path, run_id=RUN_ID)
    other = _config("organization", epsilon=50.0, max_rounds=1)
    with pytest.raises(ConfigError, match="privacy_budget: the saved ledger"):
        LedgerGuard(other, dimension=62, ledger_path=tmp_path / LEDGER_FILE)


def test_central_noise_on_the_mean_has_std_z_c_over_m() -> None:
    config = _config("organization", epsilon=100.0, max_rounds=1)
    guard = LedgerGuard(config, dimension=200_000)
    zero = Aggregate(mean_update=[np.zeros(200_000)], total_weight=4, counted=[1, 2, 3, 4], metrics={})
    noisy = guard.privatize(1, zero, np.random.default_rng(0)).mean_update[0]
    expected = Z * config.privacy_budget.clip_norm / 4
    assert abs(noisy.std() / expected - 1) < 0.01
    assert abs(noisy.mean()) < 5 * expected / np.sqrt(noisy.size)


def test_distributed_noise_without_secure_sum_is_refused() -> None:
    config = _config("organization", epsilon=8.0, max_rounds=2, privacy_budget={"noise_placement": "distributed"})
    with pytest.raises(ConfigError, match="privacy_budget.noise_placement"):
        LedgerGuard(config, dimension=62, frac_bits=None)


def test_release_mode_clips_and_adds_calibrated_noise() -> None:
    update = [np.full(50_000, 3.0)]
    settings = ConfigRecord({"mode": "release", "clip-norm": 1.0, "release-epsilon": 1.0, "delta": DELTA, "mechanism": "gaussian"})
    private, declared = apply_update_privacy(update, settings)
    noise = private[0] - 1.0 / np.sqrt(50_000)  # the clipped update is 3/|3| * (1/sqrt(n)) per coordinate
    assert declared.clip_norm == 1.0 and declared.mechanism == "gaussian"
    assert abs(noise.std() / declared.noise_multiplier - 1) < 0.02
    classic = np.sqrt(2 * np.log(1.25 / DELTA)) / 1.0
    assert declared.noise_multiplier < classic  # analytic Gaussian beats the classic formula


def test_sample_level_epsilon_accumulates_and_clients_refuse_beyond_budget(tmp_path: Path) -> None:
    config = ExperimentConfig.from_dict(
        {
            "federation": {"num_organizations": len(NODES)},
            "aggregation_config": {"max_rounds": 6, "min_participants": 2},
            "strategy": {"fraction_evaluate": 0.0},
            "training": {"learning_rate": 0.05},
            "privacy_budget": {"mode": "sample", "epsilon": 0.85, "delta": DELTA, "noise_multiplier": 5.0},
        }
    )
    results = run_federation(AppGrid(config), config, output_dir=tmp_path, run_id=RUN_ID)
    spent = [r.privacy["epsilon_total"] for r in results.rounds if r.privacy]
    # z = 5, sample rate 1/3, 3 steps per round, PLD: epsilon 0.46, 0.65, 0.79; a 4th round
    # would reach 0.92 (Opacus' RDP would say 0.52, 0.72, 0.88, 1.02)
    assert len(spent) == 3 and all(b > a for a, b in zip(spent, spent[1:], strict=False))
    assert max(spent) <= 0.85
    # every client declared it cannot afford round 4: the coordinator stops before it
    assert [r.round for r in results.rounds] == [1, 2, 3]
    assert results.stopped_reason == "privacy_budget_exhausted"
    assert "only 0 organization(s) can afford round 4" in results.stop_detail


def test_every_organization_refusing_stops_the_run_gracefully(tmp_path: Path) -> None:
    """z = 1 with 4 batches per epoch: one round already costs more than epsilon = 1."""
    config = ExperimentConfig.from_dict(
        {
            "federation": {"num_organizations": len(NODES)},
            "aggregation_config": {"max_rounds": 4, "min_participants": 2},
            "strategy": {"fraction_evaluate": 0.0},
            "privacy_budget": {"mode": "sample", "epsilon": 1.0, "delta": DELTA, "noise_multiplier": 1.0},
        }
    )
    results = run_federation(AppGrid(config), config, output_dir=tmp_path, run_id=RUN_ID)
    assert [r.status for r in results.rounds] == ["skipped"]
    assert results.stopped_reason == "privacy_budget_exhausted"
    assert "can afford round 2" in results.stop_detail
    assert (tmp_path / "model.pt").is_file()
