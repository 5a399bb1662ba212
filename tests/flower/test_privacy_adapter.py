"""Differential privacy through the Flower adapter, attacked as a coordinator or a hospital would.

Each test named ``test_finding_...`` is a regression test for a finding of the privacy
review (issue 8): it failed on the code before the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, Message, RecordDict

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.errors import ConfigError
from oneliac_flwr.flower.components import build_strategy, new_model
from oneliac_flwr.flower.privacy import LEDGER_FILE, LedgerGuard, federation_state_dir
from oneliac_flwr.flower.records import ARRAYS
from oneliac_flwr.flower.serverapp import run_federation
from oneliac_flwr.coordinator import Aggregate
from oneliac_flwr.privacy import GaussianRelease, PldAccountant, rounds_affordable
from oneliac_flwr.privacy.integrity import StateIntegrityError
from oneliac_flwr.training import get_weights

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
        "privacy_budget": {"mode": mode, "epsilon": epsilon, "delta": DELTA, "noise_multiplier": Z},
    }
    for group, values in groups.items():
        data.setdefault(group, {}).update(values)
    return ExperimentConfig.from_dict(data)


def _final_flat(path: Path) -> np.ndarray:
    state = torch.load(path / "model.pt", weights_only=True)
    return np.concatenate([t.numpy().ravel() for t in state.values()])


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
    assert (federation_state_dir(config) / LEDGER_FILE).is_file() and (tmp_path / "epsilon.png").is_file()
    assert not (tmp_path / LEDGER_FILE).exists()  # the ledger belongs to the federation, not the output folder


def test_finding_a_restart_in_a_new_output_folder_resumes_the_federations_budget(tmp_path: Path) -> None:
    epsilon = _budget_for(3)
    first = _config("organization", epsilon=epsilon, max_rounds=2)
    run_federation(AppGrid(first), first, output_dir=tmp_path / "run-1", run_id=RUN_ID)
    second = _config("organization", epsilon=epsilon, max_rounds=5)
    results = run_federation(AppGrid(second), second, output_dir=tmp_path / "run-2", run_id=RUN_ID)
    assert [r.round for r in results.rounds] == [1]  # 2 already spent, 1 left of 3
    assert results.stopped_reason == "privacy_budget_exhausted"
    ledger = json.loads((federation_state_dir(second) / LEDGER_FILE).read_text())
    assert len(ledger["entries"]) == 3


def test_another_federation_name_has_its_own_budget(tmp_path: Path) -> None:
    epsilon = _budget_for(1)
    config = _config("organization", epsilon=epsilon, max_rounds=1)
    run_federation(AppGrid(config), config, output_dir=tmp_path / "a", run_id=RUN_ID)
    other = _config("organization", epsilon=epsilon, max_rounds=1, federation={"name": "study-2"})
    results = run_federation(AppGrid(other), other, output_dir=tmp_path / "b", run_id=RUN_ID)
    assert results.rounds_completed == 1


def test_a_resumed_ledger_with_another_budget_is_refused_and_nothing_is_overwritten(tmp_path: Path) -> None:
    config = _config("organization", epsilon=_budget_for(3), max_rounds=1)
    run_federation(AppGrid(config), config, output_dir=tmp_path / "a", run_id=RUN_ID)
    other = _config("organization", epsilon=50.0, max_rounds=1)
    with pytest.raises(ConfigError, match="privacy_budget: the federation .* has a ledger"):
        run_federation(AppGrid(other), other, output_dir=tmp_path / "b", run_id=RUN_ID)
    assert not (tmp_path / "b").exists()


def test_finding_a_refused_restart_never_overwrites_results(tmp_path: Path) -> None:
    config = _config("organization", epsilon=_budget_for(1), max_rounds=1)
    run_federation(AppGrid(config), config, output_dir=tmp_path, run_id=RUN_ID)
    before = (tmp_path / "results.json").read_bytes(), (tmp_path / "model.pt").read_bytes()
    with pytest.raises(ConfigError, match="output_dir: .* already holds a run's results.json"):
        run_federation(AppGrid(config), config, output_dir=tmp_path, run_id=RUN_ID)
    assert ((tmp_path / "results.json").read_bytes(), (tmp_path / "model.pt").read_bytes()) == before


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: {**d, "entries": d["entries"][:-1]},
        lambda d: {**d, "entries": [{**e, "events": [{**ev, "noise_multiplier": 1000.0} for ev in e["events"]]} for e in d["entries"]]},
        lambda d: {k: v for k, v in d.items() if k != "mac"},
    ],
    ids=["entry-deleted", "z-set-to-1000", "tag-stripped"],
)
def test_finding_a_hand_edited_ledger_is_refused(tmp_path: Path, tamper) -> None:
    config = _config("organization", epsilon=_budget_for(3), max_rounds=2)
    run_federation(AppGrid(config), config, output_dir=tmp_path / "a", run_id=RUN_ID)
    path = federation_state_dir(config) / LEDGER_FILE
    path.write_text(json.dumps(tamper(json.loads(path.read_text()))))
    with pytest.raises(StateIntegrityError):
        run_federation(AppGrid(config), config, output_dir=tmp_path / "b", run_id=RUN_ID)


def test_finding_a_deleted_ledger_is_refused_not_restarted(tmp_path: Path) -> None:
    config = _config("organization", epsilon=_budget_for(3), max_rounds=1)
    run_federation(AppGrid(config), config, output_dir=tmp_path / "a", run_id=RUN_ID)
    (federation_state_dir(config) / LEDGER_FILE).unlink()
    with pytest.raises(StateIntegrityError, match="missing"):
        run_federation(AppGrid(config), config, output_dir=tmp_path / "b", run_id=RUN_ID)


def test_finding_central_noise_cannot_be_regenerated_from_the_seed(tmp_path: Path) -> None:
    """Same config, same seed, twice: the coordinator's noise (hence the model) differs."""
    config = _config("organization", epsilon=100.0, max_rounds=1, federation={"name": "one"})
    again = _config("organization", epsilon=100.0, max_rounds=1, federation={"name": "two"})
    run_federation(AppGrid(config), config, output_dir=tmp_path / "a", run_id=RUN_ID)
    run_federation(AppGrid(again), again, output_dir=tmp_path / "b", run_id=RUN_ID)
    difference = np.abs(_final_flat(tmp_path / "a") - _final_flat(tmp_path / "b"))
    # z * C / 4 = 0.5 per coordinate: two draws differ by about that, never by 0
    assert difference.max() > 0.1


