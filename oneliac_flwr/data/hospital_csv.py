"""Loader for a hospital's own table (CSV)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from oneliac_flwr.data.tables import Table
from oneliac_flwr.errors import DataError

__all__ = ["load_csv", "read_csv_frame", "table_from_frame"]


def read_csv_frame(path: str | Path) -> tuple[Path, pd.DataFrame]:
    """Read a CSV file as it is (no column checks).

    Raises
    ------
    DataError
        If the file is missing or cannot be parsed as CSV; the message names the file.
    """
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{file}: file not found", file=str(file), problem="file not found")
    try:
        return file, pd.read_csv(file)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{file}: cannot be read as CSV ({exc})", file=str(file), problem="cannot be read as CSV") from exc


def load_csv(
    path: str | Path,
    *,
    label_column: str,
    feature_columns: Sequence[str] | None = None,
    class_labels: Sequence[str] | None = None,
    id_column: str | None = None,
) -> Table:
    """Read a hospital's CSV table.

    Parameters
    ----------
    path : str or Path
        The CSV file.
    label_column : str
        Column holding the diagnosis.
    feature_columns : sequence of str, optional
        Columns used as features, in this order (every organization must use the same
        order). Default: every column except the label.
    class_labels : sequence of str, optional
        The label values in class-index order, so that every organization maps labels to
        the same indices. Default: integer labels are used as they are, other labels are
        sorted.
    id_column : str, optional
        Column keying each record (e.g. a pseudonymous patient id), kept as text in
        ``Table.record_ids`` and never used as a feature.

    Raises
    ------
    DataError
        If the file is missing or empty, a column is missing or non-numeric, a feature or
        label is missing (NaN), or a label is not one of ``class_labels``. The message
        names the file and the column. Also if ``id_column`` is missing, has missing
        values or is listed as a feature column.
    """
    file, frame = read_csv_frame(path)
    return table_from_frame(
        frame, source=file, label_column=label_column, feature_columns=feature_columns, class_labels=class_labels,
        id_column=id_column,
    )  # fmt: skip


def table_from_frame(
    frame: pd.DataFrame,
    *,
    source: str | Path,
    label_column: str,
    feature_columns: Sequence[str] | None = None,
    class_labels: Sequence[str] | None = None,
    id_column: str | None = None,
) -> Table:
    """A hospital's table from a pandas DataFrame, with the checks of :func:`load_csv`.

    ``source`` names the frame in error messages (a file path, or e.g. ``"DataFrame"``).

    Raises
    ------
    DataError
        As :func:`load_csv`.
    """
    file = Path(source)
    if frame.empty:
        raise DataError(f"{file}: has no rows", file=str(file), problem="has no rows")
    if label_column not in frame.columns:
        raise DataError(
            f"{file}: label column {label_column!r} not found; columns are {list(frame.columns)}",
            file=str(file), column=label_column, problem="label column not found",
        )  # fmt: skip
    excluded = {label_column, id_column}
    columns = list(feature_columns) if feature_columns else [c for c in frame.columns if c not in excluded]
    if not columns:
        raise DataError(f"{file}: no feature columns")
    ids = None if id_column is None else _record_ids(frame, id_column, columns, file)
    for column in columns:
        if column not in frame.columns:
            raise DataError(
                f"{file}: feature column {column!r} not found; columns are {list(frame.columns)}",
                file=str(file), column=column, problem="feature column not found",
            )  # fmt: skip
        if not pd.api.types.is_numeric_dtype(frame[column]):
            raise DataError(
                f"{file}: feature column {column!r} is not numeric (dtype {frame[column].dtype})",
                file=str(file), column=column, problem="feature column is not numeric",
            )  # fmt: skip
        missing = int(frame[column].isna().sum())
        if missing:
            raise DataError(
                f"{file}: feature column {column!r} has {missing} missing values (NaN)",
                file=str(file), column=column, problem="feature column has missing values (NaN)",
            )  # fmt: skip
    raw_labels = frame[label_column]
    if int(raw_labels.isna().sum()):
        raise DataError(
            f"{file}: label column {label_column!r} has {int(raw_labels.isna().sum())} missing values",
            file=str(file), column=label_column, problem="label column has missing values",
        )  # fmt: skip
    labels = _encode_labels(raw_labels, class_labels, file, label_column)
    features = frame[columns].to_numpy(dtype=np.float32)
    if not np.isfinite(features).all():
        raise DataError(f"{file}: feature columns contain infinite values", file=str(file), problem="feature columns contain infinite values")
    return Table(features=features, labels=labels, feature_names=tuple(columns), source=str(file), record_ids=ids)


def _record_ids(frame: pd.DataFrame, column: str, feature_columns: list[str], file: Path) -> np.ndarray:
    if column not in frame.columns:
        raise DataError(f"{file}: record id column {column!r} not found; columns are {list(frame.columns)}")
    if column in feature_columns:
        raise DataError(f"{file}: record id column {column!r} is also listed as a feature column")
    missing = int(frame[column].isna().sum())
    if missing:
        raise DataError(f"{file}: record id column {column!r} has {missing} missing values")
    return frame[column].astype(str).to_numpy(dtype=object)


def _encode_labels(
    raw: pd.Series, class_labels: Sequence[str] | None, file: Path, column: str
) -> np.ndarray:
    if class_labels is not None:
        mapping = {str(v): i for i, v in enumerate(class_labels)}
        as_text = raw.astype(str)
        unknown = sorted(set(as_text) - set(mapping))
        if unknown:
            raise DataError(f"{file}: label column {column!r} has values {unknown} not in {list(class_labels)}")
        return as_text.map(mapping).to_numpy(dtype=np.int64)
    if pd.api.types.is_integer_dtype(raw):
        values = raw.to_numpy(dtype=np.int64)
        if values.min() < 0:
            raise DataError(f"{file}: label column {column!r} has negative class indices")
        return values
    if pd.api.types.is_float_dtype(raw) and bool((raw == raw.round()).all()):
        return raw.to_numpy(dtype=np.int64)
    classes = sorted(raw.astype(str).unique())
    return raw.astype(str).map({c: i for i, c in enumerate(classes)}).to_numpy(dtype=np.int64)
