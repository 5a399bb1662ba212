"""Preprocessing that lets no record move another: keyed-hash split and public-schema scaling."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer as sk_load_breast_cancer

from oneliac_flwr.config import BREAST_CANCER_FEATURE_BOUNDS, ExperimentConfig
from oneliac_flwr.data import deployment_organization, load_breast_cancer, load_csv, simulation_organization
from oneliac_flwr.data.preprocessing import (
    SCALED_HALF_WIDTH,
    FeatureSchema,
    OrganizationData,
    prepare_organization,
    split_key,
    validation_mask,
)
from oneliac_flwr.data.tables import Table
from oneliac_flwr.errors import ConfigError, DataError

KEY = split_key(0)


def _schema(table: Table) -> FeatureSchema:
    bounds = ExperimentConfig().dataset.bounds()
    if bounds is None:  # pragma: no cover - the breast-cancer default always has bounds
        raise AssertionError("breast_cancer has no default bounds")
    return FeatureSchema.from_bounds(bounds, feature_names=table.feature_names)


def _rows_by_key(data: OrganizationData) -> dict[bytes, tuple[str, bytes]]:
    """Each output row, keyed by its record key: (side, bytes of its preprocessed features)."""
    out: dict[bytes, tuple[str, bytes]] = {}
    for side, table in (("train", data.train), ("validation", data.validation)):
        for rid, row in zip(table.record_ids if table.record_ids is not None else [], table.features, strict=True):
            out[str(rid).encode()] = (side, row.tobytes())
    return out


def _with_ids(table: Table) -> Table:
    ids = np.array([f"patient-{i}" for i in range(len(table))], dtype=object)
    return Table(table.features, table.labels, table.feature_names, table.source, ids)


def _add_outlier(table: Table) -> Table:
    """Append a record with every feature at 1e6, keyed ``outlier`` (a training row under KEY)."""
    grown = Table(
        np.vstack([table.features, np.full((1, 30), 1e6, np.float32)]),
        np.append(table.labels, 0),
        table.feature_names,
        table.source,
        np.append(table.record_ids, "outlier"),
    )
    assert not validation_mask(grown, fraction=0.2, key=KEY)[-1]
    return grown


def test_removing_or_adding_one_record_changes_no_other_membership() -> None:
    table = load_breast_cancer()
    before = validation_mask(table, fraction=0.2, key=KEY)
    for removed in range(0, len(table), 7):
        keep = np.delete(np.arange(len(table)), removed)
        after = validation_mask(table.subset(keep), fraction=0.2, key=KEY)
        assert int(np.count_nonzero(after != before[keep])) == 0
    outlier = Table(
        np.vstack([table.features, np.full((1, 30), 1e6, np.float32)]),
        np.append(table.labels, 0),
        table.feature_names,
        table.source,
    )
    assert int(np.count_nonzero(validation_mask(outlier, fraction=0.2, key=KEY)[:-1] != before)) == 0


def test_an_added_outlier_changes_no_other_preprocessed_row_exactly() -> None:
    table = _with_ids(load_breast_cancer())
    schema = _schema(table)
    before = _rows_by_key(prepare_organization(table, validation_fraction=0.2, key=KEY, schema=schema))
    outlier = _add_outlier(table)
    after = _rows_by_key(prepare_organization(outlier, validation_fraction=0.2, key=KEY, schema=schema))
    assert set(after) - set(before) == {b"outlier"}
    changed = [rid for rid in before if after[rid] != before[rid]]
    assert changed == []
    # the outlier itself is clipped to the bounds: every feature at the top of the range
    assert np.frombuffer(after[b"outlier"][1], np.float32).tolist() == [SCALED_HALF_WIDTH] * 30


def test_per_site_standardization_would_move_every_row() -> None:
    """The contrast the schema removes: with own statistics, one outlier moves all rows."""
    table = _with_ids(load_breast_cancer())
    before = _rows_by_key(prepare_organization(table, validation_fraction=0.2, key=KEY, schema=None))
    outlier = _add_outlier(table)
    after = _rows_by_key(prepare_organization(outlier, validation_fraction=0.2, key=KEY, schema=None))
    changed = [rid for rid in before if after[rid] != before[rid]]
    assert len(changed) == len(before)


def test_split_holds_out_about_the_fraction_and_depends_on_the_seed() -> None:
    table = load_breast_cancer()
    mask = validation_mask(table, fraction=0.2, key=KEY)
    assert 0.15 < mask.mean() < 0.25
    other = validation_mask(table, fraction=0.2, key=split_key(1))
    assert not np.array_equal(mask, other)
    assert not validation_mask(table, fraction=0.0, key=KEY).any()


def test_an_id_keys_the_record_not_its_values() -> None:
    table = _with_ids(load_breast_cancer())
    mask = validation_mask(table, fraction=0.3, key=KEY)
    edited = Table(table.features + 1.0, 1 - table.labels, table.feature_names, table.source, table.record_ids)
    assert np.array_equal(validation_mask(edited, fraction=0.3, key=KEY), mask)
    same_id = Table(table.features, table.labels, table.feature_names, table.source, np.full(len(table), "p", object))
    assert len(set(validation_mask(same_id, fraction=0.3, key=KEY).tolist())) == 1


def test_a_table_whose_rows_all_fall_in_validation_is_refused_by_name() -> None:
    row = Table(np.ones((1, 2), np.float32), np.zeros(1, np.int64), ("a", "b"), "tiny.csv")
    seed = next(s for s in range(1000) if validation_mask(row, fraction=0.5, key=split_key(s))[0])
    with pytest.raises(DataError, match=r"tiny.csv: all 1 row\(s\) fell in the local validation split"):
        prepare_organization(row, validation_fraction=0.5, key=split_key(seed), schema=None)
    train_seed = next(s for s in range(1000) if not validation_mask(row, fraction=0.5, key=split_key(s))[0])
    data = prepare_organization(row, validation_fraction=0.5, key=split_key(train_seed), schema=None)
    assert (len(data.train), len(data.validation)) == (1, 0)


def test_schema_clips_and_maps_bounds_to_a_fixed_range() -> None:
    assert SCALED_HALF_WIDTH == 3.0
    schema = FeatureSchema.from_bounds([(0.0, 10.0), (-2.0, 2.0)], feature_names=("a", "b"))
    table = Table(np.array([[0, -2], [10, 2], [5, 0], [-3, 9]], np.float32), np.zeros(4, np.int64), ("a", "b"), "t")
    assert schema.scale(table).features.tolist() == [[-3, -3], [3, 3], [0, 0], [-3, 3]]
    logged = FeatureSchema.from_bounds([(0.0, float(np.e**2 - 1), "log1p")], feature_names=("a",))
    column = np.array([[0.0], [np.e - 1], [np.e**2 - 1], [1e9]], np.float32)
    out = logged.scale(Table(column, np.zeros(4, np.int64), ("a",), "t")).features[:, 0]
    assert np.allclose(out, [-3.0, 0.0, 3.0, 3.0], atol=1e-5)
    with pytest.raises(ConfigError, match=r"dataset.feature_bounds\[0\].*low > -1 for log1p"):
        FeatureSchema.from_bounds([(-2.0, 1.0, "log1p")], feature_names=("a",))
    with pytest.raises(ConfigError, match=r"dataset.feature_bounds\[1\].*'b'"):
        FeatureSchema.from_bounds([(0.0, 1.0), (3.0, 3.0)], feature_names=("a", "b"))
    with pytest.raises(ConfigError, match="dataset.feature_bounds: expected one 'low:high' pair per feature column"):
        FeatureSchema.from_bounds([(0.0, 1.0)], feature_names=("a", "b"))
    with pytest.raises(DataError, match="t: 2 feature columns"):
        FeatureSchema.from_bounds([(0.0, 1.0)], feature_names=("a",)).scale(table)


def test_breast_cancer_bounds_are_the_published_min_and_max() -> None:
    """The schema is the Min/Max table of scikit-learn's DESCR, not statistics of the rows."""
    descr = sk_load_breast_cancer().DESCR
    published = re.findall(r"^[a-z ]+\([a-z ]+\):\s+(\S+)\s+(\S+)\s*$", descr, flags=re.MULTILINE)
    assert len(published) == 30
    assert [f"{lo}:{hi}" for lo, hi in published] == [b.removesuffix(":log1p") for b in BREAST_CANCER_FEATURE_BOUNDS]
    assert ExperimentConfig().dataset.feature_bounds == BREAST_CANCER_FEATURE_BOUNDS


