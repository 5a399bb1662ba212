"""A hospital's own privacy: its policy, and the privacy state it keeps on its own disk.

For local and distributed DP the coordinator is the adversary, so a hospital never
takes its privacy parameters on the coordinator's word. It holds a
:class:`HospitalPolicy` (unit, epsilon cap, delta, minimum noise) from its own
configuration, checks every instruction against it (:meth:`HospitalPolicy.refusal`),
and records what it releases in a :class:`HospitalPrivacyState` on its own disk
*before* the release leaves: its DP-SGD history (sample unit) and a ledger of its
update releases (organization and release units).

The state file is tagged with an HMAC keyed by a secret in the same directory
(:mod:`oneliac_flwr.privacy.integrity`). A tampered file, a file written under another
policy, or a file that disappeared from a directory already in use is refused; the
hospital's operator resets explicitly by deleting both the state file and its key.
"""

from __future__ import annotations

import fcntl
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from oneliac_flwr.privacy._validation import PrivacyConfigError
from oneliac_flwr.privacy.dpsgd import HistoryEntry, flatten_history, sample_level_epsilon, unflatten_history
from oneliac_flwr.privacy.events import PrivacyEvent
from oneliac_flwr.privacy.integrity import KEY_FILE, StateIntegrityError, load_or_create_key, read_tagged, write_tagged
from oneliac_flwr.privacy.ledger import PrivacyLedger

__all__ = ["STATE_FILE", "HospitalPolicy", "HospitalPrivacyState", "PrivacyUnit", "locked_state"]

PrivacyUnit = Literal["none", "sample", "organization", "release"]
STATE_FILE = "privacy_state.json"
_UNITS: tuple[str, ...] = ("none", "sample", "organization", "release")
_SCHEMA = 1


@dataclass(frozen=True, kw_only=True)
class HospitalPolicy:
    """What one hospital allows, whatever the coordinator asks.

    Parameters
    ----------
    unit : {"none", "sample", "organization", "release"}
        The unit of privacy the hospital requires. A coordinator asking for another
        unit is refused (``"none"`` accepts only runs without DP).
    epsilon : float
        Total epsilon the hospital allows to be spent on its data, over every run.
    delta : float
        The delta it accepts (a coordinator asking for a larger one is refused).
    min_noise_multiplier : float
        Smallest noise multiplier it accepts for an update-level mechanism (0: none).
    require_distributed_noise : bool
        ``organization`` unit only: refuse central noise (added by the coordinator, which
        the hospital cannot verify) and accept only noise shares it adds itself.
    """

    unit: PrivacyUnit
    epsilon: float
    delta: float
    min_noise_multiplier: float = 0.0
    require_distributed_noise: bool = False

    def __post_init__(self) -> None:
        if self.unit not in _UNITS:
            raise PrivacyConfigError("privacy-unit", f"expected one of {list(_UNITS)}, got {self.unit!r}")
        if not (isinstance(self.epsilon, (int, float)) and math.isfinite(self.epsilon) and self.epsilon > 0):
            raise PrivacyConfigError("privacy-epsilon", f"must be a number > 0, got {self.epsilon!r}")
        if not (isinstance(self.delta, (int, float)) and 0 < self.delta < 1):
            raise PrivacyConfigError("privacy-delta", f"must be in (0, 1), got {self.delta!r}")
        if not (isinstance(self.min_noise_multiplier, (int, float)) and self.min_noise_multiplier >= 0):
            raise PrivacyConfigError(
                "privacy-min-noise-multiplier", f"must be a number >= 0, got {self.min_noise_multiplier!r}"
            )

    def refusal(
        self, *, unit: str, delta: float | None, noise_multiplier: float | None, distributed: bool = False
    ) -> str | None:
        """Why the coordinator's instruction breaks this policy (``None``: it does not).

        Parameters
        ----------
        unit : str
            The unit the coordinator asks for (``"none"`` without DP).
        delta : float or None
            The delta it asks for.
        noise_multiplier : float or None
            The noise multiplier it announces for an update-level mechanism.
        distributed : bool
            Whether the hospital adds the noise itself (distributed noise shares).
        """
        if unit != self.unit:
            return f"the coordinator asks for privacy unit {unit!r}; this hospital's policy requires {self.unit!r}"
        if unit == "none":
            return None
        if delta is None or not delta <= self.delta:
            return f"the coordinator asks for delta={delta}; this hospital allows at most {self.delta}"
        if unit == "organization" and self.require_distributed_noise and not distributed:
            return "the coordinator asks for central noise; this hospital accepts only noise shares it adds itself"
        if noise_multiplier is not None and noise_multiplier < self.min_noise_multiplier:
            return (
                f"the coordinator announces noise multiplier {noise_multiplier:.4g}; this hospital requires "
                f"at least {self.min_noise_multiplier:.4g}"
            )
        return None


