"""Local data analysis: what a hospital can look at before joining a federation.

:func:`analyze_local_data` summarises a local table (label distribution, per-feature
statistics, missingness) for the hospital's own eyes. :func:`site_summary` is the
part that may be shared with the coordinator: counts only, never a raw value.
"""

from __future__ import annotations

import math
import numbers
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from oneliac_flwr.errors import ConfigError, DataError

__all__ = ["FeatureSummary", "LabelDistribution", "LocalDataSummary", "analyze_local_data", "site_summary"]


@dataclass(frozen=True, kw_only=True)
class LabelDistribution:
    """How many examples carry each label.

    Parameters
    ----------
    num_examples : int
        Number of rows, missing labels included.
    missing : int
        Rows whose label is missing (``None`` or NaN).
    counts : dict of str to int
        Rows per label, keyed by the label's text (integral floats as integers,
        ``1.0`` -> ``"1"``), in sorted label order.
    """

    num_examples: int
    missing: int
    counts: dict[str, int]

    @property
    def fractions(self) -> dict[str, float]:
        """Share of each label among the rows that have one (empty if none has)."""
        labelled = self.num_examples - self.missing
        return {label: count / labelled for label, count in self.counts.items()} if labelled else {}

    def to_dict(self) -> dict[str, Any]:
        """Return ``num_examples``, ``missing_labels``, ``label_counts``, ``label_fractions``."""
        return {
            "num_examples": self.num_examples,
            "missing_labels": self.missing,
            "label_counts": dict(self.counts),
            "label_fractions": self.fractions,
        }


