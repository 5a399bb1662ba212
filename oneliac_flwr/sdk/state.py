"""A hospital's state directory: identity, encryption key, policy and privacy state.

Everything in it is owner-only: the directory is 0700 and every file 0600. A directory
that others can read is refused (fail closed), never silently fixed.

Layout::

    identity.ed25519       Ed25519 identity key (signs secure-sum key announcements)
    encryption.x25519      X25519 key whose public half is registered as encryption_key
    policy.json            the hospital's own privacy policy (unit, epsilon cap, delta)
    coordinator.json       the coordinator's sealing-key fingerprint, pinned on first use
    submissions/           the exact bodies sent per round (a retry resends the same bytes)
    secure-sum.json        the secure-sum client's state between rounds (its mask keys: secret)
    secure-round.json      the open secure-sum round this hospital uploaded to (round, base model,
                           the exact masked upload), until the round closes: a restarted process
                           resumes it (``FederatedLearner.resume``)
    privacy/               the tagged privacy state: ledger of releases and DP-SGD history
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from oneliac_flwr.atomic_files import write_json_atomic
from oneliac_flwr.errors import ConfigError, ProtocolViolation
from oneliac_flwr.privacy.hospital import LOCK_FILE, HospitalPolicy, HospitalPrivacyState, locked_state
from oneliac_flwr.secure import SecureSumClient, fingerprint
from oneliac_flwr.secure.client import Mode
from oneliac_flwr.secure.identity import IDENTITY_FILE, Identity
from oneliac_flwr.secure.keys import load_private_key, private_bytes, public_bytes

__all__ = ["StateDirectory"]

ENCRYPTION_FILE = "encryption.x25519"
POLICY_FILE = "policy.json"
COORDINATOR_FILE = "coordinator.json"
PRIVACY_DIR = "privacy"
SUBMISSIONS_DIR = "submissions"
SECURE_SUM_FILE = "secure-sum.json"
PENDING_ROUND_FILE = "secure-round.json"


def _owner_only_dir(path: Path, field: str) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(field, f"cannot create {path}: {exc}") from None
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(field, f"{path} is mode {mode:04o}; a hospital's state must be owner-only (chmod 700 {path})")
    return path


def _create_secret_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


class StateDirectory:
    """The hospital's state directory (created owner-only if missing).

    Parameters
    ----------
    path : path-like
        The directory.

    Raises
    ------
    ConfigError
        If it cannot be created, or it (or a key file in it) is readable by others.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = _owner_only_dir(Path(path).expanduser(), "state_dir")

    # ------------------------------------------------------------------ keys
    def identity(self) -> Identity:
        """The Ed25519 identity (created on first use, 0600)."""
        identity = Identity.load_or_create(self.path / IDENTITY_FILE)
        self._check_file(self.path / IDENTITY_FILE)
        return identity

    def encryption_key(self) -> X25519PrivateKey:
        """The long-lived X25519 key registered as ``encryption_key`` (created on first use, 0600)."""
        file = self.path / ENCRYPTION_FILE
        if not file.exists():
            try:
                _create_secret_file(file, private_bytes(X25519PrivateKey.generate()))
            except FileExistsError:  # created concurrently
                pass
        self._check_file(file)
        return load_private_key(file.read_bytes(), field=str(file))

    def registration(self) -> dict[str, str]:
        """What the operator registers: the public keys (``0x`` + hex) and their fingerprints."""
        identity = self.identity()
        encryption = public_bytes(self.encryption_key())
        return {
            "encryption_key": "0x" + encryption.hex(),
            "encryption_key_fingerprint": fingerprint(encryption),
            "identity_key": "0x" + identity.public_bytes.hex(),
            "identity_key_fingerprint": identity.fingerprint,
        }

    # ------------------------------------------------------------------ policy and privacy
    def policy(self, default: HospitalPolicy) -> HospitalPolicy:
        """The saved policy, or ``default`` saved as the hospital's policy on first use.

        Raises
        ------
        ConfigError
            If the saved policy file is malformed.
        """
        saved = self.saved_policy()
        if saved is None:
            self.save_policy(default)
            return default
        return saved

    def saved_policy(self) -> HospitalPolicy | None:
        """The hospital's saved policy, or ``None`` before its first use.

        Raises
        ------
        ConfigError
            If the saved policy file is malformed or not owner-only.
        """
        file = self.path / POLICY_FILE
        if not file.exists():
            return None
        self._check_file(file)
        try:
            return HospitalPolicy(**json.loads(file.read_text()))
        except (ValueError, TypeError) as exc:
            raise ConfigError("state_dir", f"{file}: not a hospital policy ({exc})") from None

    def save_policy(self, policy: HospitalPolicy) -> None:
        """Write the hospital's policy (0600)."""
        write_json_atomic(self.path / POLICY_FILE, asdict(policy), mode=0o600, sort_keys=True)

    @contextmanager
    def privacy(self, *, organization: str, policy: HospitalPolicy) -> Iterator[HospitalPrivacyState]:
        """The privacy state (ledger, DP-SGD history), locked until the block ends."""
        folder = _owner_only_dir(self.path / PRIVACY_DIR, "state_dir")
        lock = folder / LOCK_FILE
        if not lock.exists():
            try:
                _create_secret_file(lock, b"")
            except FileExistsError:
                pass
        with locked_state(folder, organization=organization, policy=policy) as state:
            yield state

    # ------------------------------------------------------------------ coordinator pin
    def pin_coordinator_key(self, base_url: str, public_key: bytes) -> None:
        """Pin the coordinator's sealing key on first use; a changed key is refused loudly.

        Raises
        ------
        ProtocolViolation
            If ``base_url`` presented another key before.
        """
        file = self.path / COORDINATOR_FILE
        pins: dict[str, Any] = json.loads(file.read_text()) if file.exists() else {}
        seen = fingerprint(public_key)
        pinned = pins.get(base_url)
        if pinned is None:
            pins[base_url] = seen
            write_json_atomic(file, pins, mode=0o600, sort_keys=True)
        elif pinned != seen:
            raise ProtocolViolation(
                f"coordinator_key_check: {base_url} presents sealing key {seen}, pinned {pinned} in {file}; "
                "if the operator rotated it, delete that entry after checking the new fingerprint with them"
            )

    # ------------------------------------------------------------------ secure sum
    def secure_client(self, *, organization: str, node_id: int, run_id: int, federation: str = "default",
                      mode: Mode = "semi-honest") -> SecureSumClient:  # fmt: skip
        """This hospital's secure-sum client for ``run_id``: the one saved after its last
        step, or a new one (first round, another federation, or a replaced identity).

        Parameters
        ----------
        organization : str
            ``org_...``.
        node_id, run_id : int
            From the coordinator (``GET /secure-sum/node``).
        federation : str
            The federation name the key statements are bound to.
        mode : {"semi-honest", "malicious"}
            The federation's ``secure_sum.mode``. A ``malicious`` client reveals nothing in
            stage U without the consistency check; a saved client is raised to it, and a
            saved ``malicious`` client is never lowered (fails closed).

        Raises
        ------
        ConfigError
            If the saved state is not owner-only.
        """
        from oneliac_flwr.api.records import record_from_json

        identity = self.identity()
        file = self.path / SECURE_SUM_FILE
        if file.exists():
            self._check_file(file)
            try:
                saved = SecureSumClient.from_state_dict(record_from_json(json.loads(file.read_text()), field="secure_sum"),
                                                        identity=identity)  # fmt: skip
            except (ValueError, ProtocolViolation):  # unreadable, or made with another identity: start afresh
                saved = None
            if saved is not None:
                state = saved.state_dict()
                if (state["node_id"], state["run_id"], state["organization"]) == (node_id, run_id, organization):
                    if mode == "malicious" and state["mode"] != "malicious":
                        return SecureSumClient.from_state_dict({**state, "mode": mode}, identity=identity)
                    return saved
        return SecureSumClient(node_id=node_id, run_id=run_id, identity=identity, organization=organization,
                               federation=federation, mode=mode)  # fmt: skip

    def save_secure_client(self, client: SecureSumClient) -> None:
        """Keep the client's state (mask keys, round state) for the next step or round (0600)."""
        from oneliac_flwr.api.records import record_to_json

        write_json_atomic(self.path / SECURE_SUM_FILE, record_to_json(client.state_dict(), field="secure_sum"), mode=0o600)

    def pending_round(self) -> dict[str, Any] | None:
        """The open secure-sum round this hospital uploaded its masked vector to, if any.

        Returns
        -------
        dict or None
            ``organization``, ``round``, ``model_version``, ``run_id``, ``node_id`` and
            ``upload`` (the exact body of the masked upload).

        Raises
        ------
        ConfigError
            If the file is not owner-only or not such a record.
        """
        file = self.path / PENDING_ROUND_FILE
        if not file.exists():
            return None
        self._check_file(file)
        try:
            saved = json.loads(file.read_text())
            keys = {"organization", "round", "model_version", "run_id", "node_id", "upload"}
            if not isinstance(saved, dict) or not keys <= set(saved) or saved["upload"].get("round") != saved["round"]:
                raise ValueError(f"expected the keys {sorted(keys)}")
        except (ValueError, TypeError, AttributeError) as exc:
            raise ConfigError("state_dir", f"{file}: not a pending secure-sum round ({exc})") from None
        return saved

    def save_pending_round(self, *, organization: str, run_id: int, node_id: int, upload: Mapping[str, Any]) -> None:
        """Keep the masked upload of the open round before it is sent (0600, atomic).

        Raises
        ------
        ProtocolViolation
            If another masked upload is already kept for the same round (never two vectors).
        """
        pending = self.pending_round()
        record = {"organization": organization, "round": int(upload["round"]), "model_version": upload["model_version"],
                  "run_id": int(run_id), "node_id": int(node_id), "upload": dict(upload)}  # fmt: skip
        if pending is not None and pending["round"] == record["round"] and pending["upload"] != record["upload"]:
            raise ProtocolViolation(f"round_check: a different masked upload for round {record['round']} is already "
                                    f"kept in {self.path / PENDING_ROUND_FILE}; resume that round instead")  # fmt: skip
        write_json_atomic(self.path / PENDING_ROUND_FILE, record, mode=0o600)

    def clear_pending_round(self, round: int) -> None:
        """Forget the pending round once it closed (only if it is ``round``)."""
        pending = self.pending_round()
        if pending is not None and pending["round"] == int(round):
            (self.path / PENDING_ROUND_FILE).unlink(missing_ok=True)

    # ------------------------------------------------------------------ submissions
    def submission(self, round: int, digest: str) -> dict[str, Any] | None:
        """The body already prepared for ``round`` from the update with ``digest``, if any."""
        file = self.path / SUBMISSIONS_DIR / f"round-{int(round)}.json"
        if not file.exists():
            return None
        saved = json.loads(file.read_text())
        return saved["body"] if saved.get("digest") == digest else None

    def save_submission(self, round: int, digest: str, body: dict[str, Any]) -> None:
        """Keep the exact body of ``round`` before it is sent (0600)."""
        _owner_only_dir(self.path / SUBMISSIONS_DIR, "state_dir")
        write_json_atomic(self.path / SUBMISSIONS_DIR / f"round-{int(round)}.json", {"digest": digest, "body": body},
                          mode=0o600)  # fmt: skip

    def _check_file(self, file: Path) -> None:
        mode = stat.S_IMODE(file.stat().st_mode)
        if mode & 0o077:
            raise ConfigError("state_dir", f"{file} is mode {mode:04o}; key files must be 0600 (chmod 600 {file})")
