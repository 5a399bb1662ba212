"""Errors the coordinator side can detect are found before any engine starts (issue 12, part)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.errors import ConfigError, DataError
from oneliac_flwr.flower.simulation import preflight

ROOT = Path(__file__).resolve().parents[2]


def _csv_config(path: Path, **dataset: object) -> ExperimentConfig:
    return ExperimentConfig.from_dict(
        {"dataset": {"name": "csv", "csv_path": str(path), "label_column": "y", "feature_columns": ["a", "b"], **dataset}}
    )


def test_missing_file_and_bad_columns_are_found_before_the_engine(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        preflight(_csv_config(tmp_path / "nope.csv"), output_dir=tmp_path / "out")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,y\n1,x,0\n2,3,1\n")
    with pytest.raises(DataError, match="feature column 'b' is not numeric"):
        preflight(_csv_config(bad), output_dir=tmp_path / "out")
    with pytest.raises(DataError, match="label column 'z' not found"):
        preflight(_csv_config(bad, label_column="z"), output_dir=tmp_path / "out")


def test_an_unaffordable_budget_and_a_used_output_folder_are_refused(tmp_path: Path) -> None:
    config = ExperimentConfig.from_dict({"privacy_budget": {"mode": "organization", "epsilon": 0.1, "noise_multiplier": 1.0}})
    with pytest.raises(ConfigError, match="privacy_budget"):
        preflight(config, output_dir=tmp_path)
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(ConfigError, match="output_dir"):
        preflight(ExperimentConfig(), output_dir=tmp_path)


def test_the_command_prints_one_line_and_exits_2_without_starting_ray(tmp_path: Path) -> None:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "simulations.run", "dataset=csv", f"output_dir={tmp_path / 'out'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    output = done.stdout + done.stderr
    assert "dataset.csv_path: is required (the config leaves it as ???)" in output
    assert "Traceback" not in output and "ray" not in output.lower()
    assert time.perf_counter() - started < 60  # Ray alone takes 15 s or more to start
