"""The privacy ledger: every release of a run, composed, budgeted and saved.

A ledger covers one unit of privacy (e.g. organization-level DP-FedAvg): all
its events compose sequentially, whatever their label. Keep one ledger per
unit (sample-level DP-SGD is accounted per organization, see
:mod:`oneliac_flwr.privacy.dpsgd`).

Typical use by a coordinator, once per round::

    event = GaussianRelease(noise_multiplier=z)
    if ledger.would_exceed([event]):
        stop gracefully            # before any noise is drawn or update sent
    ...run the round...
    ledger.record([event], round_number=r, clip_norm=C, participants=n)
    ledger.save(path)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from oneliac_flwr.atomic_files import write_json_atomic
from oneliac_flwr.errors import PrivacyBudgetExhausted, PrivacyError
from oneliac_flwr.privacy._validation import (
    PrivacyConfigError,
    require_non_negative,
    require_positive,
    require_positive_int,
    require_probability,
)
from oneliac_flwr.privacy.accountant import (
    Accountant,
    GdpAccountant,
    make_accountant,
)
from oneliac_flwr.privacy.integrity import StateIntegrityError, load_or_create_key
from oneliac_flwr.privacy.integrity import canonical_json as integrity_canonical_json
from oneliac_flwr.privacy.events import (
    DpSgdSteps,
    ExactRelease,
    GaussianRelease,
    LaplaceRelease,
    PrivacyEvent,
    event_from_dict,
    is_privacy_event,
    noise_multiplier_of,
)

__all__ = [
    "LedgerEntry",
    "LedgerIntegrityError",
    "PrivacyLedger",
    "canonical_json",
    "ledger_mac",
    "load_or_create_ledger_key",
]

_SCHEMA_VERSION = 2


def _json_float(value: float | None) -> float | str | None:
    """Floats for strict JSON: infinities become the strings ``"inf"``/``"-inf"``."""
    if value is None or math.isfinite(value):
        return value
    return "inf" if value > 0 else "-inf"


def _float_from_json(field: str, value: Any) -> float | None:
    if value is None:
        return None
    if value == "inf":
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PrivacyError(f"{field}: must be a number, got {value!r}")
    return float(value)


def _as_event_tuple(events: PrivacyEvent | Iterable[PrivacyEvent]) -> tuple[PrivacyEvent, ...]:
    candidates: tuple[object, ...] = (
        (events,) if is_privacy_event(events) else tuple(events)  # type: ignore[arg-type]
    )
    if not candidates:
        raise PrivacyConfigError("events", "must contain at least one privacy event")
    items: list[PrivacyEvent] = []
    for item in candidates:
        if not isinstance(item, (GaussianRelease, LaplaceRelease, ExactRelease, DpSgdSteps)):
            raise PrivacyConfigError("events", f"must contain privacy events, got {type(item).__name__}")
        items.append(item)
    return tuple(items)


def _mechanism_name(events: Sequence[PrivacyEvent]) -> str:
    return "+".join(dict.fromkeys(event.kind for event in events))


def _noise_multiplier(events: Sequence[PrivacyEvent]) -> float | None:
    # Events without Gaussian noise (e.g. a share-failure delta) do not count.
    values = {noise_multiplier_of(event) for event in events} - {None}
    return values.pop() if len(values) == 1 else None


@dataclass(frozen=True)
class LedgerEntry:
    """One recorded release (or group of releases) of a round.

    The epsilons are computed when the entry is recorded and kept, so a
    report of a resumed run shows the numbers that were reported at the time.

    Attributes
    ----------
    round_number : int
        Round of the run (0 for stand-alone releases).
    label : str
        Who released: ``"central"``, an organization id, ...
    events : tuple of PrivacyEvent
        What was released.
    mechanism : str
        Event kinds, e.g. ``"gaussian"``.
    noise_multiplier : float or None
        The events' Gaussian noise multiplier when they share one.
    clip_norm : float or None
        Clipping norm (L2 sensitivity) used, as passed by the caller.
    participants : int or None
        Number of contributions aggregated, as passed by the caller.
    epsilon_round : float
        Primary epsilon of this round's events alone (entries so far).
    epsilon_cumulative : float
        Primary epsilon of the whole ledger after this entry.
    epsilon_cumulative_cross_check : float or None
        Cross-check epsilon after this entry (None if not applicable).
    recorded_at : str
        UTC time of recording, ISO 8601.
    """

    round_number: int
    label: str
    events: tuple[PrivacyEvent, ...]
    mechanism: str
    noise_multiplier: float | None
    clip_norm: float | None
    participants: int | None
    epsilon_round: float
    epsilon_cumulative: float
    epsilon_cumulative_cross_check: float | None
    recorded_at: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (strict JSON: infinities as strings)."""
        return {
            "round": self.round_number,
            "label": self.label,
            "events": [event.to_dict() for event in self.events],
            "mechanism": self.mechanism,
            "noise_multiplier": self.noise_multiplier,
            "clip_norm": self.clip_norm,
            "participants": self.participants,
            "epsilon_round": _json_float(self.epsilon_round),
            "epsilon_cumulative": _json_float(self.epsilon_cumulative),
            "epsilon_cumulative_cross_check": _json_float(self.epsilon_cumulative_cross_check),
            "recorded_at": self.recorded_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LedgerEntry:
        """Inverse of :meth:`to_dict`."""
        try:
            events = tuple(event_from_dict(item) for item in data["events"])
            return cls(
                round_number=int(data["round"]),
                label=str(data["label"]),
                events=events,
                mechanism=str(data["mechanism"]),
                noise_multiplier=_float_from_json("entry.noise_multiplier", data.get("noise_multiplier")),
                clip_norm=_float_from_json("entry.clip_norm", data.get("clip_norm")),
                participants=None if data.get("participants") is None else int(data["participants"]),
                epsilon_round=_float_from_json("entry.epsilon_round", data["epsilon_round"]) or 0.0,
                epsilon_cumulative=_float_from_json("entry.epsilon_cumulative", data["epsilon_cumulative"])
                or 0.0,
                epsilon_cumulative_cross_check=_float_from_json(
                    "entry.epsilon_cumulative_cross_check", data.get("epsilon_cumulative_cross_check")
                ),
                recorded_at=str(data.get("recorded_at", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PrivacyError(f"entry: malformed ledger entry ({exc})") from exc


class PrivacyLedger:
    """Records every release, composes them and enforces an epsilon budget.

    Parameters
    ----------
    epsilon_budget : float
        Total epsilon allowed (> 0).
    delta : float
        Delta at which epsilon is reported and budgeted, in (0, 1).
    primary : str
        Accountant that enforces the budget: ``"pld"`` (default), ``"rdp"``
        or ``"gdp"`` (full-participation Gaussian only).
    cross_check : str or None
        Second accountant reported alongside (default ``"rdp"``); None for none.
    """

    def __init__(
        self,
        *,
        epsilon_budget: float,
        delta: float,
        primary: str = "pld",
        cross_check: str | None = "rdp",
    ) -> None:
        self._epsilon_budget = require_positive("epsilon_budget", epsilon_budget)
        self._delta = require_probability("delta", delta)
        self._primary = make_accountant(primary, field="primary")
        self._cross_check: Accountant | None = (
            None if cross_check is None else make_accountant(cross_check, field="cross_check")
        )
        self._cross_check_valid = self._cross_check is not None
        self._entries: list[LedgerEntry] = []

    # ------------------------------------------------------------------ state
    @property
    def epsilon_budget(self) -> float:
        """Total epsilon allowed."""
        return self._epsilon_budget

    @property
    def delta(self) -> float:
        """Delta of every reported epsilon."""
        return self._delta

    @property
    def primary(self) -> str:
        """Name of the primary accountant."""
        return self._primary.name

    @property
    def cross_check(self) -> str | None:
        """Name of the cross-check accountant, if any."""
        return None if self._cross_check is None else self._cross_check.name

    @property
    def entries(self) -> tuple[LedgerEntry, ...]:
        """Recorded entries, in order."""
        return tuple(self._entries)

    @property
    def events(self) -> tuple[PrivacyEvent, ...]:
        """All recorded events, in order."""
        return self._primary.events

    @property
    def last_round(self) -> int | None:
        """Largest round number recorded, or None if nothing was recorded."""
        return max((entry.round_number for entry in self._entries), default=None)

    # ------------------------------------------------------------- accounting
    def get_current_epsilon(self) -> float:
        """Epsilon spent so far (primary accountant) at :attr:`delta`."""
        return self._primary.get_epsilon(self._delta)

    def cross_check_epsilon(self) -> float | None:
        """Epsilon spent so far by the cross-check accountant.

        None when there is no cross-check or it cannot describe a recorded event.
        """
        if self._cross_check is None or not self._cross_check_valid:
            return None
        return self._cross_check.get_epsilon(self._delta)

    def closed_form_epsilon(self) -> float | None:
        """Exact mu-GDP epsilon when every event is a full-participation Gaussian, else None."""
        closed = GdpAccountant()
        for event in self.events:
            if not closed.supports(event):
                return None
            closed.compose(event)
        return closed.get_epsilon(self._delta)

    def remaining_epsilon(self) -> float:
        """``epsilon_budget - spent`` (never below 0)."""
        return max(0.0, self._epsilon_budget - self.get_current_epsilon())

    def epsilon_if(self, events: PrivacyEvent | Iterable[PrivacyEvent]) -> float:
        """Primary epsilon after adding ``events``; the ledger is not changed.

        Parameters
        ----------
        events : PrivacyEvent or iterable of PrivacyEvent
            Releases planned for the next round.

        Returns
        -------
        float
            What :meth:`get_current_epsilon` would return after recording them.
        """
        planned = _as_event_tuple(events)
        projected = self._primary.copy()
        for event in planned:
            projected.compose(event)
        return projected.get_epsilon(self._delta)

    def would_exceed(self, events: PrivacyEvent | Iterable[PrivacyEvent]) -> bool:
        """True if adding ``events`` would take epsilon above the budget."""
        return self.epsilon_if(events) > self._epsilon_budget

    def ensure_budget(self, events: PrivacyEvent | Iterable[PrivacyEvent]) -> None:
        """Raise :class:`PrivacyBudgetExhausted` if ``events`` would exceed the budget."""
        projected = self.epsilon_if(events)
        if projected > self._epsilon_budget:
            raise PrivacyBudgetExhausted(
                f"epsilon_budget: the next release would spend epsilon={projected:.6g} "
                f"(delta={self._delta:g}), above the budget {self._epsilon_budget:g}; "
                f"spent so far {self.get_current_epsilon():.6g}"
            )

    def record(
        self,
        events: PrivacyEvent | Iterable[PrivacyEvent],
        *,
        round_number: int,
        label: str = "central",
        clip_norm: float | None = None,
        participants: int | None = None,
    ) -> LedgerEntry:
        """Record releases that happened (always recorded, even past the budget).

        Parameters
        ----------
        events : PrivacyEvent or iterable of PrivacyEvent
            What was released.
        round_number : int
            Round of the run (>= 0).
        label : str
            Who released (``"central"``, an organization id, ...).
        clip_norm : float or None
            Clipping norm used, reported as is.
        participants : int or None
            Number of contributions aggregated, reported as is.

        Returns
        -------
        LedgerEntry
            The new entry, with the epsilons after it.

        Raises
        ------
        PrivacyError
            If the primary accountant cannot account for an event (nothing is
            recorded then).
        """
        recorded = _as_event_tuple(events)
        round_number = require_positive_int("round_number", round_number, minimum=0)
        if not isinstance(label, str) or not label:
            raise PrivacyConfigError("label", f"must be a non-empty string, got {label!r}")
        clip = None if clip_norm is None else require_non_negative("clip_norm", clip_norm)
        count = (
            None if participants is None else require_positive_int("participants", participants, minimum=0)
        )
        for event in recorded:
            if not self._primary.supports(event):
                raise PrivacyError(
                    f"events: the {self._primary.name} accountant cannot account for {event!r}"
                )

        return self._append(
            recorded,
            round_number=round_number,
            label=label,
            clip_norm=clip,
            participants=count,
            recorded_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )

    def _append(
        self,
        recorded: tuple[PrivacyEvent, ...],
        *,
        round_number: int,
        label: str,
        clip_norm: float | None,
        participants: int | None,
        recorded_at: str,
    ) -> LedgerEntry:
        """Compose validated events and append their entry (shared by record and load)."""
        for event in recorded:
            self._primary.compose(event)
        if self._cross_check is not None and self._cross_check_valid:
            if all(self._cross_check.supports(event) for event in recorded):
                for event in recorded:
                    self._cross_check.compose(event)
            else:
                self._cross_check_valid = False

        entry = LedgerEntry(
            round_number=round_number,
            label=label,
            events=recorded,
            mechanism=_mechanism_name(recorded),
            noise_multiplier=_noise_multiplier(recorded),
            clip_norm=clip_norm,
            participants=participants,
            epsilon_round=self._round_epsilon(round_number, recorded),
            epsilon_cumulative=self.get_current_epsilon(),
            epsilon_cumulative_cross_check=self.cross_check_epsilon(),
            recorded_at=recorded_at,
        )
        self._entries.append(entry)
        return entry

    def _round_epsilon(self, round_number: int, new_events: Sequence[PrivacyEvent]) -> float:
        alone = type(self._primary)(**self._primary.settings())
        for entry in self._entries:
            if entry.round_number == round_number:
                for event in entry.events:
                    alone.compose(event)
        for event in new_events:
            alone.compose(event)
        return alone.get_epsilon(self._delta)

    # ----------------------------------------------------------------- report
    def report(self) -> dict[str, Any]:
        """Privacy report: totals and one row per round (JSON-ready).

        Each row has ``round``, ``epsilon_round``, ``epsilon_cumulative``,
        ``epsilon_cumulative_cross_check``, ``delta``, ``mechanism``,
        ``noise_multiplier``, ``clip_norm``, ``participants``, ``labels``,
        ``accountant`` and ``cross_check_accountant``.
        """
        rows: dict[int, dict[str, Any]] = {}
        for entry in self._entries:
            row = rows.get(entry.round_number)
            if row is None:
                row = rows[entry.round_number] = {
                    "round": entry.round_number,
                    "mechanism": entry.mechanism,
                    "noise_multiplier": entry.noise_multiplier,
                    "clip_norm": entry.clip_norm,
                    "participants": entry.participants,
                    "labels": [],
                    "delta": self._delta,
                    "accountant": self._primary.name,
                    "cross_check_accountant": self.cross_check,
                }
            else:
                for key, value in (
                    ("mechanism", entry.mechanism),
                    ("noise_multiplier", entry.noise_multiplier),
                    ("clip_norm", entry.clip_norm),
                    ("participants", entry.participants),
                ):
                    if row[key] != value:
                        row[key] = None if key != "mechanism" else f"{row[key]}+{value}"
            if entry.label not in row["labels"]:
                row["labels"].append(entry.label)
            row["epsilon_round"] = _json_float(entry.epsilon_round)
            row["epsilon_cumulative"] = _json_float(entry.epsilon_cumulative)
            row["epsilon_cumulative_cross_check"] = _json_float(entry.epsilon_cumulative_cross_check)
        spent = self.get_current_epsilon()
        return {
            "accountant": self._primary.name,
            "cross_check_accountant": self.cross_check,
            "epsilon_budget": self._epsilon_budget,
            "delta": self._delta,
            "epsilon_spent": _json_float(spent),
            "epsilon_remaining": _json_float(max(0.0, self._epsilon_budget - spent)),
            "epsilon_cross_check": _json_float(self.cross_check_epsilon()),
            "epsilon_closed_form_gdp": _json_float(self.closed_form_epsilon()),
            "budget_exhausted": spent > self._epsilon_budget,
            "releases": len(self.events),
            "rounds": [rows[key] for key in sorted(rows)],
        }

    # ------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state: settings, entries (events included) and totals."""
        spent = self.get_current_epsilon()
        return {
            "schema_version": _SCHEMA_VERSION,
            "epsilon_budget": self._epsilon_budget,
            "delta": self._delta,
            "primary": self._primary.name,
            "primary_settings": self._primary.settings(),
            "cross_check": self.cross_check,
            "entries": [entry.to_dict() for entry in self._entries],
            "totals": {
                "entries": len(self._entries),
                "releases": len(self.events),
                "epsilon_spent": _json_float(spent),
                "epsilon_cross_check": _json_float(self.cross_check_epsilon()),
            },
        }

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        *,
        source: str = "ledger",
        epsilon_budget: float | None = None,
        delta: float | None = None,
    ) -> PrivacyLedger:
        """Rebuild a ledger from :meth:`to_dict` output, recomputing every epsilon.

        Every event is replayed through the accountants and each entry's
        stored epsilons (round, cumulative, cross-check), mechanism and noise
        multiplier, and the stored totals, must equal what the replay gives
        (relative tolerance 1e-9). A file edited by hand (an entry deleted, a
        noise multiplier changed, a total lowered, delta changed) is refused.

        Parameters
        ----------
        data : mapping
            Output of :meth:`to_dict`.
        source : str
            Name used in error messages (the file path when loading).
        epsilon_budget, delta : float or None
            If given, the saved budget and delta must equal them (e.g. the
            values of the run's configuration).

        Raises
        ------
        LedgerIntegrityError
            If anything recorded disagrees with the replay or the expected
            parameters.
        PrivacyError
            If the data is not a ledger of this schema version.
        """
        if not isinstance(data, Mapping) or data.get("schema_version") != _SCHEMA_VERSION:
            version = data.get("schema_version") if isinstance(data, Mapping) else None
            raise PrivacyError(f"schema_version: expected {_SCHEMA_VERSION}, got {version!r}")
        try:
            ledger = cls(
                epsilon_budget=data["epsilon_budget"],
                delta=data["delta"],
                primary=data["primary"],
                cross_check=data.get("cross_check"),
            )
            stored = [LedgerEntry.from_dict(item) for item in data["entries"]]
            totals = data["totals"]
        except KeyError as exc:
            raise PrivacyError(f"{exc.args[0]}: missing from the saved ledger") from exc
        for name, expected in (("epsilon_budget", epsilon_budget), ("delta", delta)):
            if expected is not None and float(data[name]) != float(expected):
                raise LedgerIntegrityError(
                    source, name, f"the file says {data[name]!r}, the configuration {expected!r}"
                )
        settings = data.get("primary_settings")
        if settings is not None:
            # Resume with the settings the ledger was written with, so epsilon is unchanged.
            if not isinstance(settings, Mapping):
                raise PrivacyError(f"primary_settings: must be a mapping, got {settings!r}")
            try:
                ledger._primary = type(ledger._primary)(**settings)
            except TypeError as exc:
                raise PrivacyError(f"primary_settings: not valid for {ledger.primary!r}: {exc}") from exc
        for index, entry in enumerate(stored):
            replayed = ledger._append(
                entry.events,
                round_number=entry.round_number,
                label=entry.label,
                clip_norm=entry.clip_norm,
                participants=entry.participants,
                recorded_at=entry.recorded_at,
            )
            _check_entry(source, index, entry, replayed)
        ledger._entries = stored
        _check_totals(source, totals, ledger)
        return ledger

    def save(self, path: str | os.PathLike[str], *, key: bytes | None = None) -> Path:
        """Write the ledger as JSON atomically (temporary file, fsync, ``os.replace``).

        Parameters
        ----------
        path : str or os.PathLike
            Where to write.
        key : bytes or None
            Coordinator secret (:func:`load_or_create_ledger_key`). When given,
            an HMAC-SHA256 of the canonical JSON is stored under ``"mac"``.

        Returns
        -------
        pathlib.Path
            The path written.
        """
        document = self.to_signed_dict(key=key) if key is not None else self.to_dict()
        return write_json_atomic(path, document)

    def to_signed_dict(self, *, key: bytes) -> dict[str, Any]:
        """:meth:`to_dict` plus its HMAC-SHA256 under ``key`` (``"mac"``): what :meth:`save`
        writes, for a store other than a file (e.g. a database row)."""
        document = self.to_dict()
        document["mac"] = {"algorithm": _MAC_ALGORITHM, "value": ledger_mac(document, key=key)}
        return document

    @classmethod
    def from_signed_dict(
        cls,
        data: Any,
        *,
        key: bytes,
        source: str = "ledger",
        epsilon_budget: float | None = None,
        delta: float | None = None,
    ) -> PrivacyLedger:
        """Verify the MAC of :meth:`to_signed_dict` output, then rebuild with :meth:`from_dict`
        (every event replayed and checked).

        Raises
        ------
        LedgerIntegrityError
            If the MAC is missing or wrong, or the replay disagrees with what is stored.
        PrivacyError
            If the data is not a ledger of this schema version.
        """
        _verify_mac(source, data, key)
        return cls.from_dict(data, source=source, epsilon_budget=epsilon_budget, delta=delta)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        key: bytes | None = None,
        epsilon_budget: float | None = None,
        delta: float | None = None,
    ) -> PrivacyLedger:
        """Read a ledger written by :meth:`save`, verify it, and resume with what was spent.

        Parameters
        ----------
        path : str or os.PathLike
            The saved ledger.
        key : bytes or None
            Coordinator secret. When given, the file must carry a valid
            HMAC-SHA256 (:meth:`save` with the same key); a file without one,
            or with a wrong one, is refused.
        epsilon_budget, delta : float or None
            Expected budget and delta (see :meth:`from_dict`).

        Raises
        ------
        LedgerIntegrityError
            If the MAC is missing or wrong, or the file's events, parameters
            or stored epsilons disagree (see :meth:`from_dict`).
        PrivacyError
            If the file is missing, not JSON, or not a ledger.
        """
        source = Path(path)
        try:
            data = json.loads(source.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise PrivacyError(f"path: no privacy ledger at {source}") from exc
        except json.JSONDecodeError as exc:
            raise PrivacyError(f"path: {source} is not valid JSON ({exc})") from exc
        if key is not None:
            return cls.from_signed_dict(data, key=key, source=str(source), epsilon_budget=epsilon_budget, delta=delta)
        if isinstance(data, dict):
            data.pop("mac", None)
        return cls.from_dict(data, source=str(source), epsilon_budget=epsilon_budget, delta=delta)


# ------------------------------------------------------------------ integrity
class LedgerIntegrityError(StateIntegrityError):
    """A saved ledger disagrees with itself, its MAC or the expected parameters.

    Attributes
    ----------
    source : str
        The file (or ``"ledger"`` for an in-memory dict).
    field : str
        What disagrees, e.g. ``"mac"``, ``"entries[3].epsilon_cumulative"``.
    """

    def __init__(self, source: str, field: str, message: str) -> None:
        self.source = source
        self.field = field
        super().__init__(f"{source}: {field}: {message}; refusing to resume from it")


_MAC_ALGORITHM = "hmac-sha256"
_KEY_BYTES = 32
_MIN_KEY_BYTES = 16
_RELATIVE_TOLERANCE = 1e-9


def _require_key(key: object) -> bytes:
    if not isinstance(key, (bytes, bytearray)) or len(key) < _MIN_KEY_BYTES:
        raise PrivacyConfigError(
            "key", f"must be at least {_MIN_KEY_BYTES} bytes (see load_or_create_ledger_key)"
        )
    return bytes(key)


def canonical_json(document: Mapping[str, Any]) -> bytes:
    """The bytes the MAC covers: :func:`~oneliac_flwr.privacy.integrity.canonical_json`, ``"mac"`` excluded."""
    return integrity_canonical_json({name: value for name, value in document.items() if name != "mac"})


def ledger_mac(document: Mapping[str, Any], *, key: bytes) -> str:
    """Hex HMAC-SHA256 of :func:`canonical_json` of ``document`` under ``key``."""
    return hmac.new(_require_key(key), canonical_json(document), hashlib.sha256).hexdigest()


def _verify_mac(source: str, data: Any, key: bytes) -> None:
    expected = ledger_mac(data if isinstance(data, Mapping) else {}, key=key)
    mac = data.get("mac") if isinstance(data, Mapping) else None
    if not isinstance(mac, Mapping) or "value" not in mac:
        raise LedgerIntegrityError(source, "mac", "missing, but a ledger key was given")
    if mac.get("algorithm") != _MAC_ALGORITHM:
        raise LedgerIntegrityError(
            source, "mac.algorithm", f"expected {_MAC_ALGORITHM!r}, got {mac.get('algorithm')!r}"
        )
    if not isinstance(mac["value"], str) or not hmac.compare_digest(mac["value"], expected):
        raise LedgerIntegrityError(
            source, "mac", "does not match the contents under this key (edited, or another key)"
        )


def _same(stored: float | None, replayed: float | None) -> bool:
    if stored is None or replayed is None:
        return stored is replayed
    if math.isinf(stored) or math.isinf(replayed):
        return stored == replayed
    return math.isclose(stored, replayed, rel_tol=_RELATIVE_TOLERANCE, abs_tol=1e-12)


def _check_entry(source: str, index: int, stored: LedgerEntry, replayed: LedgerEntry) -> None:
    for name in ("epsilon_round", "epsilon_cumulative", "epsilon_cumulative_cross_check", "noise_multiplier"):
        saved, recomputed = getattr(stored, name), getattr(replayed, name)
        if not _same(saved, recomputed):
            raise LedgerIntegrityError(
                source,
                f"entries[{index}].{name}",
                f"stored {saved!r} but its events recompute to {recomputed!r}",
            )
    if stored.mechanism != replayed.mechanism:
        raise LedgerIntegrityError(
            source,
            f"entries[{index}].mechanism",
            f"stored {stored.mechanism!r}, events say {replayed.mechanism!r}",
        )


def _check_totals(source: str, totals: Any, ledger: PrivacyLedger) -> None:
    if not isinstance(totals, Mapping):
        raise LedgerIntegrityError(source, "totals", f"must be a mapping, got {totals!r}")
    recomputed = ledger.to_dict()["totals"]
    for name in ("entries", "releases"):
        if totals.get(name) != recomputed[name]:
            raise LedgerIntegrityError(
                source, f"totals.{name}", f"stored {totals.get(name)!r} but the file has {recomputed[name]}"
            )
    for name in ("epsilon_spent", "epsilon_cross_check"):
        saved = _float_from_json(f"totals.{name}", totals.get(name))
        value = _float_from_json(f"totals.{name}", recomputed[name])
        if not _same(saved, value):
            raise LedgerIntegrityError(
                source, f"totals.{name}", f"stored {saved!r} but the events recompute to {value!r}"
            )


def load_or_create_ledger_key(
    state_dir: str | os.PathLike[str], *, filename: str = "ledger.key"
) -> bytes:
    """The coordinator's ledger secret: read it, or create it once.

    A new key is 32 bytes from :func:`secrets.token_bytes`, written to a
    temporary file created with mode 0600, fsynced, then hard-linked into
    place (atomic, never overwrites: if another process created the key
    first, that key is returned).

    Parameters
    ----------
    state_dir : str or os.PathLike
        Coordinator state directory (created, mode 0700, if missing).
    filename : str
        Key file name inside ``state_dir``.

    Returns
    -------
    bytes
        The 32-byte key.

    Raises
    ------
    LedgerIntegrityError
        If an existing key file is readable by group or others, or is not 32 bytes.
    """
    return load_or_create_key(state_dir, filename=filename)