def test_central_noise_on_the_mean_has_std_z_c_over_m() -> None:
    config = _config("organization", epsilon=100.0, max_rounds=1)
    guard = LedgerGuard(config, dimension=200_000)
    zero = Aggregate(mean_update=[np.zeros(200_000)], total_weight=4, counted=[1, 2, 3, 4], metrics={})
    noisy = guard.privatize(1, zero, np.random.default_rng(0)).mean_update[0]
    expected = Z * config.privacy_budget.clip_norm / 4
    assert abs(noisy.std() / expected - 1) < 0.01
    assert abs(noisy.mean()) < 5 * expected / np.sqrt(noisy.size)
    assert len(guard.ledger.entries) == 1  # recorded when noised


def test_distributed_noise_without_secure_sum_is_refused() -> None:
    config = _config("organization", epsilon=8.0, max_rounds=2, privacy_budget={"noise_placement": "distributed"})
    with pytest.raises(ConfigError, match="privacy_budget.noise_placement"):
        LedgerGuard(config, dimension=62, frac_bits=None)


def test_finding_release_mode_records_releases_of_a_skipped_round() -> None:
    """min_participants above what arrives: the round is skipped, the releases still count."""
    config = _config("release", epsilon=100.0, max_rounds=1, aggregation_config={"min_participants": 4})
    grid = AppGrid(config, drop=lambda node, kind, rnd: node == NODES[0])  # 3 of 4 reply
    strategy = build_strategy(config, rng=np.random.default_rng(0), run_id=RUN_ID)
    strategy.start(grid, ArrayRecord(numpy_ndarrays=get_weights(new_model(config))), num_rounds=1, timeout=5)
    record = strategy.records[1]
    assert record.status == "skipped"
    assert strategy.privacy.ledger.get_current_epsilon() > 0
    assert record.privacy["participants"] == 3 and record.privacy["recorded"] == "on receipt"


