"""Command line: summarise a hospital's CSV table before joining a federation.

Usage::

    python -m oneliac_flwr.cli_analyze --csv PATH --label-column COL \\
        [--feature-columns a,b,c] [--json]

Prints the label distribution, per-feature statistics and missingness (see
:func:`oneliac_flwr.data.analysis.analyze_local_data`) as text, or as JSON with
``--json``. Exit code 0 on success, 2 on a missing file or column, a non-numeric
feature column or bad arguments (the message names the file and the column).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from oneliac_flwr.data.hospital_csv import read_csv_frame
from oneliac_flwr.data.analysis import LocalDataSummary, analyze_local_data
from oneliac_flwr.errors import ConfigError, DataError

__all__ = ["analyze_csv", "main"]

EXIT_OK = 0
EXIT_BAD_INPUT = 2


def analyze_csv(
    path: str | Path, *, label_column: str, feature_columns: Sequence[str] | None = None
) -> LocalDataSummary:
    """Read a CSV table with pandas and summarise it.

    Parameters
    ----------
    path : str or Path
        The CSV file.
    label_column : str
        Column holding the label.
    feature_columns : sequence of str, optional
        Feature columns, in order; default every column except the label.

    Returns
    -------
    LocalDataSummary

    Raises
    ------
    DataError
        If the file is missing or unreadable, a column is missing, or a feature
        column is not numeric; the message names the file and the column.
    ConfigError
        If ``feature_columns`` is empty or contains the label column.
    """
    file, frame = read_csv_frame(path)
    available = list(frame.columns)
    if label_column not in frame.columns:
        raise DataError(f"{file}: label column {label_column!r} not found; columns are {available}")
    if feature_columns is None:
        columns = [c for c in available if c != label_column]
    else:
        columns = list(feature_columns)
        if not columns:
            raise ConfigError("feature_columns", "expected at least one column name")
        if label_column in columns:
            raise ConfigError("feature_columns", f"must not contain the label column {label_column!r}")
    for column in columns:
        if column not in frame.columns:
            raise DataError(f"{file}: feature column {column!r} not found; columns are {available}")
        if not pd.api.types.is_numeric_dtype(frame[column]):
            raise DataError(
                f"{file}: feature column {column!r} is not numeric (dtype {frame[column].dtype}); "
                "choose numeric columns with --feature-columns"
            )
    features = frame[columns].to_numpy(dtype=np.float64, na_value=np.nan)
    labels = frame[label_column].to_numpy(dtype=object, na_value=None)
    return analyze_local_data(features, labels, feature_names=[str(c) for c in columns])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (0 ok, 2 bad input)."""
    parser = argparse.ArgumentParser(
        prog="python -m oneliac_flwr.cli_analyze",
        description="Summarise a local CSV table: label distribution, feature statistics, missingness.",
    )
    parser.add_argument("--csv", required=True, type=Path, help="path of the CSV file")
    parser.add_argument("--label-column", required=True, help="column holding the label")
    parser.add_argument(
        "--feature-columns", default=None, help="comma-separated feature columns (default: every other column)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    feature_columns = None
    if args.feature_columns is not None:
        feature_columns = [name.strip() for name in args.feature_columns.split(",") if name.strip()]
    try:
        summary = analyze_csv(args.csv, label_column=args.label_column, feature_columns=feature_columns)
    except (DataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(json.dumps(summary.to_dict(), indent=2, allow_nan=False) if args.json else summary.format_text())
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
