"""Assemble what each party sees in a run: organizations' data and the central test set.

In simulation, a stratified global test set is held out *before* partitioning and used
only for centralized evaluation. In deployment, each organization reads its own CSV.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.data.builtin import load_breast_cancer
from oneliac_flwr.data.hospital_csv import load_csv
from oneliac_flwr.data.partition import dirichlet_partition, iid_partition, site_partition
from oneliac_flwr.data.preprocessing import (
    OrganizationData,
    prepare_organization,
    standardize_with_own_statistics,
)
from oneliac_flwr.data.tables import Table
from oneliac_flwr.errors import ConfigError, DataError

__all__ = [
    "central_test_set",
    "deployment_organization",
    "num_features",
    "partition_indices",
    "simulation_organization",
]


def num_features(config: ExperimentConfig) -> int:
    """Number of model inputs, known to the coordinator without any organization's data."""
    if config.dataset.name == "breast_cancer":
        return _split_pool(config)[0].features.shape[1]
    return len(config.dataset.feature_columns or ())


def central_test_set(config: ExperimentConfig) -> Table:
    """The held-out global test set, scaled with its own statistics (simulation only)."""
    return standardize_with_own_statistics(_split_pool(config)[1])


def partition_indices(config: ExperimentConfig) -> list[np.ndarray]:
    """Row indices of the training pool that each organization holds (simulation)."""
    return list(_partition_indices(config))


def simulation_organization(config: ExperimentConfig, partition_id: int) -> OrganizationData:
    """The scaled data of organization ``partition_id`` in a simulated federation."""
    parts = _partition_indices(config)
    if not 0 <= partition_id < len(parts):
        raise ConfigError("partition-id", f"must be in [0, {len(parts)}), got {partition_id}")
    pool = _split_pool(config)[0]
    table = pool.subset(parts[partition_id])
    table = Table(table.features, table.labels, table.feature_names, f"{pool.source}[partition {partition_id}]")
    rng = np.random.default_rng([config.seed, 1, partition_id])
    return prepare_organization(table, validation_fraction=config.dataset.local_validation_fraction, rng=rng)


def deployment_organization(config: ExperimentConfig, data_path: str, *, seed_salt: int = 0) -> OrganizationData:
    """The scaled data of a real organization, read from its own CSV file."""
    dataset = config.dataset
    if dataset.label_column is None:
        raise ConfigError("dataset.label_column", "is required to read an organization's CSV")
    table = load_csv(data_path, label_column=dataset.label_column, feature_columns=dataset.feature_columns)
    rng = np.random.default_rng([config.seed, 2, seed_salt])
    return prepare_organization(table, validation_fraction=dataset.local_validation_fraction, rng=rng)


@lru_cache(maxsize=8)
def _split_pool(config: ExperimentConfig) -> tuple[Table, Table]:
    table = _load_simulation_table(config)
    train_idx, test_idx = _split_rows(config)
    return table.subset(train_idx), table.subset(test_idx)


@lru_cache(maxsize=8)
def _partition_indices(config: ExperimentConfig) -> tuple[np.ndarray, ...]:
    pool = _split_pool(config)[0]
    federation = config.federation
    rng = np.random.default_rng([config.seed, 3])
    if federation.partition == "iid":
        parts = iid_partition(len(pool), federation.num_organizations, rng=rng)
    elif federation.partition == "dirichlet":
        parts = dirichlet_partition(
            pool.labels,
            federation.num_organizations,
            alpha=federation.dirichlet_alpha,
            min_partition_size=federation.min_partition_size,
            rng=rng,
        )
    else:
        parts = _site_parts(config, pool)
    for pid, part in enumerate(parts):
        if len(part) == 0:
            raise DataError(f"{pool.source}: partition {pid} is empty")
    return tuple(parts)


def _site_parts(config: ExperimentConfig, pool: Table) -> list[np.ndarray]:
    if config.dataset.name != "csv" or config.dataset.csv_path is None or config.dataset.site_column is None:
        raise ConfigError(
            "federation.partition",
            "'site' needs dataset.name='csv' with dataset.csv_path and dataset.site_column",
        )
    sites = _site_column(config)
    parts, names = site_partition(sites[_split_rows(config)[0]])
    if len(parts) != config.federation.num_organizations:
        raise ConfigError(
            "federation.num_organizations",
            f"must equal the number of sites in {config.dataset.site_column!r} ({len(names)}: {names})",
        )
    return parts


def _site_column(config: ExperimentConfig) -> np.ndarray:
    path, column = config.dataset.csv_path, config.dataset.site_column
    frame = pd.read_csv(path)
    if column not in frame.columns:
        raise DataError(f"{path}: site column {column!r} not found; columns are {list(frame.columns)}")
    return frame[column].astype(str).to_numpy()


@lru_cache(maxsize=8)
def _split_rows(config: ExperimentConfig) -> tuple[np.ndarray, np.ndarray]:
    table = _load_simulation_table(config)
    rng = np.random.default_rng([config.seed, 0])
    train_idx, test_idx = train_test_split(
        np.arange(len(table)),
        test_size=config.dataset.test_fraction,
        random_state=int(rng.integers(2**31 - 1)),
        stratify=table.labels,
    )
    return np.sort(train_idx), np.sort(test_idx)


def _load_simulation_table(config: ExperimentConfig) -> Table:
    dataset = config.dataset
    if dataset.name == "breast_cancer":
        return load_breast_cancer()
    if dataset.csv_path is None:
        raise ConfigError("dataset.csv_path", "is required for a simulation on dataset.name='csv'")
    if dataset.label_column is None:
        raise ConfigError("dataset.label_column", "is required when dataset.name is 'csv'")
    return load_csv(dataset.csv_path, label_column=dataset.label_column, feature_columns=dataset.feature_columns)
