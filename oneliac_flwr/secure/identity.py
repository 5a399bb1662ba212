"""Long-lived hospital identities (Ed25519), signed key announcements, pins and TOFU.

Each hospital holds one Ed25519 identity key on its own disk. Every public key it
announces (envelope key ``c_pk``, mask key ``s_pk``) is signed over a statement that
binds protocol version, federation, organization, run, key kind and the single round
the key may be used in (``docs/secure-sum.md`` section 3). Peers check signatures
against the hospital's pinned fingerprint (a file of ``organization-id fingerprint``
lines), or, without pins, against the fingerprint recorded on first use (TOFU).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Literal, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from oneliac_flwr.errors import ConfigError, ProtocolViolation

from ._fields import check_u64

__all__ = [
    "ANY_ROUND",
    "IDENTITY_BYTES",
    "IDENTITY_FILE",
    "SIGNATURE_BYTES",
    "Identity",
    "KeyKind",
    "PinnedTrust",
    "TofuTrust",
    "Trust",
    "identity_fingerprint",
    "key_statement",
    "load_pins",
    "survivors_statement",
    "verify_key_signature",
    "verify_survivors_signature",
]

SIGNATURE_BYTES = 64
IDENTITY_BYTES = 32
#: Round field of an envelope-key statement: the key serves every round of one run.
ANY_ROUND = 2**64 - 1
#: File name of the identity key inside an identity directory.
IDENTITY_FILE = "identity.ed25519"
_STATEMENT = b"oneliac-secure-sum/v2|key-announcement|"
_SURVIVORS = b"oneliac-secure-sum/v2|survivors|"
KeyKind = Literal["envelope", "mask"]
_KINDS: frozenset[str] = frozenset({"envelope", "mask"})
_MAX_NAME = 256


def _name(value: object, what: str) -> bytes:
    if not isinstance(value, str) or not value or len(value) > _MAX_NAME or any(c.isspace() for c in value):
        raise ProtocolViolation(f"{what}: expected a non-empty name without white space (<= {_MAX_NAME} chars)")
    return value.encode()


def key_statement(
    *, federation: str, organization: str, run_id: int, kind: KeyKind, round: int, public_key: bytes
) -> bytes:
    """The byte string an identity signs to announce ``public_key``.

    ``DOMAIN | len-prefixed federation | len-prefixed organization | kind | I64(run) I64(round) | key``.
    ``round`` is the single round a mask key may be used in, or :data:`ANY_ROUND` for
    the envelope key (it serves the whole run).
    """
    if kind not in _KINDS:
        raise ProtocolViolation(f"kind: expected 'envelope' or 'mask', got {kind!r}")
    fed, org = _name(federation, "federation"), _name(organization, "organization")
    ids = struct.pack(">2Q", check_u64(run_id, "run_id"), check_u64(round, "round"))
    if not isinstance(public_key, bytes) or len(public_key) != 32:
        raise ProtocolViolation("public_key: expected 32 bytes")
    return (
        _STATEMENT + struct.pack(">H", len(fed)) + fed + struct.pack(">H", len(org)) + org
        + kind.encode() + b"|" + ids + public_key
    )  # fmt: skip


def survivors_statement(
    *, federation: str, run_id: int, round: int, counted: tuple[int, ...], dropped: tuple[int, ...]
) -> bytes:
    """What a survivor signs in malicious mode's consistency check: the round's ``C`` and ``D``.

    ``DOMAIN | len-prefixed federation | I64(run) I64(round) | I32(|C|) I64(C...) | I32(|D|) I64(D...)``
    with ``C`` and ``D`` sorted.
    """
    fed = _name(federation, "federation")
    c, d = sorted(counted), sorted(dropped)
    ids = [check_u64(v, "node") for v in (*c, *d)]
    return (
        _SURVIVORS + struct.pack(">H", len(fed)) + fed
        + struct.pack(">2Q", check_u64(run_id, "run_id"), check_u64(round, "round"))
        + struct.pack(f">I{len(c)}Q", len(c), *ids[: len(c)]) + struct.pack(f">I{len(d)}Q", len(d), *ids[len(c) :])
    )  # fmt: skip


def verify_survivors_signature(signature: bytes, *, identity_pk: bytes, statement: bytes) -> bool:
    """Whether ``signature`` by ``identity_pk`` over a :func:`survivors_statement` verifies."""
    try:
        Ed25519PublicKey.from_public_bytes(identity_pk).verify(signature, statement)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def identity_fingerprint(identity_pk: bytes) -> str:
    """SHA-256 hex (64 lowercase digits) of a raw 32-byte Ed25519 public key."""
    if not isinstance(identity_pk, bytes) or len(identity_pk) != IDENTITY_BYTES:
        raise ProtocolViolation(f"identity key: expected {IDENTITY_BYTES} bytes")
    return hashlib.sha256(identity_pk).hexdigest()


def verify_key_signature(
    signature: bytes,
    *,
    identity_pk: bytes,
    federation: str,
    organization: str,
    run_id: int,
    kind: KeyKind,
    round: int,
    public_key: bytes,
) -> None:
    """Check that ``identity_pk`` signed ``public_key`` for exactly this binding.

    Raises
    ------
    ProtocolViolation
        If the signature does not verify (forged, substituted key, other round, run,
        organization or federation).
    """
    statement = key_statement(
        federation=federation, organization=organization, run_id=run_id, kind=kind, round=round, public_key=public_key
    )
    if not _verify_once(identity_pk, signature, statement):
        shown = "any round" if round == ANY_ROUND else f"round {round}"
        raise ProtocolViolation(
            f"signature_check: the {kind} key of organization {organization!r} is not signed by its identity "
            f"for {shown}"
        ) from None


#: How many successful key-announcement verifications a process remembers (newest kept).
VERIFIED_MEMO_SIZE = 16384
_verified: OrderedDict[tuple[bytes, bytes, bytes], None] = OrderedDict()
_verified_lock = threading.Lock()


def _verify_once(identity_pk: bytes, signature: bytes, statement: bytes) -> bool:
    """Ed25519 verification of ``signature`` on ``statement``, remembered when it succeeds.

    A verification is a pure function of its three byte strings, so the exact triple that
    verified once verifies again: the process keeps the triples (not digests) of recent
    successes and answers them without the curve arithmetic. A failure is never
    remembered; anything not byte strings is verified (and refused) as before. Where one
    process hosts many organizations (the simulation engine), one announcement checked by
    all its neighbours costs one verification per process.
    """
    key = (identity_pk, signature, statement)
    plain = all(type(v) is bytes for v in key)
    if plain:
        with _verified_lock:
            if key in _verified:
                _verified.move_to_end(key)
                return True
    try:
        Ed25519PublicKey.from_public_bytes(identity_pk).verify(signature, statement)
    except (InvalidSignature, ValueError, TypeError):
        return False
    if plain:
        with _verified_lock:
            _verified[key] = None
            while len(_verified) > VERIFIED_MEMO_SIZE:
                _verified.popitem(last=False)
    return True


@lru_cache(maxsize=256)
def _private_key_from_raw(raw: bytes) -> Ed25519PrivateKey:
    """The key object of a raw identity file's content (a handler loads the same file per message)."""
    return Ed25519PrivateKey.from_private_bytes(raw)


