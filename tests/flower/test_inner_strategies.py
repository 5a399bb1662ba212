"""Every supported inner strategy and model trains through our wrapper and the real ClientApp."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.flower.components import build_strategy, new_model
from oneliac_flwr.flower.inner import WEIGHTED_MEAN_STRATEGIES
from oneliac_flwr.training import get_weights

from conftest import NODES, RUN_ID, AppGrid


@pytest.mark.parametrize("strategy", sorted(WEIGHTED_MEAN_STRATEGIES))
@pytest.mark.parametrize("method", ["fedavg", "secure_sum"])
def test_strategy_and_mlp_train_through_the_wrapper(strategy: str, method: str) -> None:
    config = ExperimentConfig.from_dict(
        {
            "model": {"name": "mlp", "hidden_sizes": [8]},
            "strategy": {"name": strategy, "fraction_evaluate": 0.0},
            "federation": {"num_organizations": len(NODES)},
            "aggregation_config": {"aggregation_method": method, "max_rounds": 2},
        }
    )
    wrapped = build_strategy(config, rng=np.random.default_rng(0), run_id=RUN_ID)
    initial = get_weights(new_model(config))
    result = wrapped.start(AppGrid(config), ArrayRecord(numpy_ndarrays=initial), num_rounds=2, timeout=5)
    assert [r.status for r in wrapped.records.values()] == ["ok", "ok"], [r.failure_reason for r in wrapped.records.values()]
    final = result.arrays.to_numpy_ndarrays()
    assert [a.dtype for a in final] == [a.dtype for a in initial]
    assert any(not np.allclose(a, b) for a, b in zip(final, initial, strict=True))
