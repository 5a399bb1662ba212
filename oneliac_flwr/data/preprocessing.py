"""Per-organization preprocessing: local train/validation split and feature scaling.

Scaling statistics are fitted on one organization's own training rows and never leave
it: no statistic crosses organizations.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from oneliac_flwr.data.tables import Table
from oneliac_flwr.errors import DataError

__all__ = ["OrganizationData", "prepare_organization", "standardize_with_own_statistics"]


@dataclass(frozen=True)
class OrganizationData:
    """One organization's scaled training and local-validation tables."""

    train: Table
    validation: Table


def prepare_organization(
    table: Table, *, validation_fraction: float, rng: np.random.Generator
) -> OrganizationData:
    """Split an organization's rows into train/validation and scale with train statistics.

    Raises
    ------
    DataError
        If the table is empty or too small to hold out a validation row.
    """
    if len(table) == 0:
        raise DataError(f"{table.source}: partition is empty")
    if validation_fraction == 0.0:
        return OrganizationData(train=_scaled(table, _fit(table)), validation=table.subset(np.arange(0)))
    if len(table) < 2:
        raise DataError(f"{table.source}: {len(table)} row(s) cannot be split into train and validation")
    counts = np.bincount(table.labels)
    stratify = table.labels if counts[counts > 0].min() >= 2 else None
    train_idx, val_idx = train_test_split(
        np.arange(len(table)),
        test_size=validation_fraction,
        random_state=int(rng.integers(2**31 - 1)),
        stratify=stratify,
    )
    train, validation = table.subset(np.sort(train_idx)), table.subset(np.sort(val_idx))
    scaler = _fit(train)
    return OrganizationData(train=_scaled(train, scaler), validation=_scaled(validation, scaler))


def standardize_with_own_statistics(table: Table) -> Table:
    """Scale a table with its own mean and standard deviation (as a new site would)."""
    return _scaled(table, _fit(table))


def _fit(table: Table) -> StandardScaler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return StandardScaler().fit(table.features.astype(np.float64))


def _scaled(table: Table, scaler: StandardScaler) -> Table:
    if len(table) == 0:
        return table
    features = scaler.transform(table.features.astype(np.float64)).astype(np.float32)
    return Table(features, table.labels, table.feature_names, table.source)
