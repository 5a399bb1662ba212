"""Federated data assembly: held-out test set, partitions, public-schema scaling."""

from __future__ import annotations

import numpy as np
import pytest

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.data import (
    central_test_set,
    load_breast_cancer,
    num_features,
    partition_indices,
    prepare_organization,
    simulation_organization,
)
from oneliac_flwr.data.federated import _split_rows
from oneliac_flwr.data.preprocessing import FeatureSchema, split_key
from oneliac_flwr.data.tables import Table
from oneliac_flwr.errors import ConfigError, DataError


def _config(**federation: object) -> ExperimentConfig:
    return ExperimentConfig.from_dict({"federation": {"num_organizations": 3, **federation}})


def test_test_set_is_held_out_before_partitioning_and_stratified() -> None:
    config = _config()
    train_rows, test_rows = _split_rows(config)
    table = load_breast_cancer()
    assert len(set(train_rows) & set(test_rows)) == 0
    assert len(train_rows) + len(test_rows) == len(table)
    assert abs(table.labels[test_rows].mean() - table.labels.mean()) < 0.02
    covered = np.concatenate(partition_indices(config))
    assert np.array_equal(np.sort(covered), np.arange(len(train_rows)))
    assert len(central_test_set(config)) == len(test_rows)


@pytest.mark.filterwarnings("ignore::oneliac_flwr.data.partition.SingleClassPartitionWarning")
@pytest.mark.parametrize("partition", ["iid", "dirichlet"])
def test_partitions_are_disjoint_and_cover_the_training_pool(partition: str) -> None:
    parts = partition_indices(_config(partition=partition))
    joined = np.concatenate(parts)
    assert len(joined) == len(set(joined.tolist()))
    assert len(parts) == 3


def test_scaling_is_the_public_schema_not_the_organizations_statistics() -> None:
    config = _config()
    pool = load_breast_cancer()
    bounds = config.dataset.bounds()
    if bounds is None:  # pragma: no cover - breast_cancer always has its schema
        raise AssertionError("no bounds")
    schema = FeatureSchema.from_bounds(bounds, feature_names=pool.feature_names)
    scaled_pool = schema.scale(pool).features
    for pid in range(3):
        data = simulation_organization(config, pid)
        # every scaled row is the schema's image of some raw row: no organization statistic enters
        rows = {row.tobytes() for row in scaled_pool}
        assert all(row.tobytes() in rows for row in data.train.features)
        assert not np.allclose(data.train.features.mean(axis=0), 0.0, atol=0.05)


def test_no_statistic_crosses_organizations(monkeypatch: pytest.MonkeyPatch) -> None:
    """Making organization 1's raw rows wildly different leaves organization 0's scaled data unchanged."""
    from oneliac_flwr.data import federated

    config = _config()
    before = simulation_organization(config, 0)
    pool, test = federated._split_pool(config)
    rows_of_org1 = partition_indices(config)[1]
    features = pool.features.copy()
    features[rows_of_org1] = features[rows_of_org1] * 100.0 + 7.0
    altered = (Table(features, pool.labels, pool.feature_names, pool.source), test)
    monkeypatch.setattr(federated, "_split_pool", lambda _config: altered)
    after_org0 = simulation_organization(config, 0)
    after_org1 = simulation_organization(config, 1)
    assert np.array_equal(before.train.features, after_org0.train.features)
    assert np.array_equal(before.validation.features, after_org0.validation.features)
    # org 1's shifted rows are clipped to the public bounds
    assert after_org1.train.features.max() == 3.0 and after_org1.train.features.min() >= -3.0


def test_num_features_is_known_without_any_organizations_data() -> None:
    assert num_features(_config()) == 30
    csv = ExperimentConfig.from_dict(
        {"dataset": {"name": "csv", "label_column": "y", "feature_columns": ["a", "b"]}}
    )
    assert num_features(csv) == 2


def test_bad_partition_id_and_empty_table_are_refused() -> None:
    with pytest.raises(ConfigError, match="partition-id"):
        simulation_organization(_config(), 3)
    empty = Table(np.zeros((0, 2), np.float32), np.zeros(0, np.int64), ("a", "b"), "empty.csv")
    with pytest.raises(DataError, match="empty.csv: partition is empty"):
        prepare_organization(empty, validation_fraction=0.2, key=split_key(0), schema=None)
