"""Per-organization preprocessing that lets no record move another.

Two steps, each a function of one record and public settings only:

* the local train/validation split (:func:`validation_mask`): a record goes to
  validation if and only if a keyed hash (HMAC-SHA256, keyed by the public seed) of its
  record key falls below ``local_validation_fraction``. Adding or removing a record
  changes no other record's side.
* the scaling (:class:`FeatureSchema`): each feature is clipped to public bounds from the
  config, optionally ``log1p``-transformed, and mapped to ``[-3, 3]``. No statistic is
  computed from any row.

:func:`standardize_with_own_statistics` (mean and standard deviation of the table
itself) remains for tables without a schema, and only when no differential privacy is
configured: it lets every row move every other row (see ``docs/privacy.md``).
"""

from __future__ import annotations

import hashlib
import hmac
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from oneliac_flwr.data.tables import Table
from oneliac_flwr.errors import ConfigError, DataError

__all__ = [
    "SCALED_HALF_WIDTH",
    "FeatureSchema",
    "OrganizationData",
    "prepare_organization",
    "record_keys",
    "split_key",
    "standardize_with_own_statistics",
    "validation_mask",
]


@dataclass(frozen=True)
class OrganizationData:
    """One organization's scaled training and local-validation tables."""

    train: Table
    validation: Table


#: Public bounds map to ``[-SCALED_HALF_WIDTH, SCALED_HALF_WIDTH]``: the range of a
#: roughly normal feature spans about six standard deviations, so the public midpoint and
#: ``(high - low) / 6`` stand in for a mean and a standard deviation no row contributes to.
SCALED_HALF_WIDTH = 3.0


@dataclass(frozen=True)
class FeatureSchema:
    """Data-independent scaling: public bounds, clipping, optional ``log1p``, fixed range.

    Parameters
    ----------
    low, high : numpy.ndarray
        Per-feature public bounds in raw units, shape ``(d,)``, with ``low < high``.
    log1p : numpy.ndarray
        Boolean mask, shape ``(d,)``: features (and their bounds) passed through
        ``log1p`` after clipping.
    """

    low: np.ndarray
    high: np.ndarray
    log1p: np.ndarray

    @classmethod
    def from_bounds(
        cls, bounds: Sequence[tuple[float, float] | tuple[float, float, str]], *, feature_names: Sequence[str]
    ) -> FeatureSchema:
        """Build a schema from ``(low, high)`` or ``(low, high, transform)`` entries, one per column.

        ``transform`` is ``"none"`` or ``"log1p"``.

        Raises
        ------
        ConfigError
            If the number of entries differs from the number of feature columns, or an
            entry is not finite with ``low < high`` (``low > -1`` for ``log1p``), or names
            an unknown transform (names ``dataset.feature_bounds``).
        """
        if len(bounds) != len(feature_names):
            raise ConfigError(
                "dataset.feature_bounds",
                f"expected one 'low:high' pair per feature column ({len(feature_names)}), got {len(bounds)}",
            )
        low = np.array([float(entry[0]) for entry in bounds], dtype=np.float64)
        high = np.array([float(entry[1]) for entry in bounds], dtype=np.float64)
        transforms = [str(entry[2]) if len(entry) == 3 else "none" for entry in bounds]
        log1p = np.array([t == "log1p" for t in transforms], dtype=bool)
        bad = ~(np.isfinite(low) & np.isfinite(high) & (low < high) & (~log1p | (low > -1.0)))
        bad |= np.array([t not in ("none", "log1p") for t in transforms], dtype=bool)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise ConfigError(
                f"dataset.feature_bounds[{j}]",
                f"column {feature_names[j]!r}: expected finite low < high (low > -1 for log1p) and "
                f"transform 'none' or 'log1p', got {low[j]}:{high[j]}:{transforms[j]}",
            )
        return cls(low=low, high=high, log1p=log1p)

    def scale(self, table: Table) -> Table:
        """Clip to the bounds, apply ``log1p`` where set, map the bounds to ``[-3, 3]``.

        Each output row depends on that input row and the public schema only.

        Raises
        ------
        DataError
            If the table's number of feature columns differs from the schema's (names the
            table's source).
        """
        if table.features.shape[1] != self.low.shape[0]:
            raise DataError(
                f"{table.source}: {table.features.shape[1]} feature columns, "
                f"but dataset.feature_bounds has {self.low.shape[0]} pairs"
            )
        values = np.clip(table.features.astype(np.float64), self.low, self.high)
        low, high = self.low.copy(), self.high.copy()
        values[:, self.log1p] = np.log1p(values[:, self.log1p])
        low[self.log1p], high[self.log1p] = np.log1p(low[self.log1p]), np.log1p(high[self.log1p])
        mapped = SCALED_HALF_WIDTH * (2.0 * (values - low) / (high - low) - 1.0)
        return Table(mapped.astype(np.float32), table.labels, table.feature_names, table.source, table.record_ids)


