"""The adapter's choice of sharing graph (docs/secure-sum.md section 12) and its settings."""

from __future__ import annotations

import pytest

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.errors import ConfigError
from oneliac_flwr.flower.clientapp import secure_settings
from oneliac_flwr.flower.secure_sum import graph_for


def _config(**secure_sum: object) -> ExperimentConfig:
    return ExperimentConfig.from_dict(
        {
            "federation": {"num_organizations": 100},
            "aggregation_config": {"aggregation_method": "secure_sum", "min_participants": 2},
            "strategy": {"fraction_evaluate": 0.0},
            "secure_sum": dict(secure_sum),
        }
    )


def test_graph_for_follows_the_settings() -> None:
    assert (graph_for(_config(), 100).degree, graph_for(_config(), 100).threshold) == (32, 17)
    assert graph_for(_config(), 10).degree == 0 and graph_for(_config(), 10).threshold == 6
    assert graph_for(_config(graph="complete"), 100).degree == 0
    assert graph_for(_config(mode="malicious"), 100).degree == 0  # malicious mode: complete graph
    assert graph_for(_config(colluding_fraction=0.2), 100).degree > 32


@pytest.mark.parametrize(
    ("key", "value"), [("graph", "ring"), ("colluding_fraction", 0.5), ("dropout_fraction", -0.1)]
)
def test_bad_graph_settings_are_refused(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"secure_sum.{key}"):
        _config(**{key: value})


def test_hospital_fractions_come_from_its_node_config() -> None:
    settings = secure_settings({"partition-id": 0, "secure-colluding-fraction": 0.2})
    assert (settings.colluding_fraction, settings.dropout_fraction) == (0.2, 0.1)
    with pytest.raises(ConfigError, match="secure-dropout-fraction"):
        secure_settings({"partition-id": 0, "secure-dropout-fraction": 0.7})
