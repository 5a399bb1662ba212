"""Partitioners that split a table among organizations (simulation only).

Every partitioner returns a list of index arrays: disjoint, and together covering every
row exactly once. Random generators are passed in.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from oneliac_flwr.errors import ConfigError, DataError

__all__ = ["SingleClassPartitionWarning", "dirichlet_partition", "iid_partition", "site_partition"]


class SingleClassPartitionWarning(UserWarning):
    """A partition holds a single class: legal in a non-IID federation, worth knowing."""


def iid_partition(num_rows: int, num_partitions: int, *, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle the rows and deal them into ``num_partitions`` near-equal parts."""
    _check_count(num_rows, num_partitions, min_size=1)
    order = rng.permutation(num_rows)
    return [np.sort(part) for part in np.array_split(order, num_partitions)]


def dirichlet_partition(
    labels: np.ndarray,
    num_partitions: int,
    *,
    alpha: float,
    min_partition_size: int,
    rng: np.random.Generator,
    max_attempts: int = 100,
) -> list[np.ndarray]:
    """Label-skewed split: each class is spread over partitions with Dirichlet(alpha) shares.

    Draws are repeated until every partition holds at least ``min_partition_size`` rows.

    Raises
    ------
    ConfigError
        If ``alpha <= 0`` or no draw meets the minimum size within ``max_attempts`` (the
        message says which sizes were reached).
    """
    if alpha <= 0:
        raise ConfigError("federation.dirichlet_alpha", f"must be > 0, got {alpha}")
    _check_count(len(labels), num_partitions, min_size=min_partition_size)
    classes = np.unique(labels)
    smallest = 0
    for _ in range(max_attempts):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_partitions)]
        for cls in classes:
            rows = rng.permutation(np.flatnonzero(labels == cls))
            shares = rng.dirichlet(np.full(num_partitions, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(rows)).astype(int)
            for pid, chunk in enumerate(np.split(rows, cuts)):
                parts[pid].append(chunk)
        result = [np.sort(np.concatenate(p)) for p in parts]
        smallest = min(len(p) for p in result)
        if smallest >= min_partition_size:
            _warn_single_class(labels, result)
            return result
    raise ConfigError(
        "federation.min_partition_size",
        f"no Dirichlet(alpha={alpha}) split of {len(labels)} rows into {num_partitions} partitions "
        f"gave every partition >= {min_partition_size} rows in {max_attempts} attempts "
        f"(last smallest: {smallest}); lower it or raise alpha",
    )


def site_partition(sites: Sequence[object] | np.ndarray) -> tuple[list[np.ndarray], list[str]]:
    """Natural partition: one organization per distinct value of the site column.

    Returns the index arrays and the site names, in sorted order of the names.
    """
    values = np.asarray([str(s) for s in sites])
    names = sorted(set(values.tolist()))
    if not names:
        raise DataError("site column is empty")
    return [np.flatnonzero(values == name) for name in names], names


def _check_count(num_rows: int, num_partitions: int, *, min_size: int) -> None:
    if num_partitions < 1:
        raise ConfigError("federation.num_organizations", f"must be >= 1, got {num_partitions}")
    if num_rows < num_partitions * min_size:
        raise ConfigError(
            "federation.num_organizations",
            f"{num_rows} rows cannot give {num_partitions} partitions of >= {min_size} rows each",
        )


def _warn_single_class(labels: np.ndarray, parts: list[np.ndarray]) -> None:
    for pid, part in enumerate(parts):
        present = np.unique(labels[part])
        if len(present) == 1:
            warnings.warn(
                f"partition {pid} holds a single class ({int(present[0])}); "
                "legal in a non-IID federation, but its local accuracy is not informative",
                SingleClassPartitionWarning,
                stacklevel=3,
            )
