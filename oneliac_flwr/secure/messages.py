"""Wire messages of the secure-sum protocol (frozen dataclasses).

``to_record()`` returns a flat dict of ``int | float | str | bytes | bool`` and
homogeneous lists of them (a Flower ``ConfigRecord`` can hold it as is);
``from_record()`` validates it. Any malformed field (missing, wrong type, wrong length,
wrong ring) raises :class:`~oneliac_flwr.errors.ProtocolViolation` naming
``<message>.<field>``. The masked vector of :class:`MaskedInput` is not part of the
record: it travels as a numpy array (an ``ArrayRecord`` in the adapter).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from itertools import pairwise
from typing import Any, ClassVar

import numpy as np

from oneliac_flwr.errors import ConfigError, ProtocolViolation

from ._fields import (
    check_bytes,
    check_bytes_tuple,
    check_float,
    check_int,
    check_int_tuple,
    check_message_tag,
    check_same_length,
    check_u64,
    check_u64_tuple,
    require,
)
from .encoding import RingSpec, ring_dtype
from .envelope import NONCE_BYTES, TAG_BYTES
from .graph import SharingGraph, sharing_graph
from .identity import IDENTITY_BYTES, SIGNATURE_BYTES
from .keys import KEY_BYTES, check_public_key
from .sharing import SECRET_BYTES, SharePlaintext

__all__ = [
    "KEY_ENVELOPE_BYTES",
    "SELF_ENVELOPE_BYTES",
    "AdvertiseKeys",
    "ConsistencyRequest",
    "ConsistencyResponse",
    "MaskedInput",
    "RoundSetup",
    "UnmaskRequest",
    "UnmaskResponse",
]

#: Size of an envelope holding a self-mask share.
SELF_ENVELOPE_BYTES = NONCE_BYTES + SharePlaintext.SELF_BYTES + TAG_BYTES
#: Size of an envelope holding a key share.
KEY_ENVELOPE_BYTES = NONCE_BYTES + SharePlaintext.KEY_BYTES + TAG_BYTES
_PREFIX = "secure_sum/v2/"


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


def _read(cls: Any, record: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    check_message_tag(record, cls.TAG)
    return {name: require(record, name, cls.TAG) for name in names}


def _to_record(msg: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"message": msg.TAG}
    for name in msg._NAMES:
        value = getattr(msg, name)
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


def _check_bits(value: object, where: str) -> None:
    check_int(value, where, lo=32, hi=64)
    if value not in (32, 64):
        raise ProtocolViolation(f"{where}: expected 32 or 64, got {value!r}")


def _check_names(values: object, where: str) -> tuple[str, ...]:
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) and v for v in values):
        raise ProtocolViolation(f"{where}: expected a list of non-empty strings")
    out = tuple(values)
    if len(set(out)) != len(out):
        raise ProtocolViolation(f"{where}: expected distinct organizations, got {list(out)}")
    return out


def _strictly_increasing(ids: tuple[int, ...], where: str) -> None:
    if any(a >= b for a, b in pairwise(ids)):
        raise ProtocolViolation(f"{where}: expected node ids sorted ascending, got {list(ids)}")


@dataclass(frozen=True, kw_only=True)
class AdvertiseKeys:
    """Stage K reply: the node's signed envelope key ``c_pk`` and mask key ``s_pk``.

    Parameters
    ----------
    run_id, node_id : int
        Flower run and node ids (``[0, 2^64)``).
    round : int
        The single round in which ``s_pk`` may be used.
    federation, organization : str
        Who signs (names without white space).
    identity_pk : bytes
        Raw 32-byte Ed25519 identity key of the organization.
    c_pk, s_pk : bytes
        Raw 32-byte X25519 public keys (a low-order point is refused).
    c_pk_signature, s_pk_signature : bytes
        Ed25519 signatures of the key statements (``identity.key_statement``).
    """

    run_id: int
    node_id: int
    round: int
    federation: str
    organization: str
    identity_pk: bytes
    c_pk: bytes
    c_pk_signature: bytes
    s_pk: bytes
    s_pk_signature: bytes

    TAG: ClassVar[str] = _PREFIX + "advertise_keys"
    _NAMES: ClassVar[tuple[str, ...]] = (
        "run_id", "node_id", "round", "federation", "organization", "identity_pk", "c_pk", "c_pk_signature",
        "s_pk", "s_pk_signature",
    )  # fmt: skip

    def __post_init__(self) -> None:
        check_u64(self.run_id, f"{self.TAG}.run_id")
        check_u64(self.node_id, f"{self.TAG}.node_id")
        check_u64(self.round, f"{self.TAG}.round")
        _check_names([self.federation], f"{self.TAG}.federation")
        _check_names([self.organization], f"{self.TAG}.organization")
        check_bytes(self.identity_pk, f"{self.TAG}.identity_pk", length=IDENTITY_BYTES)
        check_public_key(check_bytes(self.c_pk, f"{self.TAG}.c_pk", length=KEY_BYTES), field=f"{self.TAG}.c_pk")
        check_public_key(check_bytes(self.s_pk, f"{self.TAG}.s_pk", length=KEY_BYTES), field=f"{self.TAG}.s_pk")
        check_bytes(self.c_pk_signature, f"{self.TAG}.c_pk_signature", length=SIGNATURE_BYTES)
        check_bytes(self.s_pk_signature, f"{self.TAG}.s_pk_signature", length=SIGNATURE_BYTES)
        if self.c_pk == self.s_pk:
            raise ProtocolViolation(f"{self.TAG}.s_pk: must differ from c_pk")

    def to_record(self) -> dict[str, Any]:
        """Flat record for a Flower ConfigRecord."""
        return _to_record(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> AdvertiseKeys:
        """Validate and parse a record made by :meth:`to_record`."""
        return cls(**_read(cls, record, cls._NAMES))


@dataclass(frozen=True, kw_only=True)
class RoundSetup:
    """Stage M request: everything a participant needs to mask its update.

    Parameters
    ----------
    run_id, round : int
        Run and round ids.
    threshold : int
        Shamir threshold ``t``, ``2 <= t <= len(participants)``.
    length : int
        Number of ring elements of every masked vector.
    bits, frac_bits : int
        Ring size and fractional bits.
    clip_bound, weight_bound : float
        Encoding bounds (see :class:`~oneliac_flwr.secure.encoding.RingSpec`).
    max_participants : int
        Ring's participant bound (``>= len(participants)``).
    participants : tuple of int
        Node ids, strictly increasing.
    c_pks, s_pks : tuple of bytes
        Envelope and round mask public keys, parallel to ``participants``.
    organizations : tuple of str
        Organization of each participant (distinct), parallel to ``participants``.
    identity_pks : tuple of bytes
        Ed25519 identity key of each participant.
    c_pk_signatures, s_pk_signatures : tuple of bytes
        Each participant's signatures of its ``c_pk`` (whole run) and ``s_pk`` (this round).
    graph_degree : int
        0: complete graph (everyone masks against and shares with everyone). Else the even
        degree ``k`` of the sparse sharing graph every client recomputes from ``(run, S)``
        (``docs/secure-sum.md`` section 12).
    sharing_threshold : int
        Shamir threshold of every sharing of the round: the per-neighbourhood threshold (of
        ``k + 1`` shares) for a sparse graph; for the complete graph it is set to ``threshold``.
    """

    run_id: int
    round: int
    threshold: int
    length: int
    bits: int
    frac_bits: int
    clip_bound: float
    weight_bound: float
    max_participants: int
    participants: tuple[int, ...]
    c_pks: tuple[bytes, ...]
    s_pks: tuple[bytes, ...]
    organizations: tuple[str, ...]
    identity_pks: tuple[bytes, ...]
    c_pk_signatures: tuple[bytes, ...]
    s_pk_signatures: tuple[bytes, ...]
    graph_degree: int = 0
    sharing_threshold: int = 0

    TAG: ClassVar[str] = _PREFIX + "round_setup"
    _NAMES: ClassVar[tuple[str, ...]] = (
        "run_id", "round", "threshold", "length", "bits", "frac_bits", "clip_bound",
        "weight_bound", "max_participants", "participants", "c_pks", "s_pks", "organizations",
        "identity_pks", "c_pk_signatures", "s_pk_signatures", "graph_degree", "sharing_threshold",
    )  # fmt: skip

    def __post_init__(self) -> None:
        tag = self.TAG
        check_u64(self.run_id, f"{tag}.run_id")
        check_u64(self.round, f"{tag}.round")
        check_int(self.length, f"{tag}.length", lo=1)
        _check_bits(self.bits, f"{tag}.bits")
        check_int(self.frac_bits, f"{tag}.frac_bits", lo=0)
        check_float(self.clip_bound, f"{tag}.clip_bound")
        check_float(self.weight_bound, f"{tag}.weight_bound")
        check_int(self.max_participants, f"{tag}.max_participants", lo=2)
        _set(self, "participants", check_u64_tuple(self.participants, f"{tag}.participants"))
        _set(self, "c_pks", check_bytes_tuple(self.c_pks, f"{tag}.c_pks", length=KEY_BYTES))
        _set(self, "s_pks", check_bytes_tuple(self.s_pks, f"{tag}.s_pks", length=KEY_BYTES))
        _set(self, "organizations", _check_names(self.organizations, f"{tag}.organizations"))
        _set(self, "identity_pks", check_bytes_tuple(self.identity_pks, f"{tag}.identity_pks", length=IDENTITY_BYTES))
        for name in ("c_pk_signatures", "s_pk_signatures"):
            _set(self, name, check_bytes_tuple(getattr(self, name), f"{tag}.{name}", length=SIGNATURE_BYTES))
        n = len(self.participants)
        check_same_length(
            tag, participants=self.participants, c_pks=self.c_pks, s_pks=self.s_pks, organizations=self.organizations,
            identity_pks=self.identity_pks, c_pk_signatures=self.c_pk_signatures,
            s_pk_signatures=self.s_pk_signatures,
        )  # fmt: skip
        if len(set(self.identity_pks)) != n:
            raise ProtocolViolation(f"{tag}.identity_pks: two participants present the same identity")
        _strictly_increasing(self.participants, f"{tag}.participants")
        if n < 2 or n > self.max_participants:
            raise ProtocolViolation(f"{tag}.participants: expected 2 to {self.max_participants} nodes, got {n}")
        check_int(self.threshold, f"{tag}.threshold", lo=2, hi=n)
        check_int(self.graph_degree, f"{tag}.graph_degree", lo=0, hi=max(n - 2, 0))
        if self.graph_degree == 0:  # complete graph: the sharings' threshold is t itself
            _set(self, "sharing_threshold", self.threshold)
        check_int(self.sharing_threshold, f"{tag}.sharing_threshold", lo=2, hi=self.graph_degree + 1 if self.graph_degree else n)
        try:
            _ = self.spec  # validates the ring
        except ConfigError as exc:
            raise ProtocolViolation(f"{tag}.ring: {exc}") from None

    @cached_property
    def graph(self) -> SharingGraph:
        """The round's sharing graph, recomputed from ``(run, S, graph_degree)``."""
        return sharing_graph(self.run_id, self.participants, self.graph_degree)

    @property
    def spec(self) -> RingSpec:
        """The ring of this round."""
        return RingSpec(
            bits=self.bits,
            frac_bits=self.frac_bits,
            clip_bound=self.clip_bound,
            weight_bound=self.weight_bound,
            max_participants=self.max_participants,
        )

    def to_record(self) -> dict[str, Any]:
        """Flat record for a Flower ConfigRecord."""
        return _to_record(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> RoundSetup:
        """Validate and parse a record made by :meth:`to_record`."""
        return cls(**_read(cls, record, cls._NAMES))


@dataclass(frozen=True, eq=False, kw_only=True)
class MaskedInput:
    """Stage M reply: the masked vector and the node's encrypted shares.

    Parameters
    ----------
    run_id, round, node_id : int
        Run, round and sender.
    bits, length : int
        Ring size and vector length (must match ``masked``).
    next_s_pk : bytes
        Public mask key the node may use in round ``round + 1`` only.
    next_s_pk_signature : bytes
        The node identity's signature of ``next_s_pk`` for round ``round + 1``.
    share_recipients : tuple of int
        The sender's neighbourhood in the round's sharing graph, itself included (sorted; all
        participants for the complete graph); the share lists are parallel to it.
    self_share_ciphertexts : tuple of bytes
        Envelope (kind ``self``) of each recipient's share of the self-mask seed.
    key_share_ciphertexts : tuple of bytes
        Envelope (kind ``pairwise``) of each recipient's share of ``next_s_sk``.
    masked : numpy.ndarray
        1-D ``uint32`` (``bits == 32``) or ``uint64`` vector; not part of the record.
    """

    run_id: int
    round: int
    node_id: int
    bits: int
    length: int
    next_s_pk: bytes
    next_s_pk_signature: bytes
    share_recipients: tuple[int, ...]
    self_share_ciphertexts: tuple[bytes, ...]
    key_share_ciphertexts: tuple[bytes, ...]
    masked: np.ndarray = field(repr=False)

    TAG: ClassVar[str] = _PREFIX + "masked_input"
    _NAMES: ClassVar[tuple[str, ...]] = (
        "run_id", "round", "node_id", "bits", "length", "next_s_pk", "next_s_pk_signature", "share_recipients",
        "self_share_ciphertexts", "key_share_ciphertexts",
    )  # fmt: skip

    def __post_init__(self) -> None:
        tag = self.TAG
        check_u64(self.run_id, f"{tag}.run_id")
        check_u64(self.round, f"{tag}.round")
        check_u64(self.node_id, f"{tag}.node_id")
        _check_bits(self.bits, f"{tag}.bits")
        check_int(self.length, f"{tag}.length", lo=1)
        check_public_key(check_bytes(self.next_s_pk, f"{tag}.next_s_pk", length=KEY_BYTES), field=f"{tag}.next_s_pk")
        check_bytes(self.next_s_pk_signature, f"{tag}.next_s_pk_signature", length=SIGNATURE_BYTES)
        recipients = check_u64_tuple(self.share_recipients, f"{tag}.share_recipients")
        _strictly_increasing(recipients, f"{tag}.share_recipients")
        _set(self, "share_recipients", recipients)
        _set(
            self,
            "self_share_ciphertexts",
            check_bytes_tuple(self.self_share_ciphertexts, f"{tag}.self_share_ciphertexts", length=SELF_ENVELOPE_BYTES),
        )
        _set(
            self,
            "key_share_ciphertexts",
            check_bytes_tuple(self.key_share_ciphertexts, f"{tag}.key_share_ciphertexts", length=KEY_ENVELOPE_BYTES),
        )
        check_same_length(
            tag,
            share_recipients=recipients,
            self_share_ciphertexts=self.self_share_ciphertexts,
            key_share_ciphertexts=self.key_share_ciphertexts,
        )
        if self.node_id not in recipients:
            raise ProtocolViolation(f"{tag}.share_recipients: must include the sender {self.node_id}")
        masked = self.masked
        if not isinstance(masked, np.ndarray):
            raise ProtocolViolation(f"{tag}.masked: expected a numpy array, got {type(masked).__name__}")
        expected = ring_dtype(self.bits)
        if masked.dtype != expected:
            raise ProtocolViolation(
                f"{tag}.masked: expected dtype {expected} for a {self.bits}-bit ring, got {masked.dtype}"
            )
        if masked.shape != (self.length,):
            raise ProtocolViolation(f"{tag}.masked: expected shape ({self.length},), got {masked.shape}")

    def to_record(self) -> dict[str, Any]:
        """Flat record for a Flower ConfigRecord (without ``masked``)."""
        return _to_record(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any], *, masked: np.ndarray) -> MaskedInput:
        """Validate and parse a record made by :meth:`to_record`, with its vector."""
        return cls(**_read(cls, record, cls._NAMES), masked=masked)