def _steps_by_setting(history: Sequence[HistoryEntry]) -> dict[tuple[float, float], int]:
    """Steps per (noise multiplier, sample rate): Opacus merges consecutive equal entries."""
    totals: dict[tuple[float, float], int] = {}
    for z, q, steps in history:
        totals[(z, q)] = totals.get((z, q), 0) + int(steps)
    return totals


class HospitalPrivacyState:
    """A hospital's privacy history on its own disk (DP-SGD steps and update releases).

    Parameters
    ----------
    directory : path
        The hospital's state directory (owner-only). Created if it does not exist.
    organization : str
        The hospital's organization id; a state file of another organization is refused.
    policy : HospitalPolicy
        The policy the state is kept under; a file written under another epsilon,
        delta or unit is refused.

    Raises
    ------
    StateIntegrityError
        If the state file fails its integrity check, belongs to another organization or
        policy, or is missing from a directory that already holds a key (it was deleted:
        reset explicitly by deleting the key too).
    """

    def __init__(self, directory: str | os.PathLike[str], *, organization: str, policy: HospitalPolicy) -> None:
        self.directory = Path(directory)
        self.path = self.directory / STATE_FILE
        self.organization = organization
        self.policy = policy
        had_key = (self.directory / KEY_FILE).is_file()
        self._key = load_or_create_key(self.directory)
        if not self.path.exists():
            if had_key:
                raise StateIntegrityError(
                    f"{self.path}: missing, but {self.directory / KEY_FILE} shows this directory was in use; "
                    "the hospital's privacy history cannot be reset silently. To reset it explicitly, delete "
                    f"{self.directory / KEY_FILE} as well"
                )
            self._history: list[HistoryEntry] = []
            self.ledger = PrivacyLedger(epsilon_budget=policy.epsilon, delta=policy.delta)
            self.save()
            return
        data = read_tagged(self.path, key=self._key)
        # the budget itself (unit, cap, delta) binds the history; noise preferences may change
        budget = {k: asdict(policy)[k] for k in ("unit", "epsilon", "delta")}
        saved = data.get("policy") if isinstance(data.get("policy"), dict) else {}
        expected = {"schema": _SCHEMA, "organization": organization, "policy": budget}
        found = {**data, "policy": {k: saved.get(k) for k in budget}}
        for name, value in expected.items():
            if found.get(name) != value:
                raise StateIntegrityError(
                    f"{self.path}: {name} is {found.get(name)!r}, expected {value!r}; a changed budget does not "
                    f"reset the history. To reset it explicitly, delete {self.path} and {self.directory / KEY_FILE}"
                )
        try:
            self._history = unflatten_history(list(data["dpsgd_history"]))
            self.ledger = PrivacyLedger.from_dict(data["ledger"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StateIntegrityError(f"{self.path}: malformed privacy state ({exc})") from exc

    @property
    def dpsgd_history(self) -> list[HistoryEntry]:
        """Every DP-SGD accountant entry ``(noise_multiplier, sample_rate, steps)`` so far."""
        return list(self._history)

    def record_dpsgd(self, history: Sequence[HistoryEntry]) -> None:
        """Replace the DP-SGD history (it only grows) and save it."""
        entries = list(history)
        if any(_steps_by_setting(entries).get(k, 0) < v for k, v in _steps_by_setting(self._history).items()):
            raise StateIntegrityError("dpsgd_history: a new history must contain every step of the saved one")
        self._history = entries
        self.save()

    def record_release(self, events: PrivacyEvent | Iterable[PrivacyEvent], *, round_number: int, label: str) -> None:
        """Record an update release in the hospital's ledger and save it (before it is sent)."""
        self.ledger.record(events, round_number=round_number, label=label)
        self.save()

    def epsilon(self) -> float:
        """Epsilon spent on this hospital's data so far, under its unit."""
        if self.policy.unit == "sample":
            return sample_level_epsilon(self._history, self.policy.delta) if self._history else 0.0
        return self.ledger.get_current_epsilon()

    def save(self) -> None:
        """Write the state atomically with its integrity tag."""
        payload: dict[str, Any] = {
            "schema": _SCHEMA,
            "organization": self.organization,
            "policy": asdict(self.policy),
            "dpsgd_history": flatten_history(self._history),
            "ledger": self.ledger.to_dict(),
        }
        write_tagged(self.path, payload, key=self._key)


LOCK_FILE = ".lock"


@contextmanager
def locked_state(
    directory: str | os.PathLike[str], *, organization: str, policy: HospitalPolicy
) -> Iterator[HospitalPrivacyState]:
    """The hospital's state, read and held under an exclusive lock until the block ends.

    Two requests of one hospital (two runs, two ClientApp processes) never check the
    budget against a stale copy: the second waits, then reads what the first recorded.

    Raises
    ------
    StateIntegrityError
        As :class:`HospitalPrivacyState`.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(folder / LOCK_FILE, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield HospitalPrivacyState(folder, organization=organization, policy=policy)
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
