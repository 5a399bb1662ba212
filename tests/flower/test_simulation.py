"""End-to-end in-process simulation: accuracy rises and results.json has every field."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.flower.simulation import simulate

ROUND_FIELDS = {
    "round",
    "status",
    "participants",
    "accepted",
    "rejected",
    "rejected_by_reason",
    "centralized_accuracy",
    "centralized_loss",
    "federated_accuracy",
    "federated_loss",
    "wall_seconds",
    "per_organization",
}


@pytest.fixture(scope="module")
def three_round_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("sim")
    config = ExperimentConfig.from_dict({"aggregation_config": {"max_rounds": 3}, "federation": {"num_organizations": 3}})
    return simulate(config, output_dir=out), out


def test_accuracy_rises_over_rounds(three_round_run: tuple[dict, Path]) -> None:
    results, _ = three_round_run
    initial = results["initial"]["centralized_accuracy"]
    final = results["final"]["accuracy"]
    assert final > initial + 0.1
    assert final >= 0.9


def test_results_json_has_the_documented_fields(three_round_run: tuple[dict, Path]) -> None:
    results, _ = three_round_run
    assert results["config"]["federation"]["num_organizations"] == 3
    assert len(results["rounds"]) == 3
    for record in results["rounds"]:
        assert ROUND_FIELDS <= set(record)
        assert record["accepted"] == 3 and sorted(record["participants"]) == ["org-0", "org-1", "org-2"]
        assert record["wall_seconds"] > 0
    final = results["final"]
    assert final["rounds_completed"] == 3
    assert final["stopped_reason"] == "max_rounds_reached"
    assert {"accuracy", "loss"} <= set(final)
    assert set(results["per_organization_evaluation"]) == {"org-0", "org-1", "org-2"}
    for org, site in results["organizations"].items():
        assert site["rounds_counted"] == 3 and site["rejections"] == 0
        assert len(site["label_counts"]) == 2 and sum(site["label_counts"]) > 50, org
        assert abs(sum(site["label_fractions"]) - 1.0) < 1e-9


def test_model_and_plots_are_written(three_round_run: tuple[dict, Path]) -> None:
    _, out = three_round_run
    state = torch.load(out / "model.pt", weights_only=True)
    assert state["0.weight"].shape == (2, 30)
    assert (out / "accuracy.png").stat().st_size > 1000
    assert (out / "loss.png").stat().st_size > 1000