@dataclass(frozen=True, kw_only=True)
class UnmaskRequest:
    """Stage U request to one counted node.

    Parameters
    ----------
    run_id, round, node_id : int
        Run, round and recipient.
    counted, dropped : tuple of int
        ``C`` (accepted masked inputs) and ``D = S \\ C``.
    self_share_owners, self_share_ciphertexts
        Envelopes (kind ``self``, this round) of ``node_id``'s shares of ``b_w``, ``w`` in ``C``.
    key_share_owners, key_share_rounds, key_share_ciphertexts
        Envelopes (kind ``pairwise``) of ``node_id``'s shares of the mask key of ``d`` in
        ``D``, with the round in which each was made.
    seed_requests : tuple of int
        Dropped nodes ``d`` whose pairwise mask key with ``node_id`` must be revealed.
    consistency_signers, consistency_signatures
        Malicious mode: the survivors' signatures of ``(round, counted, dropped)``
        (empty in semi-honest mode).
    """

    run_id: int
    round: int
    node_id: int
    counted: tuple[int, ...]
    dropped: tuple[int, ...]
    self_share_owners: tuple[int, ...]
    self_share_ciphertexts: tuple[bytes, ...]
    key_share_owners: tuple[int, ...]
    key_share_rounds: tuple[int, ...]
    key_share_ciphertexts: tuple[bytes, ...]
    seed_requests: tuple[int, ...]
    consistency_signers: tuple[int, ...] = ()
    consistency_signatures: tuple[bytes, ...] = ()

    TAG: ClassVar[str] = _PREFIX + "unmask_request"
    _NAMES: ClassVar[tuple[str, ...]] = (
        "run_id", "round", "node_id", "counted", "dropped", "self_share_owners",
        "self_share_ciphertexts", "key_share_owners", "key_share_rounds",
        "key_share_ciphertexts", "seed_requests", "consistency_signers", "consistency_signatures",
    )  # fmt: skip

    def __post_init__(self) -> None:
        tag = self.TAG
        check_u64(self.run_id, f"{tag}.run_id")
        check_u64(self.round, f"{tag}.round")
        check_u64(self.node_id, f"{tag}.node_id")
        for name in ("counted", "dropped", "self_share_owners", "key_share_owners", "seed_requests",
                     "consistency_signers"):  # fmt: skip
            _set(self, name, check_u64_tuple(getattr(self, name), f"{tag}.{name}"))
        _set(
            self,
            "consistency_signatures",
            check_bytes_tuple(self.consistency_signatures, f"{tag}.consistency_signatures", length=SIGNATURE_BYTES),
        )
        check_same_length(
            f"{tag} (consistency)",
            consistency_signers=self.consistency_signers,
            consistency_signatures=self.consistency_signatures,
        )
        _set(self, "key_share_rounds", check_int_tuple(self.key_share_rounds, f"{tag}.key_share_rounds", lo=0))
        _set(
            self,
            "self_share_ciphertexts",
            check_bytes_tuple(self.self_share_ciphertexts, f"{tag}.self_share_ciphertexts", length=SELF_ENVELOPE_BYTES),
        )
        _set(
            self,
            "key_share_ciphertexts",
            check_bytes_tuple(self.key_share_ciphertexts, f"{tag}.key_share_ciphertexts", length=KEY_ENVELOPE_BYTES),
        )
        check_same_length(
            f"{tag} (self shares)",
            self_share_owners=self.self_share_owners,
            self_share_ciphertexts=self.self_share_ciphertexts,
        )
        check_same_length(
            f"{tag} (key shares)",
            key_share_owners=self.key_share_owners,
            key_share_rounds=self.key_share_rounds,
            key_share_ciphertexts=self.key_share_ciphertexts,
        )

    def to_record(self) -> dict[str, Any]:
        """Flat record for a Flower ConfigRecord."""
        return _to_record(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> UnmaskRequest:
        """Validate and parse a record made by :meth:`to_record`."""
        return cls(**_read(cls, record, cls._NAMES))


@dataclass(frozen=True, kw_only=True)
class UnmaskResponse:
    """Stage U reply: decrypted shares and requested seeds.

    Parameters
    ----------
    run_id, round, node_id : int
        Run, round and sender.
    self_share_owners, self_share_indices, self_shares
        Shares (32 bytes) of the self-mask seeds of counted owners, with their indices.
    key_share_owners, key_share_indices, key_shares
        Shares (32 bytes) of the round mask keys of dropped owners, with their indices.
    seed_peers, seeds
        Pairwise mask keys ``k_{node,d}`` (32 bytes) of this round for dropped ``d``.
    """

    run_id: int
    round: int
    node_id: int
    self_share_owners: tuple[int, ...]
    self_share_indices: tuple[int, ...]
    self_shares: tuple[bytes, ...]
    key_share_owners: tuple[int, ...]
    key_share_indices: tuple[int, ...]
    key_shares: tuple[bytes, ...]
    seed_peers: tuple[int, ...]
    seeds: tuple[bytes, ...]

    TAG: ClassVar[str] = _PREFIX + "unmask_response"
    _NAMES: ClassVar[tuple[str, ...]] = (
        "run_id", "round", "node_id", "self_share_owners", "self_share_indices",
        "self_shares", "key_share_owners", "key_share_indices", "key_shares",
        "seed_peers", "seeds",
    )  # fmt: skip

    def __post_init__(self) -> None:
        tag = self.TAG
        check_u64(self.run_id, f"{tag}.run_id")
        check_u64(self.round, f"{tag}.round")
        check_u64(self.node_id, f"{tag}.node_id")
        for name in ("self_share_owners", "key_share_owners", "seed_peers"):
            _set(self, name, check_u64_tuple(getattr(self, name), f"{tag}.{name}"))
        for name in ("self_share_indices", "key_share_indices"):
            _set(self, name, check_int_tuple(getattr(self, name), f"{tag}.{name}", lo=1))
        for name in ("self_shares", "key_shares"):
            _set(self, name, check_bytes_tuple(getattr(self, name), f"{tag}.{name}", length=SECRET_BYTES))
        _set(self, "seeds", check_bytes_tuple(self.seeds, f"{tag}.seeds", length=KEY_BYTES))
        check_same_length(
            f"{tag} (self shares)",
            self_share_owners=self.self_share_owners,
            self_share_indices=self.self_share_indices,
            self_shares=self.self_shares,
        )
        check_same_length(
            f"{tag} (key shares)",
            key_share_owners=self.key_share_owners,
            key_share_indices=self.key_share_indices,
            key_shares=self.key_shares,
        )
        check_same_length(f"{tag} (seeds)", seed_peers=self.seed_peers, seeds=self.seeds)

    def to_record(self) -> dict[str, Any]:
        """Flat record for a Flower ConfigRecord."""
        return _to_record(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> UnmaskResponse:
        """Validate and parse a record made by :meth:`to_record`."""
        return cls(**_read(cls, record, cls._NAMES))


@dataclass(frozen=True, kw_only=True)
class ConsistencyRequest:
    """Malicious mode, stage C: the survivor set each counted node is asked to sign.

    Parameters
    ----------
    run_id, round, node_id : int
        Run, round and recipient.
    counted, dropped : tuple of int
        ``C`` and ``D`` of the round.
    """

    run_id: int
    round: int
    node_id: int
    counted: tuple[int, ...]
    dropped: tuple[int, ...]

    TAG: ClassVar[str] = _PREFIX + "consistency_request"
    _NAMES: ClassVar[tuple[str, ...]] = ("run_id", "round", "node_id", "counted", "dropped")

    def __post_init__(self) -> None:
        for name in ("run_id", "round", "node_id"):
            check_u64(getattr(self, name), f"{self.TAG}.{name}")
        for name in ("counted", "dropped"):
            _set(self, name, check_u64_tuple(getattr(self, name), f"{self.TAG}.{name}"))

    def to_record(self) -> dict[str, Any]:
        """Flat record for a Flower ConfigRecord."""
        return _to_record(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ConsistencyRequest:
        """Validate and parse a record made by :meth:`to_record`."""
        return cls(**_read(cls, record, cls._NAMES))


@dataclass(frozen=True, kw_only=True)
class ConsistencyResponse:
    """Malicious mode, stage C reply: the node's signature of the survivor set.

    Parameters
    ----------
    run_id, round, node_id : int
        Run, round and signer.
    signature : bytes
        Ed25519 signature of ``identity.survivors_statement`` by the node's identity.
    """

    run_id: int
    round: int
    node_id: int
    signature: bytes

    TAG: ClassVar[str] = _PREFIX + "consistency_response"
    _NAMES: ClassVar[tuple[str, ...]] = ("run_id", "round", "node_id", "signature")

    def __post_init__(self) -> None:
        for name in ("run_id", "round", "node_id"):
            check_u64(getattr(self, name), f"{self.TAG}.{name}")
        check_bytes(self.signature, f"{self.TAG}.signature", length=SIGNATURE_BYTES)

    def to_record(self) -> dict[str, Any]:
        """Flat record for a Flower ConfigRecord."""
        return _to_record(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ConsistencyResponse:
        """Validate and parse a record made by :meth:`to_record`."""
        return cls(**_read(cls, record, cls._NAMES))