class Identity:
    """A hospital's Ed25519 identity key.

    Parameters
    ----------
    private_key : Ed25519PrivateKey
        The key (use :meth:`generate`, :meth:`load` or :meth:`load_or_create`).
    """

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        if not isinstance(private_key, Ed25519PrivateKey):
            raise ConfigError("identity", f"expected an Ed25519 private key, got {type(private_key).__name__}")
        self._key = private_key

    @classmethod
    def generate(cls) -> Identity:
        """A fresh identity (OS randomness)."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Identity:
        """Load a raw 32-byte Ed25519 private key file (a directory means ``DIR/identity.ed25519``).

        Raises
        ------
        ConfigError
            If the file is missing or not 32 bytes.
        """
        file = _identity_file(path)
        try:
            raw = file.read_bytes()
        except OSError as exc:
            raise ConfigError("secure-identity", f"cannot read the identity key {file}: {exc}") from None
        if len(raw) != 32:
            raise ConfigError("secure-identity", f"{file}: expected a raw 32-byte Ed25519 key, got {len(raw)} bytes")
        return cls(_private_key_from_raw(raw))

    @classmethod
    def create(cls, path: str | os.PathLike[str]) -> Identity:
        """Create a new identity file (mode 0600); refuse to overwrite an existing one.

        Raises
        ------
        ConfigError
            If the file already exists or cannot be written.
        """
        file = _identity_file(path)
        identity = cls.generate()
        raw = identity._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        try:
            file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError("secure-identity", f"cannot create {file.parent}: {exc}") from None
        try:
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise ConfigError("secure-identity", f"{file} exists; refusing to replace an identity") from None
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
        return identity

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> Identity:
        """Load the identity at ``path``, creating it first if absent."""
        file = _identity_file(path)
        if file.exists():
            return cls.load(file)
        try:
            return cls.create(file)
        except ConfigError:  # created concurrently by another process of this node
            return cls.load(file)

    @property
    def public_bytes(self) -> bytes:
        """Raw 32-byte Ed25519 public key."""
        return self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def fingerprint(self) -> str:
        """SHA-256 hex of :attr:`public_bytes` (what peers pin)."""
        return identity_fingerprint(self.public_bytes)

    def sign_key(
        self, *, federation: str, organization: str, run_id: int, kind: KeyKind, round: int, public_key: bytes
    ) -> bytes:
        """Sign the announcement of ``public_key`` (see :func:`key_statement`)."""
        statement = key_statement(
            federation=federation, organization=organization, run_id=run_id, kind=kind, round=round,
            public_key=public_key,
        )  # fmt: skip
        return self._key.sign(statement)

    def sign(self, statement: bytes) -> bytes:
        """Sign a protocol statement (e.g. :func:`survivors_statement`)."""
        return self._key.sign(statement)


def _identity_file(path: str | os.PathLike[str]) -> Path:
    """A directory (existing, or a path without a file suffix) means ``DIR/identity.ed25519``."""
    p = Path(path)
    return p / IDENTITY_FILE if p.is_dir() or not p.suffix else p


class Trust(Protocol):
    """How a client decides whether an organization's identity key is the right one."""

    def check(self, *, federation: str, organization: str, fingerprint: str) -> None:
        """Raise :class:`~oneliac_flwr.errors.ProtocolViolation` unless the identity is trusted."""


