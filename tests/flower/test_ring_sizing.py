"""The secure-sum ring is sized from the federation, or the run is refused at start-up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, Context, RecordDict

from oneliac_flwr.config import ExperimentConfig, SecureSumConfig
from oneliac_flwr.errors import ConfigError
from oneliac_flwr.flower.components import build_strategy, new_model
from oneliac_flwr.flower.secure_sum import ring_for
from oneliac_flwr.flower.serverapp import run_federation
from oneliac_flwr.training import get_weights

from conftest import RUN_ID, AppGrid

N_ORGS = 50


class FederationGrid(AppGrid):
    """The in-memory grid of ``conftest`` with ``n`` simulated organizations."""

    def __init__(self, config: ExperimentConfig, n: int) -> None:
        super().__init__(config)
        self.nodes = [1000 + 7 * i for i in range(n)]
        self.contexts = {
            node: Context(
                run_id=RUN_ID,
                node_id=node,
                node_config={"partition-id": i, "num-partitions": n},
                state=RecordDict(),
                run_config={},
            )
            for i, node in enumerate(self.nodes)
        }

    def get_node_ids(self) -> list[int]:
        return list(self.nodes)


class RefusingGrid:
    """A grid that records every exchange it is asked for."""

    def __init__(self) -> None:
        self.sent: list[object] = []

    def get_node_ids(self) -> list[int]:
        return [1, 2, 3]

    def send_and_receive(self, messages, *, timeout=None):  # noqa: ANN001, ANN201 - Grid protocol
        self.sent.extend(messages)
        return []


def _secure(num_organizations: int, **secure_sum: object) -> dict:
    return {
        "federation": {"num_organizations": num_organizations, "min_partition_size": 5},
        "aggregation_config": {"aggregation_method": "secure_sum", "min_participants": 2, "max_rounds": 1},
        "strategy": {"fraction_evaluate": 0.0},
        "secure_sum": dict(secure_sum),
    }


def test_null_max_participants_is_the_default_and_sizes_the_ring_from_the_federation() -> None:
    assert SecureSumConfig().max_participants is None
    config = ExperimentConfig.from_dict(_secure(N_ORGS))
    assert config.secure_sum_participants() == N_ORGS
    assert ring_for(config).max_participants == N_ORGS
    explicit = ExperimentConfig.from_dict(_secure(N_ORGS, max_participants=80))
    assert ring_for(explicit).max_participants == 80


def test_simulation_of_50_organizations_with_secure_sum_completes_its_round() -> None:
    config = ExperimentConfig.from_dict(_secure(N_ORGS))
    grid = FederationGrid(config, N_ORGS)
    strategy = build_strategy(config, rng=np.random.default_rng(0), run_id=RUN_ID)
    initial = ArrayRecord(numpy_ndarrays=get_weights(new_model(config)))
    strategy.start(grid, initial, num_rounds=1, timeout=5)
    record = strategy.records[1]
    assert record.status == "ok", record
    assert len(record.secure_sum["counted"]) == N_ORGS
    assert strategy.aggregator.spec.max_participants == N_ORGS  # type: ignore[attr-defined]


def test_deployment_config_that_cannot_fit_is_refused_naming_the_field() -> None:
    flat = ExperimentConfig.from_dict(_secure(3)).to_run_config()
    flat.update({"federation.num_organizations": N_ORGS, "secure_sum.max_participants": 32})
    with pytest.raises(ConfigError, match=r"secure_sum\.max_participants: is 32, but each round samples up to 50") as info:
        ExperimentConfig.from_run_config(flat)
    assert info.value.field == "secure_sum.max_participants"
    # Sampling half of the federation fits a ring for 32 of them.
    flat["strategy.fraction_train"] = 0.5
    assert ExperimentConfig.from_run_config(flat).sampled_per_round() == 25


def test_a_ring_that_cannot_hold_the_federation_is_refused_before_round_1(tmp_path: Path) -> None:
    flat = ExperimentConfig.from_dict(_secure(3)).to_run_config()
    flat.update({"federation.num_organizations": 100, "secure_sum.bits": 32, "secure_sum.frac_bits": 16})
    config = ExperimentConfig.from_run_config(flat)
    grid = RefusingGrid()
    with pytest.raises(ConfigError, match=r"ring for 100 participants \(null: federation\.num_organizations = 100\)") as info:
        run_federation(grid, config, output_dir=tmp_path)  # type: ignore[arg-type]
    assert info.value.field == "secure_sum.max_participants"
    assert grid.sent == []


def test_more_nodes_than_the_federation_declared_fail_the_round_with_both_numbers() -> None:
    # The nodes belong to a federation of 4 (as their node config says); the coordinator
    # was told 3, so its ring holds 3: known only when the 4th node is sampled.
    nodes_config = ExperimentConfig.from_dict(_secure(4))
    server_config = ExperimentConfig.from_dict(_secure(3))
    grid = AppGrid(nodes_config)
    strategy = build_strategy(server_config, rng=np.random.default_rng(0), run_id=RUN_ID)
    initial = ArrayRecord(numpy_ndarrays=get_weights(new_model(server_config)))
    result = strategy.start(grid, initial, num_rounds=1, timeout=5)
    record = strategy.records[1]
    assert record.status == "failed"
    assert "federation.num_organizations: 4 nodes were sampled in round 1" in (record.failure_reason or "")
    assert "ring for 3 participants" in (record.failure_reason or "")
    assert "train" not in grid.exchanges  # refused before any update was masked
    final = np.concatenate([a.ravel() for a in result.arrays.to_numpy_ndarrays()])
    assert np.array_equal(final, np.concatenate([a.ravel() for a in initial.to_numpy_ndarrays()]))