def test_simulated_organizations_and_test_set_use_the_schema() -> None:
    from oneliac_flwr.data import central_test_set

    config = ExperimentConfig()
    for pid in range(3):
        data = simulation_organization(config, pid)
        for table in (data.train, data.validation):
            assert table.features.min() >= -3.0 and table.features.max() <= 3.0
    test = central_test_set(config)
    assert test.features.min() >= -3.0 and test.features.max() <= 3.0
    # not standardized with its own statistics
    assert not np.allclose(test.features.mean(axis=0), 0.0, atol=0.05)


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "h1.csv"
    path.write_text(text)
    return path


def _csv_config(path: Path, **dataset: object) -> dict:
    return {
        "dataset": {"name": "csv", "csv_path": str(path), "label_column": "y", "feature_columns": ["a", "b"], **dataset}
    }


def test_csv_without_bounds_is_refused_under_dp_and_standardized_without(tmp_path: Path) -> None:
    path = _csv(tmp_path, "a,b,y\n" + "".join(f"{i},{i % 5},{i % 2}\n" for i in range(40)))
    with pytest.raises(ConfigError) as info:
        deployment_organization(ExperimentConfig.from_dict({**_csv_config(path), "privacy_budget": {"mode": "sample"}}), str(path))
    assert info.value.field == "dataset.feature_bounds"
    data = deployment_organization(ExperimentConfig.from_dict(_csv_config(path)), str(path))
    assert np.allclose(data.train.features.mean(axis=0), 0.0, atol=1e-5)
    bounded = ExperimentConfig.from_dict(
        {**_csv_config(path, feature_bounds=["0:39", "0:4"]), "privacy_budget": {"mode": "sample"}}
    )
    scaled = deployment_organization(bounded, str(path))
    assert scaled.train.features.min() == -3.0 and scaled.train.features.max() == 3.0


