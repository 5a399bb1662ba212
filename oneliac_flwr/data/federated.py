"""Assemble what each party sees in a run: organizations' data and the central test set.

In simulation, a stratified global test set is held out *before* partitioning and used
only for centralized evaluation. In deployment, each organization reads its own CSV.
Every organization splits its rows with a keyed hash of each record and scales them with
the public schema (``dataset.feature_bounds``), so no record moves another
(:mod:`oneliac_flwr.data.preprocessing`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from oneliac_flwr.config import DatasetConfig, ExperimentConfig
from oneliac_flwr.data.builtin import load_breast_cancer
from oneliac_flwr.data.hospital_csv import load_csv
from oneliac_flwr.data.partition import dirichlet_partition, iid_partition, site_partition
from oneliac_flwr.data.preprocessing import (
    FeatureSchema,
    OrganizationData,
    prepare_organization,
    split_key,
    standardize_with_own_statistics,
)
from oneliac_flwr.data.tables import Table
from oneliac_flwr.errors import ConfigError, DataError

__all__ = [
    "BUILTIN_LABEL_COLUMN",
    "central_test_set",
    "columns",
    "deployment_organization",
    "feature_schema",
    "num_features",
    "organization_from_table",
    "partition_indices",
    "simulation_organization",
]

#: The built-in table's label column (its features keep scikit-learn's names).
BUILTIN_LABEL_COLUMN = "target"


@lru_cache(maxsize=1)
def _builtin_feature_names() -> tuple[str, ...]:
    return load_breast_cancer().feature_names


def columns(dataset: DatasetConfig) -> tuple[str, tuple[str, ...]]:
    """``(label column, feature columns)`` of the federation's tables."""
    if dataset.name == "breast_cancer":
        return BUILTIN_LABEL_COLUMN, _builtin_feature_names()
    if dataset.label_column is None or not dataset.feature_columns:
        raise ConfigError("dataset.label_column", "a CSV federation names its label and feature columns")
    return dataset.label_column, tuple(dataset.feature_columns)


def num_features(config: ExperimentConfig) -> int:
    """Number of model inputs, known to the coordinator without any organization's data."""
    if config.dataset.name == "breast_cancer":
        return _split_pool(config)[0].features.shape[1]
    return len(config.dataset.feature_columns or ())


def central_test_set(config: ExperimentConfig) -> Table:
    """The held-out global test set (simulation only), scaled like the organizations' rows.

    With ``dataset.feature_bounds`` it is scaled by the same public schema; without (CSV,
    no differential privacy only) with its own statistics, as a new site would.
    """
    test = _split_pool(config)[1]
    schema = feature_schema(config, test)
    return standardize_with_own_statistics(test) if schema is None else schema.scale(test)


def feature_schema(config: ExperimentConfig, table: Table) -> FeatureSchema | None:
    """The public scaling of ``table``'s features, or ``None`` for per-site standardization.

    Raises
    ------
    ConfigError
        If ``dataset.feature_bounds`` is not set while differential privacy is configured
        (fail closed: per-site statistics would let one record move every other row), or
        its length differs from the table's feature columns.
    """
    bounds = config.dataset.bounds()
    if bounds is None:
        if config.privacy_budget.mode != "none":
            raise ConfigError(
                "dataset.feature_bounds",
                f"is required when privacy_budget.mode is {config.privacy_budget.mode!r}: give public "
                "'low:high' bounds per feature column (per-site standardization would let one record "
                "move every other row)",
            )
        return None
    return FeatureSchema.from_bounds(bounds, feature_names=table.feature_names)


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
    table = Table(
        table.features, table.labels, table.feature_names, f"{pool.source}[partition {partition_id}]", table.record_ids
    )
    return _prepare(config, table, salt=0)


def deployment_organization(config: ExperimentConfig, data_path: str, *, seed_salt: int = 0) -> OrganizationData:
    """The scaled data of a real organization, read from its own CSV file.

    ``seed_salt`` (derived from the organization id) joins the seed in the public key of
    the local split.
    """
    dataset = config.dataset
    if dataset.label_column is None:
        raise ConfigError("dataset.label_column", "is required to read an organization's CSV")
    table = load_csv(
        data_path,
        label_column=dataset.label_column,
        feature_columns=dataset.feature_columns,
        id_column=dataset.record_id_column,
    )
    if len(table) and int(table.labels.max()) >= dataset.num_classes:
        # the offending value is not shown: the message may travel beyond the hospital
        raise DataError(
            f"{data_path}: label column {dataset.label_column!r} has class indices >= dataset.num_classes "
            f"({dataset.num_classes})"
        )
    return _prepare(config, table, salt=seed_salt)


def organization_from_table(config: ExperimentConfig, table: Table, *, seed_salt: int = 0) -> OrganizationData:
    """An organization's own table, split (keyed hash) and scaled (public schema) as a
    deployed organization's CSV is (:func:`deployment_organization`)."""
    return _prepare(config, table, salt=seed_salt)


def _prepare(config: ExperimentConfig, table: Table, *, salt: int) -> OrganizationData:
    schema = feature_schema(config, table)
    if config.privacy_budget.mode == "sample" and table.record_ids is not None:
        _check_one_row_per_record(config, table)
    return prepare_organization(
        table,
        validation_fraction=config.dataset.local_validation_fraction,
        key=split_key(config.seed, salt),
        schema=schema,
    )


def _check_one_row_per_record(config: ExperimentConfig, table: Table) -> None:
    ids, counts = np.unique(np.asarray(table.record_ids, dtype=str), return_counts=True)
    repeated = ids[counts > 1]
    if repeated.size:
        raise DataError(
            f"{table.source}: record id column {config.dataset.record_id_column!r} repeats {repeated.size} id(s) "
            "(values not shown: they identify patients); sample-level DP protects one row, so one record "
            "must be one row"
        )


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
    from sklearn.model_selection import train_test_split  # heavy: simulation only

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
    return load_csv(
        dataset.csv_path,
        label_column=dataset.label_column,
        feature_columns=dataset.feature_columns,
        id_column=dataset.record_id_column,
    )
