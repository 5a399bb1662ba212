"""Built-in datasets that ship with installed packages (no download at run time)."""

from __future__ import annotations

import numpy as np

from oneliac_flwr.data.tables import Table

__all__ = ["load_breast_cancer"]


def load_breast_cancer() -> Table:
    """Load scikit-learn's Wisconsin breast-cancer diagnosis table.

    569 patients, 30 numeric features, labels ``0`` (malignant) and ``1`` (benign).
    The file ships inside scikit-learn, so nothing is downloaded.
    """
    from sklearn.datasets import load_breast_cancer as _sk_load_breast_cancer  # heavy: only when used

    bunch = _sk_load_breast_cancer()
    return Table(
        features=np.asarray(bunch.data, dtype=np.float32),
        labels=np.asarray(bunch.target, dtype=np.int64),
        feature_names=tuple(str(n) for n in bunch.feature_names),
        source="sklearn:breast_cancer",
    )
