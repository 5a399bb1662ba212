"""ClientApp helpers: who the node is, pinned fingerprints, federation size."""

from __future__ import annotations

import pytest

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.errors import ConfigError
from oneliac_flwr.flower.clientapp import _check_federation_size, parse_pins, resolve_organization


def test_simulation_and_deployment_identities() -> None:
    sim = resolve_organization({"partition-id": 2, "num-partitions": 3})
    assert (sim.organization_id, sim.partition_id, sim.data_path) == ("org-2", 2, None)
    dep = resolve_organization({"organization-id": "h1", "data-path": "/data/h1.csv"})
    assert (dep.organization_id, dep.partition_id, dep.data_path) == ("h1", None, "/data/h1.csv")


def test_missing_node_config_names_what_is_expected() -> None:
    with pytest.raises(ConfigError, match="node_config: expected 'partition-id'"):
        resolve_organization({"foo": 1})


def test_pins_parse_and_bad_pins_are_refused() -> None:
    fp = "a" * 64
    assert parse_pins(f"12={fp}, 34={fp.upper()}") == {12: fp, 34: fp}
    for bad in ("12", "x=" + fp, "12=abc"):
        with pytest.raises(ConfigError, match="pinned-fingerprints"):
            parse_pins(bad)


def test_federation_size_mismatch_is_a_clear_error() -> None:
    config = ExperimentConfig()  # 3 organizations
    _check_federation_size(config, {"partition-id": 0, "num-partitions": 3})
    with pytest.raises(ConfigError, match="federation.num_organizations: is 3 but the simulation runs 2 SuperNodes"):
        _check_federation_size(config, {"partition-id": 0, "num-partitions": 2})