@dataclass(frozen=True, kw_only=True)
class FeatureSummary:
    """Summary statistics of one feature, over its non-missing values.

    Statistics of a feature with no value are NaN; ``std`` is the sample standard
    deviation (``ddof=1``, as ``pandas.DataFrame.describe``), NaN below two values.
    Quartiles use linear interpolation (numpy's and pandas' default).
    """

    name: str
    count: int
    missing_count: int
    missing_fraction: float
    mean: float
    std: float
    min: float
    q25: float
    median: float
    q75: float
    max: float

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-serialisable dict (non-finite values as ``None``)."""
        return {
            "name": self.name,
            "count": self.count,
            "missing_count": self.missing_count,
            "missing_fraction": self.missing_fraction,
            **{key: _json_stat(getattr(self, key)) for key in _STATS},
        }


_STATS = ("mean", "std", "min", "q25", "median", "q75", "max")
_STAT_HEADERS = ("mean", "std", "min", "25%", "50%", "75%", "max")


@dataclass(frozen=True, kw_only=True)
class LocalDataSummary:
    """Label distribution, per-feature statistics and missingness of a local table.

    Holds statistics of raw values (min, max, quartiles): for the hospital's own
    use, not for sharing (see :func:`site_summary`).
    """

    labels: LabelDistribution
    features: tuple[FeatureSummary, ...]

    @property
    def num_examples(self) -> int:
        """Number of rows."""
        return self.labels.num_examples

    def to_dict(self) -> dict[str, Any]:
        """Return the summary as a JSON-serialisable dict (non-finite values as ``None``)."""
        return {
            **self.labels.to_dict(),
            "num_features": len(self.features),
            "features": [feature.to_dict() for feature in self.features],
        }

    def format_text(self) -> str:
        """Return the summary as an aligned plain-text report."""
        labels = self.labels
        lines = [
            f"{labels.num_examples} examples, {len(self.features)} features, {labels.missing} missing labels",
            "label distribution:",
        ]
        fractions = labels.fractions
        width = max((len(label) for label in labels.counts), default=0)
        lines += [
            f"  {label:<{width}}  {count:>8}  {fractions[label]:>7.1%}" for label, count in labels.counts.items()
        ]
        name_width = max([len("feature")] + [len(f.name) for f in self.features])
        header = f"  {'feature':<{name_width}}  {'count':>8}  {'missing':>8}  {'missing%':>8}"
        lines += ["features:", header + "".join(f"  {h:>10}" for h in _STAT_HEADERS)]
        for f in self.features:
            row = f"  {f.name:<{name_width}}  {f.count:>8}  {f.missing_count:>8}  {f.missing_fraction:>8.1%}"
            lines.append(row + "".join(f"  {getattr(f, key):>10.4g}" for key in _STATS))
        return "\n".join(lines)


def analyze_local_data(
    features: np.ndarray, labels: np.ndarray, *, feature_names: list[str] | None = None
) -> LocalDataSummary:
    """Summarise a local table: labels, per-feature statistics and missingness.

    Parameters
    ----------
    features : numpy.ndarray
        Numeric array of shape ``(n, d)``; NaN marks a missing value.
    labels : numpy.ndarray
        Array of shape ``(n,)``; ``None`` or NaN marks a missing label.
    feature_names : list of str, optional
        One name per feature column; default ``feature_0``, ``feature_1``, ...

    Returns
    -------
    LocalDataSummary

    Raises
    ------
    DataError
        If ``features`` is not a non-empty 2-D numeric array or ``labels`` is not a
        1-D array with one label per row.
    ConfigError
        If ``feature_names`` does not hold one string per feature column.
    """
    table = np.asarray(features)
    if table.ndim != 2 or table.shape[0] == 0:
        raise DataError(f"features: expected a 2-D array with at least one row, got shape {table.shape}")
    if table.dtype.kind not in "biuf":
        raise DataError(f"features: expected numeric values, got dtype {table.dtype}")
    distribution = _label_distribution(labels)
    if distribution.num_examples != table.shape[0]:
        raise DataError(f"labels: expected one label per row ({table.shape[0]}), got {distribution.num_examples}")
    names = _feature_names(feature_names, table.shape[1])
    columns = table.astype(np.float64, copy=False)
    return LocalDataSummary(
        labels=distribution,
        features=tuple(_feature_summary(name, columns[:, j]) for j, name in enumerate(names)),
    )


def site_summary(labels: np.ndarray) -> dict[str, Any]:
    """What a site may share with the coordinator: counts and label distribution only.

    Never includes a feature value or a row. Note that exact small counts can
    still be identifying in a small site; share with that in mind.

    Parameters
    ----------
    labels : numpy.ndarray
        The site's labels, shape ``(n,)``; ``None`` or NaN marks a missing label.

    Returns
    -------
    dict
        ``num_examples``, ``missing_labels``, ``label_counts`` (label -> count) and
        ``label_fractions`` (label -> share of the labelled rows).

    Raises
    ------
    DataError
        If ``labels`` is not 1-D.
    """
    return _label_distribution(labels).to_dict()


def _label_distribution(labels: np.ndarray) -> LabelDistribution:
    values = np.asarray(labels)
    if values.ndim != 1:
        raise DataError(f"labels: expected a 1-D array, got shape {values.shape}")
    missing = _missing_labels(values)
    present = values[~missing]
    if present.dtype.kind == "O":
        tally = Counter(_label_key(value) for value in present)
        counts = {key: tally[key] for key in sorted(tally)}
    else:
        unique, tallies = np.unique(present, return_counts=True)
        counts = {_label_key(value): int(count) for value, count in zip(unique.tolist(), tallies)}
    return LabelDistribution(num_examples=int(values.size), missing=int(np.count_nonzero(missing)), counts=counts)


def _missing_labels(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind in "fc":
        return np.isnan(values)
    if values.dtype.kind == "O":
        return np.array([_is_missing(value) for value in values], dtype=bool)
    return np.zeros(values.shape, dtype=bool)


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, numbers.Real) and math.isnan(value))


def _label_key(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _feature_names(names: list[str] | None, count: int) -> list[str]:
    if names is None:
        return [f"feature_{j}" for j in range(count)]
    if len(names) != count or not all(isinstance(name, str) for name in names):
        raise ConfigError("feature_names", f"expected {count} strings (one per feature column), got {names!r}")
    return list(names)


def _feature_summary(name: str, column: np.ndarray) -> FeatureSummary:
    present = column[~np.isnan(column)]
    count = int(present.size)
    missing = int(column.size) - count
    nan = float("nan")
    if count:
        q25, median, q75 = (float(q) for q in np.quantile(present, [0.25, 0.5, 0.75]))
        mean, low, high = float(present.mean()), float(present.min()), float(present.max())
    else:
        q25 = median = q75 = mean = low = high = nan
    return FeatureSummary(
        name=name,
        count=count,
        missing_count=missing,
        missing_fraction=missing / column.size,
        mean=mean,
        std=float(present.std(ddof=1)) if count > 1 else nan,
        min=low,
        q25=q25,
        median=median,
        q75=q75,
        max=high,
    )


def _json_stat(value: float) -> float | None:
    return value if math.isfinite(value) else None
