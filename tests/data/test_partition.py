"""Partitioners: disjoint, covering, minimum sizes, single-class warning."""

from __future__ import annotations

import numpy as np
import pytest

from oneliac_flwr.data import (
    SingleClassPartitionWarning,
    dirichlet_partition,
    iid_partition,
    site_partition,
)
from oneliac_flwr.errors import ConfigError

IGNORE_SINGLE_CLASS = pytest.mark.filterwarnings("ignore::oneliac_flwr.data.partition.SingleClassPartitionWarning")


def _assert_disjoint_cover(parts: list[np.ndarray], n: int) -> None:
    joined = np.concatenate(parts)
    assert len(joined) == n
    assert np.array_equal(np.sort(joined), np.arange(n))


@pytest.mark.parametrize("num_partitions", [1, 3, 7])
def test_iid_is_disjoint_covering_and_balanced(num_partitions: int) -> None:
    parts = iid_partition(100, num_partitions, rng=np.random.default_rng(0))
    _assert_disjoint_cover(parts, 100)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


@IGNORE_SINGLE_CLASS
@pytest.mark.parametrize("alpha", [0.1, 0.5, 5.0])
def test_dirichlet_is_disjoint_covering_with_minimum_size(alpha: float) -> None:
    labels = np.random.default_rng(1).integers(0, 2, size=400)
    parts = dirichlet_partition(labels, 4, alpha=alpha, min_partition_size=20, rng=np.random.default_rng(2))
    _assert_disjoint_cover(parts, 400)
    assert min(len(p) for p in parts) >= 20


@IGNORE_SINGLE_CLASS
def test_dirichlet_small_alpha_skews_labels_more_than_large_alpha() -> None:
    labels = np.random.default_rng(1).integers(0, 2, size=2000)

    def mean_skew(alpha: float) -> float:
        parts = dirichlet_partition(labels, 5, alpha=alpha, min_partition_size=5, rng=np.random.default_rng(3))
        return float(np.mean([abs(labels[p].mean() - 0.5) for p in parts]))

    assert mean_skew(0.1) > mean_skew(100.0) + 0.1


def test_dirichlet_impossible_minimum_is_refused_with_numbers() -> None:
    labels = np.zeros(30, dtype=int)
    with pytest.raises(ConfigError, match="cannot give 4 partitions of >= 10 rows"):
        dirichlet_partition(labels, 4, alpha=0.5, min_partition_size=10, rng=np.random.default_rng(0))


def test_single_class_partition_warns_not_errors() -> None:
    labels = np.array([0] * 50 + [1] * 50)
    with pytest.warns(SingleClassPartitionWarning, match="single class"):
        # alpha tiny: each class goes (almost) entirely to one partition
        parts = dirichlet_partition(labels, 2, alpha=0.001, min_partition_size=10, rng=np.random.default_rng(0))
    _assert_disjoint_cover(parts, 100)


def test_site_partition_groups_rows_by_site() -> None:
    sites = ["b", "a", "b", "c", "a"]
    parts, names = site_partition(sites)
    assert names == ["a", "b", "c"]
    assert [p.tolist() for p in parts] == [[1, 4], [0, 2], [3]]

