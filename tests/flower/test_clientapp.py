"""ClientApp helpers: who the node is, pinned fingerprints, federation size."""

from __future__ import annotations

import pytest

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.errors import ConfigError
from oneliac_flwr.flower.clientapp import _check_federation_size, resolve_organization, secure_settings
from oneliac_flwr.secure import PinnedTrust, TofuTrust


def test_simulation_and_deployment_identities() -> None:
    sim = resolve_organization({"partition-id": 2, "num-partitions": 3})
    assert (sim.organization_id, sim.partition_id, sim.data_path) == ("org-2", 2, None)
    dep = resolve_organization({"organization-id": "h1", "data-path": "/data/h1.csv"})
    assert (dep.organization_id, dep.partition_id, dep.data_path) == ("h1", None, "/data/h1.csv")


def test_missing_node_config_names_what_is_expected() -> None:
    with pytest.raises(ConfigError, match="node_config: expected 'partition-id'"):
        resolve_organization({"foo": 1})


def test_pins_parse_and_bad_pins_are_refused(tmp_path) -> None:
    fp = "a" * 64
    pins = tmp_path / "pins.txt"
    pins.write_text(f"# organization-id fingerprint\nh1 {fp}\nh2 {fp.upper()}  # second\n\n")
    node = {"organization-id": "h1", "data-path": "/d.csv", "secure-pins": str(pins),
            "secure-identity": str(tmp_path / "id"), "secure-min-threshold": 3}  # fmt: skip
    settings = secure_settings(node)
    assert (settings.organization, settings.min_threshold) == ("h1", 3)
    trust = settings.trust()
    assert isinstance(trust, PinnedTrust)
    trust.check(federation="default", organization="h2", fingerprint=fp)
    for bad in ("h1", "h1 abc", f"h1 {fp}\nh1 {fp}", f"h1 {'g' * 64}"):
        pins.write_text(bad)
        with pytest.raises(ConfigError, match="secure-pins"):
            secure_settings(node).trust()
    with pytest.raises(ConfigError, match="secure-min-threshold"):
        secure_settings({**node, "secure-min-threshold": 1})
    assert isinstance(secure_settings({"partition-id": 0}).trust(), TofuTrust)  # no pins: trust on first use


def test_federation_size_mismatch_is_a_clear_error() -> None:
    config = ExperimentConfig()  # 3 organizations
    _check_federation_size(config, {"partition-id": 0, "num-partitions": 3})
    with pytest.raises(ConfigError, match="federation.num_organizations: is 3 but the simulation runs 2 SuperNodes"):
        _check_federation_size(config, {"partition-id": 0, "num-partitions": 2})