def test_csv_record_ids_key_the_split_and_repeats_are_refused_under_sample_dp(tmp_path: Path) -> None:
    path = _csv(tmp_path, "pid,a,b,y\n" + "".join(f"patient-{i // 2},{i},{i % 5},{i % 2}\n" for i in range(40)))
    table = load_csv(path, label_column="y", id_column="pid")
    assert table.feature_names == ("a", "b")
    assert table.record_ids is not None and table.record_ids[3] == "patient-1"
    config = _csv_config(path, feature_bounds=["0:39", "0:4"], record_id_column="pid")
    with pytest.raises(DataError, match="h1.csv: record id column 'pid' repeats 20 id") as info:
        deployment_organization(ExperimentConfig.from_dict({**config, "privacy_budget": {"mode": "sample"}}), str(path))
    assert "patient-" not in str(info.value)  # no patient id in a message that may leave the hospital
    data = deployment_organization(ExperimentConfig.from_dict(config), str(path))
    sides = {rid: "train" for rid in data.train.record_ids} | {rid: "val" for rid in data.validation.record_ids}
    assert len(data.train) + len(data.validation) == 40 and len(sides) == 20  # a patient's rows stay together
    with pytest.raises(DataError, match="h1.csv: record id column 'nope' not found"):
        load_csv(path, label_column="y", id_column="nope")


@pytest.mark.parametrize(
    ("bounds", "field", "fragment"),
    [
        (["0:1"], "dataset.feature_bounds", "one 'low:high' pair per feature column (2), got 1"),
        (["0:1", "2"], "dataset.feature_bounds[1]", "expected 'low:high'"),
        (["0:1", "5:1"], "dataset.feature_bounds[1]", "finite low < high"),
        (["0:1", "a:b"], "dataset.feature_bounds[1]", "got 'a:b'"),
        (["0:1", "-2:1:log1p"], "dataset.feature_bounds[1]", "low > -1 for log1p"),
        (["0:1", "0:1:exp"], "dataset.feature_bounds[1]", "got '0:1:exp'"),
        (["0:1", "0:1:log1p:x"], "dataset.feature_bounds[1]", "got '0:1:log1p:x'"),
    ],
)
def test_bad_bounds_name_the_field(tmp_path: Path, bounds: list[str], field: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        ExperimentConfig.from_dict(_csv_config(tmp_path / "x.csv", feature_bounds=bounds))
    assert info.value.field == field
    assert fragment in str(info.value)


def test_bounds_and_record_id_round_trip_through_the_flat_run_config(tmp_path: Path) -> None:
    config = ExperimentConfig.from_dict(
        _csv_config(tmp_path / "x.csv", feature_bounds=["0:1", "0.5:2:log1p"], record_id_column="pid")
    )
    flat = config.to_run_config()
    assert flat["dataset.feature_bounds"] == "0:1,0.5:2:log1p"
    assert ExperimentConfig.from_run_config(flat) == config
    assert config.dataset.bounds() == ((0.0, 1.0, "none"), (0.5, 2.0, "log1p"))
    # "" (pyproject's value) means: the built-in schema for breast_cancer, none for csv
    assert ExperimentConfig.from_run_config({"dataset.feature_bounds": ""}).dataset.feature_bounds == (
        BREAST_CANCER_FEATURE_BOUNDS
    )
    assert ExperimentConfig.from_run_config({**flat, "dataset.feature_bounds": ""}).dataset.feature_bounds is None
