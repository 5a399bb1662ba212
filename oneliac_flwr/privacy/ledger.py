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

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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

__all__ = ["LedgerEntry", "PrivacyLedger"]

_SCHEMA_VERSION = 1


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
    values = {noise_multiplier_of(event) for event in events}
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
            clip_norm=clip,
            participants=count,
            epsilon_round=self._round_epsilon(round_number, recorded),
            epsilon_cumulative=self.get_current_epsilon(),
            epsilon_cumulative_cross_check=self.cross_check_epsilon(),
            recorded_at=datetime.now(UTC).isoformat(timespec="seconds"),
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
        """JSON-ready state: settings and entries (events included)."""
        return {
            "schema_version": _SCHEMA_VERSION,
            "epsilon_budget": self._epsilon_budget,
            "delta": self._delta,
            "primary": self._primary.name,
            "primary_settings": self._primary.settings(),
            "cross_check": self.cross_check,
            "entries": [entry.to_dict() for entry in self._entries],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PrivacyLedger:
        """Rebuild a ledger from :meth:`to_dict` output, replaying every event.

        Raises
        ------
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
            entries = [LedgerEntry.from_dict(item) for item in data["entries"]]
        except KeyError as exc:
            raise PrivacyError(f"{exc.args[0]}: missing from the saved ledger") from exc
        settings = data.get("primary_settings")
        if settings is not None:
            # Resume with the settings the ledger was written with, so epsilon is unchanged.
            if not isinstance(settings, Mapping):
                raise PrivacyError(f"primary_settings: must be a mapping, got {settings!r}")
            try:
                ledger._primary = type(ledger._primary)(**settings)
            except TypeError as exc:
                raise PrivacyError(f"primary_settings: not valid for {ledger.primary!r}: {exc}") from exc
        for entry in entries:
            for event in entry.events:
                ledger._primary.compose(event)
                if ledger._cross_check is not None and ledger._cross_check_valid:
                    if ledger._cross_check.supports(event):
                        ledger._cross_check.compose(event)
                    else:
                        ledger._cross_check_valid = False
        ledger._entries = entries
        return ledger

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the ledger as JSON atomically (temporary file, fsync, ``os.replace``).

        Returns
        -------
        pathlib.Path
            The path written.
        """
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps(self.to_dict(), indent=2, allow_nan=False)
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(payload)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, target)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PrivacyLedger:
        """Read a ledger written by :meth:`save` and resume with what was spent.

        Raises
        ------
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
        return cls.from_dict(data)