def test_finding_release_mode_records_a_release_that_validation_rejects() -> None:
    def poison(node: int, reply: Message) -> None:
        if not reply.has_error() and ARRAYS in reply.content:
            arrays = reply.content[ARRAYS].to_numpy_ndarrays()
            arrays[0] = arrays[0] * np.nan
            reply.content[ARRAYS] = ArrayRecord(numpy_ndarrays=arrays)

    config = _config("release", epsilon=100.0, max_rounds=1)
    strategy = build_strategy(config, rng=np.random.default_rng(0), run_id=RUN_ID)
    grid = AppGrid(config, tamper=poison)
    strategy.start(grid, ArrayRecord(numpy_ndarrays=get_weights(new_model(config))), num_rounds=1, timeout=5)
    assert strategy.records[1].status == "skipped"  # every update failed nan_check
    assert strategy.privacy.ledger.get_current_epsilon() > 0


def test_finding_distributed_mode_records_a_sum_whose_check_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    import oneliac_flwr.coordinator.aggregate as secure_sum  # the core runs the aggregate check
    from oneliac_flwr.validation import CheckResult

    monkeypatch.setattr(
        secure_sum, "check_aggregate", lambda *a, **k: CheckResult(passed=False, check="aggregate_bounds_check", reason="forced")
    )
    config = _config(
        "organization",
        epsilon=8.0,
        max_rounds=1,
        privacy_budget={"noise_placement": "distributed"},
        aggregation_config={"aggregation_method": "secure_sum"},
    )
    strategy = build_strategy(config, rng=np.random.default_rng(0), run_id=RUN_ID)
    strategy.start(AppGrid(config), ArrayRecord(numpy_ndarrays=get_weights(new_model(config))), num_rounds=1, timeout=5)
    record = strategy.records[1]
    assert record.status == "failed" and "aggregate_bounds_check" in record.failure_reason
    assert strategy.privacy.ledger.get_current_epsilon() > 0
    assert record.privacy["recorded"] == "on unmasking"


def test_sample_level_hospitals_refuse_beyond_their_cap_and_the_run_stops(tmp_path: Path) -> None:
    config = ExperimentConfig.from_dict(
        {
            "federation": {"num_organizations": len(NODES)},
            "aggregation_config": {"max_rounds": 6, "min_participants": 2},
            "training": {"learning_rate": 0.05},
            "privacy_budget": {"mode": "sample", "epsilon": 1.0, "delta": DELTA, "noise_multiplier": 5.0},
        }
    )
    results = run_federation(AppGrid(config), config, output_dir=tmp_path, run_id=RUN_ID)
    statuses = [r.status for r in results.rounds]
    assert statuses[:-1] == ["ok"] * (len(statuses) - 1) and statuses[-1] == "skipped"
    assert 1 <= results.rounds_completed < 6
    assert results.stopped_reason == "privacy_budget_exhausted"
    assert "refused for their privacy budget" in results.stop_detail
    assert set(results.rounds[-1].privacy["refused_for_budget"]) == {f"org-{i}" for i in range(len(NODES))}


