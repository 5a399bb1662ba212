"""Hospital CSV loader: happy path and errors that name the file and the column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from oneliac_flwr.data import load_csv
from oneliac_flwr.errors import DataError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "h1.csv"
    path.write_text(text)
    return path


def test_reads_features_and_labels_in_the_given_order(tmp_path: Path) -> None:
    path = _write(tmp_path, "age,bp,diagnosis\n50,120,1\n61,135,0\n45,110,1\n")
    table = load_csv(path, label_column="diagnosis", feature_columns=["bp", "age"])
    assert table.feature_names == ("bp", "age")
    assert table.features.dtype == np.float32
    assert table.features.tolist() == [[120, 50], [135, 61], [110, 45]]
    assert table.labels.tolist() == [1, 0, 1]


def test_string_labels_map_to_sorted_or_given_classes(tmp_path: Path) -> None:
    path = _write(tmp_path, "x,dx\n1,malignant\n2,benign\n3,malignant\n")
    assert load_csv(path, label_column="dx").labels.tolist() == [1, 0, 1]
    assert load_csv(path, label_column="dx", class_labels=["malignant", "benign"]).labels.tolist() == [0, 1, 0]


@pytest.mark.parametrize(
    ("text", "kwargs", "fragments"),
    [
        ("x,y\n1,0\n", {"label_column": "dx"}, ["h1.csv", "label column 'dx' not found"]),
        ("x,y\n1,0\n", {"label_column": "y", "feature_columns": ["z"]}, ["h1.csv", "feature column 'z' not found"]),
        ("x,y\na,0\n", {"label_column": "y"}, ["h1.csv", "feature column 'x' is not numeric"]),
        ("x,y\n1,0\n,1\n", {"label_column": "y"}, ["h1.csv", "feature column 'x' has 1 missing values"]),
        ("x,y\n1,0\n2,\n", {"label_column": "y"}, ["h1.csv", "label column 'y' has 1 missing"]),
        ("x,y\n", {"label_column": "y"}, ["h1.csv", "has no rows"]),
        ("x,dx\n1,a\n", {"label_column": "dx", "class_labels": ["b"]}, ["h1.csv", "not in ['b']"]),
    ],
)
def test_bad_tables_get_errors_naming_file_and_column(tmp_path: Path, text: str, kwargs: dict, fragments: list[str]) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(DataError) as info:
        load_csv(path, **kwargs)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere.csv: file not found"):
        load_csv(tmp_path / "nowhere.csv", label_column="y")
