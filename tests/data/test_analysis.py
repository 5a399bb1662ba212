"""Local data analysis (oneliac_flwr.data.analysis) and its command line."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from oneliac_flwr.cli_analyze import main
from oneliac_flwr.data.analysis import analyze_local_data, site_summary
from oneliac_flwr.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]
PYTHON = "/work/venv/bin/python" if Path("/work/venv/bin/python").exists() else sys.executable

FEATURES = np.array(
    [
        [50.0, 120.0, np.nan],
        [np.nan, 130.0, np.nan],
        [60.0, np.nan, np.nan],
        [70.0, 140.0, 1.0],
        [65.0, 125.0, np.nan],
    ]
)
LABELS = np.array([1, 0, 1, 1, 2])


def test_label_counts_per_class() -> None:
    summary = analyze_local_data(FEATURES, LABELS)
    assert summary.labels.counts == {"0": 1, "1": 3, "2": 1}
    assert summary.labels.missing == 0
    assert summary.num_examples == 5
    assert summary.labels.fractions == {"0": 0.2, "1": 0.6, "2": 0.2}


def test_missing_labels_are_counted_apart() -> None:
    labels = np.array(["yes", None, "no", "yes", float("nan")], dtype=object)
    summary = analyze_local_data(FEATURES, labels)
    assert summary.labels.counts == {"no": 1, "yes": 2}
    assert summary.labels.missing == 2
    assert summary.labels.fractions == {"no": pytest.approx(1 / 3), "yes": pytest.approx(2 / 3)}


def test_integral_float_labels_are_keyed_as_integers() -> None:
    summary = analyze_local_data(FEATURES, np.array([1.0, 0.0, np.nan, 1.0, 0.5]))
    assert summary.labels.counts == {"0": 1, "0.5": 1, "1": 2}
    assert summary.labels.missing == 1


def test_missingness_per_feature() -> None:
    features = analyze_local_data(FEATURES, LABELS, feature_names=["age", "bp", "flag"]).features
    assert [(f.name, f.count, f.missing_count) for f in features] == [
        ("age", 4, 1),
        ("bp", 4, 1),
        ("flag", 1, 4),
    ]
    assert [f.missing_fraction for f in features] == [0.2, 0.2, 0.8]


def test_summary_values_match_numpy() -> None:
    rng = np.random.default_rng(0)
    table = rng.normal(size=(200, 4))
    table[rng.random(table.shape) < 0.1] = np.nan
    summary = analyze_local_data(table, rng.integers(0, 3, size=200))
    for j, feature in enumerate(summary.features):
        column = table[:, j]
        assert feature.name == f"feature_{j}"
        assert feature.count == int(np.sum(~np.isnan(column)))
        assert feature.mean == pytest.approx(np.nanmean(column))
        assert feature.std == pytest.approx(np.nanstd(column, ddof=1))
        assert feature.min == np.nanmin(column)
        assert feature.max == np.nanmax(column)
        assert (feature.q25, feature.median, feature.q75) == pytest.approx(
            tuple(np.nanpercentile(column, [25, 50, 75]))
        )


def test_degenerate_columns_give_nan_statistics() -> None:
    flag = analyze_local_data(FEATURES, LABELS).features[2]
    assert flag.count == 1 and flag.mean == 1.0 and math.isnan(flag.std)
    empty = analyze_local_data(np.full((3, 1), np.nan), np.zeros(3)).features[0]
    assert empty.count == 0 and empty.missing_fraction == 1.0
    assert all(math.isnan(getattr(empty, key)) for key in ("mean", "std", "min", "q25", "median", "q75", "max"))


def test_to_dict_is_strict_json_with_null_for_undefined() -> None:
    data = json.loads(json.dumps(analyze_local_data(FEATURES, LABELS).to_dict(), allow_nan=False))
    assert data["num_examples"] == 5
    assert data["num_features"] == 3
    assert data["label_counts"] == {"0": 1, "1": 3, "2": 1}
    assert data["features"][2]["std"] is None
    assert data["features"][0]["mean"] == pytest.approx(61.25)


def test_format_text_shows_labels_and_features() -> None:
    text = analyze_local_data(FEATURES, LABELS, feature_names=["age", "bp", "flag"]).format_text()
    assert text.splitlines()[0] == "5 examples, 3 features, 0 missing labels"
    assert "  1         3    60.0%" in text
    age_row = next(line for line in text.splitlines() if line.strip().startswith("age"))
    assert age_row.split()[:5] == ["age", "4", "1", "20.0%", "61.25"]


def test_site_summary_has_counts_only() -> None:
    summary = site_summary(np.array([1, 0, 1, 1]))
    assert summary == {
        "num_examples": 4,
        "missing_labels": 0,
        "label_counts": {"0": 1, "1": 3},
        "label_fractions": {"0": 0.25, "1": 0.75},
    }


@pytest.mark.parametrize(
    ("features", "labels", "message"),
    [
        (np.zeros(5), LABELS, "features: expected a 2-D array"),
        (np.zeros((0, 2)), np.zeros(0), "features: expected a 2-D array with at least one row"),
        (np.array([["a"]]), np.zeros(1), "features: expected numeric values"),
        (FEATURES, LABELS[:4], "labels: expected one label per row"),
        (FEATURES, LABELS.reshape(5, 1), "labels: expected a 1-D array"),
    ],
)
def test_bad_arrays_raise_data_error(features: np.ndarray, labels: np.ndarray, message: str) -> None:
    with pytest.raises(DataError, match=message):
        analyze_local_data(features, labels)


def test_feature_names_must_match_columns() -> None:
    with pytest.raises(ConfigError) as info:
        analyze_local_data(FEATURES, LABELS, feature_names=["age"])
    assert info.value.field == "feature_names"


# --- command line -----------------------------------------------------------------


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("analysis") / "site.csv"
    path.write_text("age,bp,sex,diagnosis\n50,120,M,1\n,130,F,0\n60,,M,1\n70,140,F,\n")
    return path


@pytest.fixture(scope="module")
def cli_runs(csv_path: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run the real command twice, concurrently (each start-up imports the data package)."""
    argv = {
        "ok": ["--csv", str(csv_path), "--label-column", "diagnosis", "--feature-columns", "age,bp", "--json"],
        "missing_column": ["--csv", str(csv_path), "--label-column", "outcome"],
    }
    processes = {
        key: subprocess.Popen(
            [PYTHON, "-m", "oneliac_flwr.cli_analyze", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for key, args in argv.items()
    }
    runs = {}
    try:
        for key, process in processes.items():
            stdout, stderr = process.communicate(timeout=120)
            runs[key] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    finally:
        for process in processes.values():
            if process.poll() is None:  # only after a timeout: do not leave it running
                process.kill()
                process.wait()
    return runs


def test_cli_subprocess_prints_json_and_exits_0(cli_runs) -> None:
    run = cli_runs["ok"]
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["label_counts"] == {"0": 1, "1": 2}
    assert data["missing_labels"] == 1
    assert [f["name"] for f in data["features"]] == ["age", "bp"]
    assert [f["missing_count"] for f in data["features"]] == [1, 1]


def test_cli_subprocess_missing_column_exits_2_naming_it(cli_runs, csv_path: Path) -> None:
    run = cli_runs["missing_column"]
    assert run.returncode == 2
    assert "'outcome'" in run.stderr
    assert str(csv_path) in run.stderr
    assert run.stdout == ""


def test_cli_prints_text(csv_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--csv", str(csv_path), "--label-column", "diagnosis", "--feature-columns", "age, bp"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("4 examples, 2 features, 1 missing labels")
    assert "age" in out and "sex" not in out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--label-column", "diagnosis", "--feature-columns", "age,weight"], "feature column 'weight' not found"),
        (["--label-column", "diagnosis"], "feature column 'sex' is not numeric"),
        (["--label-column", "diagnosis", "--feature-columns", "age,diagnosis"], "must not contain the label column"),
        (["--label-column", "diagnosis", "--feature-columns", " , "], "feature_columns: expected at least one"),
    ],
)
def test_cli_bad_columns_exit_2(csv_path: Path, capsys: pytest.CaptureFixture[str], argv, expected: str) -> None:
    assert main(["--csv", str(csv_path), *argv]) == 2
    err = capsys.readouterr().err
    assert expected in err


def test_cli_missing_file_exits_2_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.csv"
    assert main(["--csv", str(missing), "--label-column", "diagnosis"]) == 2
    assert f"{missing}: file not found" in capsys.readouterr().err