def test_finding_every_round_refused_is_reported_honestly(tmp_path: Path) -> None:
    """z = 1 with 4 batches per epoch: one round already costs more than epsilon = 1."""
    config = ExperimentConfig.from_dict(
        {
            "federation": {"num_organizations": len(NODES)},
            "aggregation_config": {"max_rounds": 4, "min_participants": 2},
            "privacy_budget": {"mode": "sample", "epsilon": 1.0, "delta": DELTA, "noise_multiplier": 1.0},
        }
    )
    results = run_federation(AppGrid(config), config, output_dir=tmp_path, run_id=RUN_ID)
    assert [r.status for r in results.rounds] == ["skipped"]
    assert results.stopped_reason == "privacy_budget_exhausted"
    assert results.final()["accuracy"] is None  # the untrained model is not a result
    assert not (tmp_path / "model.pt").exists()


def test_finding_a_run_whose_rounds_all_fail_says_so(tmp_path: Path) -> None:
    config = _config("none", epsilon=1.0, max_rounds=2, aggregation_config={"min_participants": 4})
    grid = AppGrid(config, drop=lambda node, kind, rnd: node == NODES[0])
    results = run_federation(grid, config, output_dir=tmp_path, run_id=RUN_ID)
    assert results.stopped_reason == "no_round_completed"
    assert results.final()["accuracy"] is None and not (tmp_path / "model.pt").exists()


def test_results_say_running_until_the_run_ends(tmp_path: Path) -> None:
    seen: list[str] = []
    config = _config("none", epsilon=1.0, max_rounds=2)

    class Watching(AppGrid):
        def send_and_receive(self, messages, *, timeout=None):
            if (tmp_path / "results.json").exists():
                seen.append(json.loads((tmp_path / "results.json").read_text())["stopped_reason"])
            return super().send_and_receive(messages, timeout=timeout)

    run_federation(Watching(config), config, output_dir=tmp_path, run_id=RUN_ID)
    assert seen and set(seen) == {"running"}
    assert json.loads((tmp_path / "results.json").read_text())["stopped_reason"] == "max_rounds_reached"


def test_outputs_are_0644_and_name_organizations_with_node_ids_only_in_the_nodes_table(tmp_path: Path) -> None:
    import stat

    config = _config("none", epsilon=1.0, max_rounds=2)
    grid = AppGrid(config, drop=lambda node, kind, rnd: node == NODES[1] and kind == "train" and rnd == 2)
    run_federation(grid, config, output_dir=tmp_path, run_id=RUN_ID)
    written = [p for p in tmp_path.iterdir() if p.is_file()]
    assert {p.name for p in written} >= {"results.json", "model.pt"}
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in written} == {p.name: 0o644 for p in written}
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["nodes"] == {f"org-{i}": [node] for i, node in enumerate(NODES)}
    second = results["rounds"][1]
    assert second["sampled"] == [f"org-{i}" for i in range(len(NODES))]
    assert [(r["organization"], r["check"]) for r in second["rejected"]] == [("org-1", "no_reply")]
    assert "node-" not in json.dumps(results)
    assert all("node_id" not in r for record in results["rounds"] for r in record["rejected"])


def test_calibrated_distributed_noise_lasts_exactly_max_rounds_with_the_share_failure_delta() -> None:
    """Each round also records the share-failure delta; the calibration leaves room for it."""
    config = ExperimentConfig.from_dict(
        {
            "federation": {"num_organizations": 3},
            "aggregation_config": {"max_rounds": 5, "min_participants": 2, "aggregation_method": "secure_sum"},
            "privacy_budget": {"mode": "organization", "noise_placement": "distributed", "epsilon": 8.0, "delta": DELTA},
        }
    )
    guard = LedgerGuard(config, dimension=62, frac_bits=16)
    assert len(guard.events) == 2  # the Gaussian release and the share-failure delta
    for server_round in range(1, 6):
        assert guard.check_round(server_round) is None, server_round
        guard.on_reveal(server_round, 3)
    assert guard.check_round(6) is not None
    assert 7.9 < guard.ledger.get_current_epsilon() <= 8.0
