"""A hospital's local data in any of the documented forms, as the federation reads it.

``data`` may be a pandas DataFrame, the path of a CSV file, or an ``(X, y)`` pair of raw
features and integer labels. Columns follow the federation's ``dataset`` settings: for
the built-in breast-cancer federation, scikit-learn's feature names and a ``target``
column (``sklearn.datasets.load_breast_cancer(as_frame=True).frame``); for a CSV
federation, ``dataset.feature_columns`` and ``dataset.label_column``. Rows are split
and scaled as the Flower path does (:func:`~oneliac_flwr.data.organization_from_table`).
"""

from __future__ import annotations

import os
from typing import TypeAlias

import numpy as np
import pandas as pd

from oneliac_flwr.config import DatasetConfig, ExperimentConfig
from oneliac_flwr.data import OrganizationData, Table, load_csv, organization_from_table, table_from_frame
from oneliac_flwr.data.federated import BUILTIN_LABEL_COLUMN, columns
from oneliac_flwr.data.hospital_csv import read_csv_frame
from oneliac_flwr.errors import ConfigError, DataError

__all__ = ["BUILTIN_LABEL_COLUMN", "LocalData", "columns", "local_table", "prepare", "raw_columns"]

LocalData: TypeAlias = "pd.DataFrame | str | os.PathLike[str] | tuple[np.ndarray, np.ndarray]"
def local_table(data: LocalData, dataset: DatasetConfig) -> Table:
    """The hospital's raw table (unscaled) from a DataFrame, a CSV path or ``(X, y)``.

    Raises
    ------
    DataError
        If a column is missing or not numeric, a value is missing, or ``(X, y)`` do not
        fit the federation's feature count (the message names the column or the shape).
    ConfigError
        If ``data`` is none of the accepted forms.
    """
    label, features = columns(dataset)
    if isinstance(data, pd.DataFrame):
        return table_from_frame(data, source="DataFrame", label_column=label, feature_columns=features,
                                id_column=dataset.record_id_column)  # fmt: skip
    if isinstance(data, (str, os.PathLike)):
        return load_csv(data, label_column=label, feature_columns=features, id_column=dataset.record_id_column)
    if isinstance(data, tuple) and len(data) == 2:
        x, y = np.asarray(data[0]), np.asarray(data[1])
        if x.ndim != 2 or x.shape[1] != len(features) or x.dtype.kind not in "biuf":
            raise DataError(f"(X, y): X must be a numeric array of shape (n, {len(features)}), got {x.dtype} {x.shape}")
        if y.shape != (x.shape[0],) or y.dtype.kind not in "biu" or (y.size and y.min() < 0):
            raise DataError(f"(X, y): y must hold {x.shape[0]} integer class indices >= 0, got {y.dtype} {y.shape}")
        if not np.isfinite(x).all():
            raise DataError("(X, y): X holds NaN or infinite values")
        return Table(x.astype(np.float32), y.astype(np.int64), features, "(X, y)")
    raise ConfigError("data", f"expected a pandas DataFrame, a CSV path or an (X, y) pair, got {type(data).__name__}")


def prepare(data: LocalData, config: ExperimentConfig, *, salt: int) -> OrganizationData:
    """Split (keyed hash) and scale (public schema) the hospital's rows.

    Raises
    ------
    DataError
        As :func:`local_table`, or a label >= ``dataset.num_classes``.
    """
    table = local_table(data, config.dataset)
    if len(table) and int(table.labels.max()) >= config.dataset.num_classes:
        raise DataError(f"{table.source}: labels must be class indices < dataset.num_classes ({config.dataset.num_classes})")
    return organization_from_table(config, table, seed_salt=salt)


def raw_columns(data: LocalData, dataset: DatasetConfig) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features (NaN where missing), labels and feature names, unchecked: for local analysis.

    Raises
    ------
    DataError
        If a feature column is missing or not numeric.
    """
    label, features = columns(dataset)
    if isinstance(data, (str, os.PathLike)):
        data = read_csv_frame(data)[1]
    if isinstance(data, pd.DataFrame):
        absent = [c for c in (*features, label) if c not in data.columns]
        if absent:
            raise DataError(f"DataFrame: columns {absent} not found; columns are {list(data.columns)}")
        try:
            values = data[list(features)].to_numpy(dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(f"DataFrame: feature columns must be numeric ({exc})") from None
        return values, data[label].to_numpy(), list(features)
    table = local_table(data, dataset)
    return table.features.astype(np.float64), table.labels, list(table.feature_names)
