"""The in-memory table every loader returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Table"]


@dataclass(frozen=True)
class Table:
    """Features, integer labels and feature names of one dataset or partition.

    Parameters
    ----------
    features : numpy.ndarray
        ``float32`` array of shape ``(n, d)``.
    labels : numpy.ndarray
        ``int64`` array of shape ``(n,)`` with class indices ``0..k-1``.
    feature_names : tuple of str
        Column names, ``d`` of them.
    source : str
        Where the table came from (file path or dataset name), used in error messages.
    record_ids : numpy.ndarray, optional
        One record key (text) per row, read from ``dataset.record_id_column``; ``None``
        when the table has no id column (a row is then keyed by its own bytes).
    """

    features: np.ndarray
    labels: np.ndarray
    feature_names: tuple[str, ...]
    source: str
    record_ids: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices: np.ndarray) -> Table:
        """Return the rows at ``indices`` as a new table."""
        ids = None if self.record_ids is None else self.record_ids[indices]
        return Table(self.features[indices], self.labels[indices], self.feature_names, self.source, ids)