def load_pins(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a pin file: one ``organization-id fingerprint`` line each; ``#`` starts a comment.

    Raises
    ------
    ConfigError
        If the file cannot be read, a line is malformed or an organization repeats.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("secure-pins", f"cannot read the pin file {path}: {exc}") from None
    pins: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        fp = parts[1].lower() if len(parts) == 2 else ""
        if len(fp) != 64 or any(c not in "0123456789abcdef" for c in fp):
            raise ConfigError("secure-pins", f"{path}:{number}: expected 'organization-id <64 hex digits>'")
        if parts[0] in pins:
            raise ConfigError("secure-pins", f"{path}:{number}: organization {parts[0]!r} is pinned twice")
        pins[parts[0]] = fp
    return pins


class PinnedTrust:
    """Trust exactly the pinned fingerprints; an unpinned organization is refused.

    Parameters
    ----------
    pins : mapping of str to str
        Organization id to fingerprint (64 hex digits), e.g. from :func:`load_pins`.
    """

    def __init__(self, pins: Mapping[str, str]) -> None:
        self._pins = {str(k): str(v).lower() for k, v in pins.items()}

    def check(self, *, federation: str, organization: str, fingerprint: str) -> None:
        """Refuse an unpinned organization or a fingerprint that differs from its pin."""
        pinned = self._pins.get(organization)
        if pinned is None:
            raise ProtocolViolation(f"pin_check: organization {organization!r} has no pin")
        if pinned != fingerprint:
            raise ProtocolViolation(
                f"pin_check: organization {organization!r} presents identity {fingerprint}, pinned {pinned}"
            )


class TofuTrust:
    """Trust on first use, recorded in a JSON file; a changed identity is refused loudly.

    Parameters
    ----------
    path : path-like
        File of ``{federation: {organization: fingerprint}}`` (created on first use).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)

    def _read(self) -> dict[str, dict[str, str]]:
        if not self._path.exists():
            return {}
        try:
            data = json.loads(self._path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError("secure-trust-store", f"cannot read {self._path}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError("secure-trust-store", f"{self._path}: expected a JSON object")
        return data

    def check(self, *, federation: str, organization: str, fingerprint: str) -> None:
        """Record a first-seen organization; refuse one whose identity changed."""
        self.check_many(federation=federation, identities=[(organization, fingerprint)])

    def check_many(self, *, federation: str, identities: Sequence[tuple[str, str]]) -> None:
        """:meth:`check` for many ``(organization, fingerprint)`` pairs: one read, at most one write.

        Nothing is recorded unless every pair passes.
        """
        data = self._read()
        known = data.setdefault(federation, {})
        new: dict[str, str] = {}
        for organization, fingerprint in identities:
            seen = known.get(organization, new.get(organization))
            if seen == fingerprint:
                continue
            if seen is not None:
                raise ProtocolViolation(
                    f"tofu_check: organization {organization!r} changed its identity from {seen} to {fingerprint}; "
                    f"refusing. If the change is legitimate, verify the new fingerprint out of band and remove "
                    f"its entry from {self._path}"
                )
            new[organization] = fingerprint
        if not new:
            return
        known.update(new)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_name(self._path.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self._path)

    def known(self) -> dict[str, dict[str, str]]:
        """The recorded fingerprints, per federation and organization."""
        return self._read()