def split_key(seed: int, salt: int = 0) -> bytes:
    """The public HMAC key of the local split: a function of the seed and a salt only."""
    return f"oneliac-flwr/local-validation/v1/seed={seed}/salt={salt}".encode()


def record_keys(table: Table) -> list[bytes]:
    """The key of each record: its id if the table has one, else its own bytes.

    Without an id, a row is keyed by its features as little-endian ``float32`` followed by
    its label as little-endian ``int64``; identical rows share a key (and a side).
    """
    if table.record_ids is not None:
        return [str(rid).encode() for rid in table.record_ids]
    features = np.ascontiguousarray(table.features, dtype="<f4")
    labels = np.ascontiguousarray(table.labels, dtype="<i8")
    return [features[i].tobytes() + labels[i].tobytes() for i in range(len(table))]


def validation_mask(table: Table, *, fraction: float, key: bytes) -> np.ndarray:
    """Which rows are local-validation rows: a function of each row alone.

    A row is held out when ``HMAC-SHA256(key, record_key) / 2**256 < fraction``.

    Parameters
    ----------
    table : Table
        The organization's rows.
    fraction : float
        ``dataset.local_validation_fraction``, in ``[0, 1)``.
    key : bytes
        Public HMAC key (:func:`split_key`).

    Returns
    -------
    numpy.ndarray
        Boolean array of shape ``(n,)``, ``True`` for validation rows.
    """
    threshold = int(fraction * 2.0**256)
    return np.array(
        [int.from_bytes(hmac.new(key, rk, hashlib.sha256).digest(), "big") < threshold for rk in record_keys(table)],
        dtype=bool,
    )


def prepare_organization(
    table: Table, *, validation_fraction: float, key: bytes, schema: FeatureSchema | None
) -> OrganizationData:
    """Split an organization's rows with the keyed hash and scale them.

    Parameters
    ----------
    table : Table
        The organization's rows.
    validation_fraction : float
        Expected share of rows held out for local validation.
    key : bytes
        Public HMAC key of the split (:func:`split_key`).
    schema : FeatureSchema or None
        Public scaling. ``None`` standardizes with the training rows' own mean and
        standard deviation (the caller allows it only without differential privacy).

    Raises
    ------
    DataError
        If the table is empty, or the split leaves no training row (names the source).
    """
    if len(table) == 0:
        raise DataError(f"{table.source}: partition is empty")
    held_out = validation_mask(table, fraction=validation_fraction, key=key)
    if held_out.all():
        raise DataError(
            f"{table.source}: all {len(table)} row(s) fell in the local validation split "
            f"(dataset.local_validation_fraction={validation_fraction}); add rows or lower the fraction"
        )
    train, validation = table.subset(np.flatnonzero(~held_out)), table.subset(np.flatnonzero(held_out))
    if schema is not None:
        return OrganizationData(train=schema.scale(train), validation=schema.scale(validation))
    scaler = _fit(train)
    return OrganizationData(train=_scaled(train, scaler), validation=_scaled(validation, scaler))


def standardize_with_own_statistics(table: Table) -> Table:
    """Scale a table with its own mean and standard deviation (as a new site would)."""
    return _scaled(table, _fit(table))


@dataclass(frozen=True)
class _Standardizer:
    """A site's own mean and scale (the arithmetic of scikit-learn's ``StandardScaler``,
    without importing scikit-learn in every ClientApp process)."""

    mean: np.ndarray
    scale: np.ndarray

    def transform(self, features: np.ndarray) -> np.ndarray:
        return (features - self.mean) / self.scale


def _fit(table: Table) -> _Standardizer:
    features = table.features.astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = features.mean(axis=0) if len(features) else np.full(features.shape[1], np.nan)
        var = features.var(axis=0) if len(features) else np.full(features.shape[1], np.nan)
    # near-constant columns keep scale 1 (StandardScaler's rule, Chan-Golub-LeVeque bound)
    eps = np.finfo(np.float64).eps
    constant = var <= len(features) * eps * var + (len(features) * mean * eps) ** 2
    scale = np.sqrt(var)
    scale[constant] = 1.0
    return _Standardizer(mean=mean, scale=scale)


def _scaled(table: Table, scaler: _Standardizer) -> Table:
    if len(table) == 0:
        return table
    features = scaler.transform(table.features.astype(np.float64)).astype(np.float32)
    return Table(features, table.labels, table.feature_names, table.source, table.record_ids)
