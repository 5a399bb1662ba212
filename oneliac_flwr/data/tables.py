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
    """

    features: np.ndarray
    labels: np.ndarray
    feature_names: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices: np.ndarray) -> Table:
        """Return the rows at ``indices`` as a new table."""
        return Table(self.features[indices], self.labels[indices], self.feature_names, self.source)
