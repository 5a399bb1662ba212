"""Client side of the secure-sum protocol: a transport-free, persistable state machine.

One instance per node and run. Stages (``docs/secure-sum.md`` section 6):
``advertise_keys()`` (stage K, when asked), ``mask()`` (stage M), ``unmask()`` (stage U).
Between messages the adapter saves ``state_dict()`` (bytes/int/str/bool and lists of
them) and restores it with :meth:`SecureSumClient.from_state_dict`.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from oneliac_flwr.errors import ProtocolViolation

from ._fields import (
    check_bytes,
    check_bytes_tuple,
    check_int,
    check_u64,
    check_u64_tuple,
    require,
)
from .encoding import encode
from .graph import DEFAULT_COLLUDING_FRACTION, DEFAULT_DROPOUT_FRACTION, SharingGraph, check_graph, sharing_graph
from .envelope import open_share_with_key, seal_shares_with_key
from .identity import (
    ANY_ROUND,
    Identity,
    TofuTrust,
    Trust,
    identity_fingerprint,
    key_statement,
    survivors_statement,
    verify_key_signature,
    verify_survivors_signature,
)

from .keys import (
    KEY_BYTES,
    check_public_key,
    checked_exchange,
    fingerprint,
    generate_private_key,
    load_private_key,
    pairwise_mask_key,
    pairwise_mask_key_from_secret,
    private_bytes,
    public_bytes,
    self_mask_key,
    share_encryption_key_from_secret,
)
from .masks import apply_masks, pairwise_sign
from .messages import (
    AdvertiseKeys,
    ConsistencyRequest,
    ConsistencyResponse,
    MaskedInput,
    RoundSetup,
    UnmaskRequest,
    UnmaskResponse,
)
from .sharing import SharePlaintext, share_index, share_many

__all__ = ["MAX_REVEALED_FINGERPRINTS", "MODES", "Mode", "SecureSumClient"]

Mode = Literal["semi-honest", "malicious"]
#: The protocol modes (``docs/secure-sum.md`` sections 8 and 10).
MODES: tuple[str, ...] = ("semi-honest", "malicious")

#: How many fingerprints of revealed peer keys a client remembers (newest kept).
MAX_REVEALED_FINGERPRINTS = 4096
_STATE = "client_state"
_STATE_VERSION = 2


def _pack_keys(keys: Any) -> bytes:
    """Fixed-length byte strings as one value (a state record of a few values, not hundreds)."""
    return b"".join(keys)


def _pack_ids(ids: Any) -> bytes:
    ids = list(ids)
    return struct.pack(f">{len(ids)}Q", *ids)


def _unpack_keys(value: Any, where: str, length: int) -> tuple[bytes, ...]:
    """Read what :func:`_pack_keys` made (or a list of byte strings, as states before it)."""
    if isinstance(value, bytes):
        if len(value) % length:
            raise ProtocolViolation(f"{where}: expected a multiple of {length} bytes, got {len(value)}")
        return tuple(value[i : i + length] for i in range(0, len(value), length))
    return check_bytes_tuple(value, where, length=length)


def _unpack_ids(value: Any, where: str) -> tuple[int, ...]:
    """Read what :func:`_pack_ids` made (or a list of ids)."""
    if isinstance(value, bytes):
        if len(value) % 8:
            raise ProtocolViolation(f"{where}: expected a multiple of 8 bytes, got {len(value)}")
        value = list(struct.unpack(f">{len(value) // 8}Q", value))
    return check_u64_tuple(value, where)


def _envelope_announcement(identity_pk: bytes, signature: bytes, c_pk: bytes, organization: str) -> bytes:
    """Digest of one peer's signed envelope-key announcement (fixed-length fields first, so
    the concatenation is unambiguous); a client remembers the digests it verified."""
    return hashlib.sha256(identity_pk + signature + c_pk + organization.encode()).digest()


@dataclass
class _RoundState:
    """What a client keeps from stage M to answer stage U of the same round."""

    round: int
    participants: tuple[int, ...]
    threshold: int
    c_pks: tuple[bytes, ...]
    s_pks: tuple[bytes, ...]
    s_sk: bytes
    identity_pks: tuple[bytes, ...] = ()
    graph_degree: int = 0  # 0: complete graph
    sharing_threshold: int = 0  # threshold of the round's sharings (0: = threshold)
    signed: bool = False  # malicious mode: this node signed (counted, dropped)
    counted: tuple[int, ...] | None = None
    dropped: tuple[int, ...] | None = None
    revealed_self: set[int] = field(default_factory=set)
    revealed_key: set[int] = field(default_factory=set)

    def position(self, node: int) -> int:
        return self.participants.index(node)

    def graph(self, run_id: int) -> SharingGraph:
        return sharing_graph(run_id, self.participants, self.graph_degree)

    @property
    def share_threshold(self) -> int:
        return self.sharing_threshold or self.threshold


class SecureSumClient:
    """Secure-sum participant (one node, one run).

    Parameters
    ----------
    node_id : int
        This node's Flower node id (``[0, 2^64)``).
    run_id : int
        Flower run id (``[0, 2^64)``).
    identity : Identity
        The hospital's long-lived Ed25519 identity (from its own disk).
    organization : str
        The hospital's organization id (what peers pin).
    federation : str
        Federation name bound into every signature (a hospital's own setting).
    min_threshold : int
        The hospital's own minimum threshold ``t``; a round setup below it is refused.
    mode : {"semi-honest", "malicious"}
        ``malicious``: reveal nothing in stage U unless at least ``t`` survivors signed
        the same survivor set this node signed (consistency check).
    colluding_fraction, dropout_fraction : float
        The fractions of a round's participants this hospital assumes may collude with the
        coordinator or drop out; a sparse sharing graph whose failure bound for them exceeds
        ``2^-40`` is refused (``graph_check``, ``docs/secure-sum.md`` section 12).

    Notes
    -----
    Holds a long-lived X25519 envelope key pair ``c`` and the single-use mask key pair
    ``s`` bound to the one round it may be used in. Every method either completes or
    raises :class:`~oneliac_flwr.errors.ProtocolViolation` with the state unchanged;
    the message starts with the name of the failed check.
    """

    def __init__(
        self,
        *,
        node_id: int,
        run_id: int,
        identity: Identity,
        organization: str,
        federation: str = "default",
        min_threshold: int = 2,
        mode: Mode = "semi-honest",
        colluding_fraction: float = DEFAULT_COLLUDING_FRACTION,
        dropout_fraction: float = DEFAULT_DROPOUT_FRACTION,
    ) -> None:
        self._node = check_u64(node_id, "node_id")
        self._run = check_u64(run_id, "run_id")
        if not isinstance(identity, Identity):
            raise ProtocolViolation(f"identity: expected an Identity, got {type(identity).__name__}")
        self._identity = identity
        self._org = organization
        self._federation = federation
        key_statement(  # validates both names once
            federation=federation, organization=organization, run_id=self._run, kind="envelope", round=0,
            public_key=bytes(32),
        )  # fmt: skip
        self._min_t = check_int(min_threshold, "min_threshold", lo=2)
        if mode not in MODES:
            raise ProtocolViolation(f"mode: expected one of {list(MODES)}, got {mode!r}")
        self._mode: Mode = mode
        for name, value in (("colluding_fraction", colluding_fraction), ("dropout_fraction", dropout_fraction)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 0.5:
                raise ProtocolViolation(f"{name}: expected a fraction in [0, 0.5), got {value!r}")
        self._gamma, self._delta = float(colluding_fraction), float(dropout_fraction)
        self._c_sk: bytes | None = None
        self._next_s_sk: bytes | None = None
        self._next_round = 0  # the single round _next_s_sk may be used in
        self._next_threshold = 0  # threshold of the sharing of _next_s_sk (0: never shared)
        self._last_round: int | None = None
        self._round: _RoundState | None = None
        self._revealed: list[str] = []
        # Per-run caches of work that does not change between rounds (docs/secure-sum.md,
        # section 6, "What a client keeps"): the X25519 secret of this node's envelope key
        # with each peer's (envelope keys serve the whole run; each round derives its own
        # keys from it), and the envelope-key announcements it already verified.
        self._c_secrets: dict[bytes, bytes] = {}
        self._verified_envelope_keys: set[bytes] = set()

    def _sign(self, kind: Literal["envelope", "mask"], round: int, public_key: bytes) -> bytes:
        return self._identity.sign_key(
            federation=self._federation, organization=self._org, run_id=self._run, kind=kind, round=round,
            public_key=public_key,
        )  # fmt: skip

    # ------------------------------------------------------------------ properties
    @property
    def node_id(self) -> int:
        """This node's id."""
        return self._node

    @property
    def run_id(self) -> int:
        """The run id."""
        return self._run

    @property
    def has_keys(self) -> bool:
        """Whether the node holds an envelope key and an unused mask key."""
        return self._c_sk is not None and self._next_s_sk is not None

    @property
    def identity_fingerprint(self) -> str:
        """SHA-256 of the identity key: the value peers pin for this organization."""
        return self._identity.fingerprint

    @property
    def organization(self) -> str:
        """This hospital's organization id."""
        return self._org

    @property
    def revealed_fingerprints(self) -> tuple[str, ...]:
        """Fingerprints of peer mask keys whose shares or seeds this node revealed."""
        return tuple(self._revealed)

    # ------------------------------------------------------------------ stage K
    def advertise_keys(self, *, round: int, rotate_envelope_key: bool = False) -> AdvertiseKeys:
        """Stage K: make a fresh mask key pair (and an envelope pair if none) and announce them.

        Parameters
        ----------
        round : int
            The round the coordinator asks keys for: the new mask key may be used in it only.
        rotate_envelope_key : bool
            Also replace the envelope key pair ``c``. Shares addressed to the old key
            become unreadable (the coordinator discards them).

        Returns
        -------
        AdvertiseKeys
            The public keys ``c_pk`` and ``s_pk``, signed by this hospital's identity.
        """
        check_u64(round, "round")
        c_sk = self._c_sk
        if c_sk is None or rotate_envelope_key:
            c_sk = private_bytes(generate_private_key())
        s_sk = private_bytes(generate_private_key())
        c_pk = public_bytes(load_private_key(c_sk))
        s_pk = public_bytes(load_private_key(s_sk))
        message = AdvertiseKeys(
            run_id=self._run,
            node_id=self._node,
            round=round,
            federation=self._federation,
            organization=self._org,
            identity_pk=self._identity.public_bytes,
            c_pk=c_pk,
            c_pk_signature=self._sign("envelope", ANY_ROUND, c_pk),
            s_pk=s_pk,
            s_pk_signature=self._sign("mask", round, s_pk),
        )
        if c_sk != self._c_sk:
            self._c_secrets = {}  # secrets of the old envelope key
        self._c_sk, self._next_s_sk = c_sk, s_sk
        self._next_round, self._next_threshold = round, 0
        return message

    # ------------------------------------------------------------------ stage M
    def mask(
        self,
        update: np.ndarray,
        *,
        weight: float,
        setup: RoundSetup,
        trust: Trust | None = None,
    ) -> MaskedInput:
        """Stage M: encode, mask and share; return the masked input for the coordinator.

        Parameters
        ----------
        update : numpy.ndarray
            1-D float vector of ``setup.length`` values, each ``|x_i| <= clip_bound``.
        weight : float
            Weight of this update, ``0 < weight <= weight_bound`` (e.g. ``num_examples``).
        setup : RoundSetup
            The coordinator's round setup.
        trust : Trust or None
            Decides whether each participant's identity key is the right one
            (:class:`~oneliac_flwr.secure.identity.PinnedTrust` or
            :class:`~oneliac_flwr.secure.identity.TofuTrust`). ``None`` checks signatures
            only against the identity keys the setup lists (tests, benchmarks).

        Returns
        -------
        MaskedInput
            The masked vector and the envelopes of this node's shares.

        Raises
        ------
        ProtocolViolation
            On any check of section 6 (stage M) failing; nothing is to be sent then.
        """
        if not isinstance(setup, RoundSetup):
            raise ProtocolViolation(f"setup: expected a RoundSetup, got {type(setup).__name__}")
        me, run, rnd = self._node, self._run, setup.round
        if setup.run_id != run:
            raise ProtocolViolation(f"run_check: round_setup.run_id is {setup.run_id}, expected {run}")
        if me not in setup.participants:
            raise ProtocolViolation(f"participant_check: this node ({me}) is not listed")
        if self._last_round is not None and rnd <= self._last_round:
            raise ProtocolViolation(
                f"round_check: round {rnd} is not after the last round this node masked ({self._last_round})"
            )
        self._check_threshold(setup)
        if self._c_sk is None or self._next_s_sk is None:
            raise ProtocolViolation(f"key_check: node {me} holds no keys: it must advertise keys (stage K) first")
        self._check_key_binding(setup)
        pos = setup.participants.index(me)
        self._check_own_keys(setup, pos, c_sk_raw=self._c_sk, s_sk_raw=self._next_s_sk)
        graph = setup.graph
        peers = graph.neighbours(me)
        recipients = graph.neighbourhood(me)
        s_sk = load_private_key(self._next_s_sk)
        pairwise, verified = self._check_peer_keys(setup, trust, peers, s_sk)
        arr = np.asarray(update)
        if arr.shape != (setup.length,):
            raise ProtocolViolation(f"update: expected shape ({setup.length},), got {arr.shape}")
        masked = encode(arr, weight=weight, spec=setup.spec)

        seed = os.urandom(KEY_BYTES)
        masks = [(self_mask_key(seed, run_id=run, round=rnd, node=me), 1)]
        for v in peers:
            key = pairwise_mask_key_from_secret(pairwise[v], run_id=run, round=rnd, me=me, peer=v)
            masks.append((key, pairwise_sign(me, v)))
        apply_masks(masked, masks)

        next_s = private_bytes(generate_private_key())
        next_s_pk = public_bytes(load_private_key(next_s))
        # Shares go to the neighbourhood only; each holder keeps its index pos_S in the round.
        indices = [setup.participants.index(v) + 1 for v in recipients]
        t = setup.sharing_threshold
        seed_shares, key_shares = share_many([seed, next_s], threshold=t, n=len(setup.participants), indices=indices)
        c_sk = load_private_key(self._c_sk)
        self_envs: list[bytes] = []
        key_envs: list[bytes] = []
        c_pks = [setup.c_pks[i - 1] for i in indices]
        c_secrets = {c_pk: self._c_secret(c_sk, c_pk, v) for v, c_pk in zip(recipients, c_pks, strict=True)}
        for v, c_pk, (i_b, sh_b), (i_k, sh_k) in zip(recipients, c_pks, seed_shares, key_shares, strict=True):
            # One key per recipient and round seals both of its shares (distinct nonces and
            # associated data): section 3, Envelopes.
            key = share_encryption_key_from_secret(c_secrets[c_pk], run_id=run, round=rnd, sender=me, recipient=v)
            # ``participants`` binds the index range: |S|, of which the holder's index is pos_S.
            key_plain = SharePlaintext(
                i_k, sh_k, next_s_pk, threshold=t, participants=len(setup.participants), use_round=rnd + 1
            )
            self_env, key_env = seal_shares_with_key(
                [("self", SharePlaintext(i_b, sh_b).to_bytes()), ("pairwise", key_plain.to_bytes())],
                key=key, run_id=run, round=rnd, sender=me, recipient=v,
            )  # fmt: skip
            self_envs.append(self_env)
            key_envs.append(key_env)
        masked.setflags(write=False)
        message = MaskedInput(
            run_id=run,
            round=rnd,
            node_id=me,
            bits=setup.bits,
            length=setup.length,
            next_s_pk=next_s_pk,
            next_s_pk_signature=self._sign("mask", rnd + 1, next_s_pk),
            share_recipients=recipients,
            self_share_ciphertexts=tuple(self_envs),
            key_share_ciphertexts=tuple(key_envs),
            masked=masked,
        )
        # Commit only now: every check and computation has succeeded.
        self._round = _RoundState(
            round=rnd,
            participants=setup.participants,
            threshold=t,
            c_pks=setup.c_pks,
            s_pks=setup.s_pks,
            s_sk=self._next_s_sk,
            identity_pks=setup.identity_pks,
            graph_degree=setup.graph_degree,
            sharing_threshold=t,
        )
        self._next_s_sk = next_s
        self._next_round, self._next_threshold = rnd + 1, t
        self._last_round = rnd
        self._c_secrets = c_secrets  # the round's neighbourhood: what stage U and the next round use
        self._verified_envelope_keys = verified
        return message

    def _c_secret(self, c_sk: X25519PrivateKey, c_pk: bytes, peer: int) -> bytes:
        """X25519 secret of this node's envelope key with ``c_pk`` (kept per peer key for the run)."""
        secret = self._c_secrets.get(c_pk)
        if secret is None:
            secret = checked_exchange(c_sk, c_pk, field=f"envelope key of node {peer}")
        return secret

    def _share_key(self, c_sk: X25519PrivateKey, st: _RoundState, sender: int, round: int) -> bytes:
        """The key of ``sender``'s envelopes to this node made in ``round``."""
        secret = self._c_secret(c_sk, st.c_pks[st.position(sender)], sender)
        return share_encryption_key_from_secret(secret, run_id=self._run, round=round, sender=sender, recipient=self._node)

    def _check_threshold(self, setup: RoundSetup) -> None:
        n, t = len(setup.participants), setup.threshold
        if t < n // 2 + 1:
            raise ProtocolViolation(f"threshold_check: t = {t} is not a majority of the {n} participants")
        if t < self._min_t:
            raise ProtocolViolation(f"threshold_check: t = {t} is below this hospital's minimum {self._min_t}")
        check_graph(
            n, setup.graph_degree, setup.sharing_threshold, colluding_fraction=self._gamma,
            dropout_fraction=self._delta, min_threshold=self._min_t,
        )  # fmt: skip

    def _check_key_binding(self, setup: RoundSetup) -> None:
        t = setup.sharing_threshold
        if self._next_round != setup.round:
            raise ProtocolViolation(
                f"key_round_check: this node's mask key may be used in round {self._next_round} only, "
                f"not in round {setup.round}; it must be re-keyed (stage K)"
            )
        if self._next_threshold and t > self._next_threshold:
            raise ProtocolViolation(
                f"key_threshold_check: this node's mask key was shared with threshold {self._next_threshold}, "
                f"below the round's t = {t}; it must be re-keyed (stage K)"
            )

    def _check_own_keys(self, setup: RoundSetup, pos: int, *, c_sk_raw: bytes, s_sk_raw: bytes) -> None:
        me = self._node
        if setup.organizations[pos] != self._org or setup.identity_pks[pos] != self._identity.public_bytes:
            raise ProtocolViolation(
                f"own_identity_check: the setup lists another organization or identity for node {me}"
            )
        own_c = public_bytes(load_private_key(c_sk_raw))
        if setup.c_pks[pos] != own_c:
            raise ProtocolViolation(f"own_key_check: the setup lists an envelope key node {me} does not hold")
        own_s = public_bytes(load_private_key(s_sk_raw))
        listed = setup.s_pks[pos]
        if listed != own_s:
            prev = self._round
            if prev is not None and me in prev.participants and prev.s_pks[prev.position(me)] == listed:
                raise ProtocolViolation(
                    f"own_key_check: the setup lists for node {me} the mask key it already used in round "
                    f"{prev.round}; a mask key is used once"
                )
            raise ProtocolViolation(
                f"own_key_check: the setup lists for node {me} a mask key it does not hold "
                f"({fingerprint(listed)[:16]}...); it must advertise keys (stage K)"
            )

    def _check_peer_keys(
        self, setup: RoundSetup, trust: Trust | None, peers: tuple[int, ...], s_sk: X25519PrivateKey
    ) -> tuple[dict[int, bytes], set[bytes]]:
        """Signatures, pins, key validity and freshness of the peers this node masks against.

        Returns the X25519 secret of ``s_sk`` with each peer's mask key (the exchange is the
        low-order check of that key) and the digests of the peers' verified envelope-key
        announcements. An envelope-key announcement (signed for the whole run) verified in an
        earlier round of the run is not verified again; its digest covers the identity key,
        the signature, the key and the organization, so any change is verified afresh.
        """
        me = self._node
        revealed = set(self._revealed)
        prev = self._round
        prev_keys = dict(zip(prev.participants, prev.s_pks, strict=True)) if prev is not None else {}
        rows = zip(
            setup.participants, setup.organizations, setup.identity_pks, setup.c_pks, setup.s_pks,
            setup.c_pk_signatures, setup.s_pk_signatures, strict=True,
        )  # fmt: skip
        adjacent = set(peers)
        batched = isinstance(trust, TofuTrust)  # one read and one write of the trust store per round
        pairwise: dict[int, bytes] = {}
        verified: set[bytes] = set()
        for v, org, ident, c_pk, s_pk, c_sig, s_sig in rows:
            if v == me or v not in adjacent:
                continue
            signer = {
                "identity_pk": ident, "federation": self._federation, "organization": org, "run_id": self._run,
            }  # fmt: skip
            announcement = _envelope_announcement(ident, c_sig, c_pk, org)
            known = announcement in self._verified_envelope_keys
            if not known:
                verify_key_signature(c_sig, kind="envelope", round=ANY_ROUND, public_key=c_pk, **signer)
            verify_key_signature(s_sig, kind="mask", round=setup.round, public_key=s_pk, **signer)
            if trust is not None and not batched:
                trust.check(federation=self._federation, organization=org, fingerprint=identity_fingerprint(ident))
            if not known:
                check_public_key(c_pk, field=f"envelope key of node {v}")
            verified.add(announcement)
            pairwise[v] = checked_exchange(s_sk, s_pk, field=f"mask key of node {v}")
            s_fp = fingerprint(s_pk)
            if s_fp in revealed:
                raise ProtocolViolation(
                    f"revealed_key_check: node {v}'s mask key {s_fp[:16]}... was revealed (share or seed) "
                    f"by this node earlier; refusing to mask with it"
                )
            if prev_keys.get(v) == s_pk:
                raise ProtocolViolation(
                    f"reused_key_check: node {v} reuses the mask key it had in round "
                    f"{prev.round if prev else '?'}; mask keys are single-use"
                )
        if batched:  # after every signature verified: never record an identity that did not sign
            trust.check_many(  # type: ignore[union-attr]
                federation=self._federation,
                identities=[(setup.organizations[i], identity_fingerprint(setup.identity_pks[i]))
                            for i, v in enumerate(setup.participants) if v in adjacent],
            )  # fmt: skip
        return pairwise, verified

    # ------------------------------------------------------------------ stage U
    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Stage U: reveal self-mask shares of counted peers, key shares or seeds of dropped ones.

        Parameters
        ----------
        request : UnmaskRequest
            The coordinator's request for the round this node last masked in.

        Returns
        -------
        UnmaskResponse
            Decrypted shares and requested seeds.

        Raises
        ------
        ProtocolViolation
            If the request concerns another round, is inconsistent, asks for both the
            self-mask share and the key share (or seed) of one peer, or an envelope does
            not open. Nothing is revealed then.
        """
        if not isinstance(request, UnmaskRequest):
            raise ProtocolViolation(f"request: expected an UnmaskRequest, got {type(request).__name__}")
        me, st = self._node, self._round
        if request.run_id != self._run:
            raise ProtocolViolation(f"run_check: unmask_request.run_id is {request.run_id}, expected {self._run}")
        if request.node_id != me:
            raise ProtocolViolation(f"node_check: addressed to {request.node_id}, this node is {me}")
        if st is None or request.round != st.round:
            last = "none" if st is None else str(st.round)
            raise ProtocolViolation(
                f"round_check: this node did not mask in round {request.round} "
                f"(its last masked round is {last}); refusing to reveal anything about it"
            )
        self._check_partition(request, st)
        if self._mode == "malicious" or request.consistency_signers:
            self._check_consistency(request, st)
        if self._c_sk is None:
            raise ProtocolViolation(f"key_check: node {me} lost its envelope key")
        c_sk = load_private_key(self._c_sk)
        my_index = st.position(me) + 1

        self_owners: list[int] = []
        self_shares: list[bytes] = []
        for w, env in zip(request.self_share_owners, request.self_share_ciphertexts, strict=True):
            try:
                plain = open_share_with_key(
                    env, key=self._share_key(c_sk, st, w, st.round), run_id=self._run, round=st.round, sender=w,
                    recipient=me, kind="self",
                )  # fmt: skip
                share = SharePlaintext.from_bytes(plain, with_key=False)
                if share.index != my_index:
                    raise ProtocolViolation(f"share_index_check: index {share.index}, expected {my_index}")
            except ProtocolViolation:  # a bad envelope drops that peer, not the whole reply
                continue
            self_owners.append(w)
            self_shares.append(share.share)

        key_owners: list[int] = []
        key_indices: list[int] = []
        key_shares: list[bytes] = []
        for d, made_in, env in zip(
            request.key_share_owners, request.key_share_rounds, request.key_share_ciphertexts, strict=True
        ):
            try:
                share = self._open_key_share(st, d, made_in, env, c_sk)
            except ProtocolViolation:
                continue
            key_owners.append(d)
            key_indices.append(share.index)
            key_shares.append(share.share)

        s_sk = load_private_key(st.s_sk)
        seeds = [
            pairwise_mask_key(s_sk, st.s_pks[st.position(d)], run_id=self._run, round=st.round, me=me, peer=d)
            for d in request.seed_requests
        ]

        # Commit.
        st.counted, st.dropped = request.counted, request.dropped
        st.revealed_self.update(self_owners)
        newly = set(key_owners) | set(request.seed_requests)
        st.revealed_key.update(newly)
        known = set(self._revealed)
        for d in sorted(newly):
            fp = fingerprint(st.s_pks[st.position(d)])
            if fp not in known:
                self._revealed.append(fp)
                known.add(fp)
        del self._revealed[:-MAX_REVEALED_FINGERPRINTS]
        return UnmaskResponse(
            run_id=self._run,
            round=st.round,
            node_id=me,
            self_share_owners=tuple(self_owners),
            self_share_indices=(my_index,) * len(self_shares),
            self_shares=tuple(self_shares),
            key_share_owners=tuple(key_owners),
            key_share_indices=tuple(key_indices),
            key_shares=tuple(key_shares),
            seed_peers=request.seed_requests,
            seeds=tuple(seeds),
        )

    # ------------------------------------------------------------------ stage C (malicious mode)
    def confirm_survivors(self, request: ConsistencyRequest) -> ConsistencyResponse:
        """Malicious mode, stage C: sign the round's survivor set ``(C, D)``, once per round.

        Raises
        ------
        ProtocolViolation
            If the request concerns another round or node, the partition is invalid, or
            this node already signed another survivor set for the round.
        """
        if not isinstance(request, ConsistencyRequest):
            raise ProtocolViolation(f"request: expected a ConsistencyRequest, got {type(request).__name__}")
        st = self._round
        if request.run_id != self._run or request.node_id != self._node:
            raise ProtocolViolation("node_check: consistency request for another run or node")
        if st is None or request.round != st.round:
            raise ProtocolViolation(f"round_check: this node did not mask in round {request.round}")
        as_unmask = UnmaskRequest(
            run_id=self._run, round=st.round, node_id=self._node, counted=request.counted, dropped=request.dropped,
            self_share_owners=(), self_share_ciphertexts=(), key_share_owners=(), key_share_rounds=(),
            key_share_ciphertexts=(), seed_requests=(),
        )  # fmt: skip
        self._check_partition(as_unmask, st)
        statement = self._survivors(st, request.counted, request.dropped)
        st.counted, st.dropped, st.signed = request.counted, request.dropped, True
        return ConsistencyResponse(
            run_id=self._run, round=st.round, node_id=self._node, signature=self._identity.sign(statement)
        )

    def _survivors(self, st: _RoundState, counted: tuple[int, ...], dropped: tuple[int, ...]) -> bytes:
        return survivors_statement(
            federation=self._federation, run_id=self._run, round=st.round, counted=counted, dropped=dropped
        )

    def _check_consistency(self, request: UnmaskRequest, st: _RoundState) -> None:
        if not st.signed:
            raise ProtocolViolation(
                f"consistency_check: this node signed no survivor set for round {st.round}; refusing to unmask"
            )
        statement = self._survivors(st, request.counted, request.dropped)
        counted = set(request.counted)
        valid = {
            v for v, sig in zip(request.consistency_signers, request.consistency_signatures, strict=True)
            if v in counted and verify_survivors_signature(
                sig, identity_pk=st.identity_pks[st.position(v)], statement=statement
            )
        }  # fmt: skip
        if len(valid) < st.threshold:
            raise ProtocolViolation(
                f"consistency_check: {len(valid)} valid survivor signatures on this node's view, "
                f"below the threshold {st.threshold}"
            )

    def _open_key_share(
        self, st: _RoundState, d: int, made_in: int, env: bytes, c_sk: X25519PrivateKey
    ) -> SharePlaintext:
        """Open and check one key share of dropped ``d``; raises on any failed check."""
        if made_in >= st.round:
            raise ProtocolViolation(f"key_share_round_check: share of node {d} made in round {made_in}")
        if not st.graph(self._run).adjacent(d, self._node):
            # Only d's neighbours of this round may reveal its key: they are the ones who hold
            # (and withhold) shares of its self-mask seed, so the pigeonhole of section 8 holds.
            raise ProtocolViolation(f"key_share_neighbour_check: node {d} is not this node's neighbour in round {st.round}")
        plain = open_share_with_key(
            env, key=self._share_key(c_sk, st, d, made_in), run_id=self._run, round=made_in, sender=d,
            recipient=self._node, kind="pairwise",
        )  # fmt: skip
        share = SharePlaintext.from_bytes(plain, with_key=True)
        if share.s_pk != st.s_pks[st.position(d)]:
            raise ProtocolViolation(f"key_share_key_check: share of node {d} is of another key")
        if share.use_round != st.round:
            raise ProtocolViolation(
                f"key_share_round_check: share of node {d} is of a key for round {share.use_round}, not {st.round}"
            )
        if st.share_threshold > share.threshold:
            raise ProtocolViolation(
                f"key_share_threshold_check: share of node {d} has threshold {share.threshold} "
                f"< t = {st.share_threshold}"
            )
        return share

    def _check_partition(self, request: UnmaskRequest, st: _RoundState) -> None:
        me, rnd = self._node, st.round
        self_owners = set(request.self_share_owners)
        key_owners = set(request.key_share_owners) | set(request.seed_requests)
        both = sorted(self_owners & key_owners) or sorted(
            (self_owners & st.revealed_key) | (key_owners & st.revealed_self)
        )
        if both:
            raise ProtocolViolation(
                f"double_reveal_check: refusing to reveal both the self-mask share and the mask-key share "
                f"(or seed) of node(s) {both} in round {rnd}"
            )
        counted, dropped = set(request.counted), set(request.dropped)
        if counted & dropped:
            raise ProtocolViolation(f"partition_check: nodes {sorted(counted & dropped)} are both counted and dropped")
        if counted | dropped != set(st.participants):
            raise ProtocolViolation(
                f"partition_check: counted + dropped must be the participants of round {rnd} "
                f"{list(st.participants)}, got {sorted(counted | dropped)}"
            )
        if me not in counted:
            raise ProtocolViolation(f"partition_check: counted does not include this node ({me})")
        if len(counted) < st.threshold:
            raise ProtocolViolation(
                f"threshold_check: {len(counted)} counted nodes, below the threshold {st.threshold}"
            )
        if st.counted is not None and (set(st.counted), set(st.dropped or ())) != (counted, dropped):
            raise ProtocolViolation(f"consistency_check: counted/dropped differ from an earlier request for round {rnd}")
        if not self_owners <= counted:
            raise ProtocolViolation(
                f"partition_check: self-share owners {sorted(self_owners - counted)} are not counted"
            )
        if not key_owners <= dropped:
            raise ProtocolViolation(
                f"partition_check: key shares / seeds asked for {sorted(key_owners - dropped)}, which are not dropped"
            )
        graph = st.graph(self._run)
        neighbourhood = set(graph.neighbourhood(me))
        strangers = sorted((self_owners | set(request.seed_requests)) - neighbourhood)
        if strangers:
            raise ProtocolViolation(f"partition_check: nodes {strangers} are not in this node's neighbourhood")
        if graph.sparse and len(counted & neighbourhood) < st.share_threshold:
            raise ProtocolViolation(
                f"neighbourhood_threshold_check: {len(counted & neighbourhood)} counted nodes in this node's "
                f"neighbourhood, below its threshold {st.share_threshold}"
            )

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Serializable state (values: bytes, int, str, bool, and lists of them).

        Contains private keys: store it only where the node's own secrets may live.
        """
        st = self._round
        return {
            "version": _STATE_VERSION,
            "node_id": self._node,
            "run_id": self._run,
            "organization": self._org,
            "federation": self._federation,
            "identity_fingerprint": self._identity.fingerprint,
            "min_threshold": self._min_t,
            "mode": self._mode,
            "colluding_fraction": self._gamma,
            "dropout_fraction": self._delta,
            "c_sk": self._c_sk or b"",
            "next_s_sk": self._next_s_sk or b"",
            "next_round": self._next_round,
            "next_threshold": self._next_threshold,
            "last_round": -1 if self._last_round is None else self._last_round,
            "revealed_fingerprints": list(self._revealed),
            "c_secret_peer_keys": _pack_keys(self._c_secrets),
            "c_secrets": _pack_keys(self._c_secrets.values()),
            "verified_envelope_keys": _pack_keys(sorted(self._verified_envelope_keys)),
            "has_round": st is not None,
            "round": st.round if st else 0,
            "round_participants": _pack_ids(st.participants if st else ()),
            "round_threshold": st.threshold if st else 0,
            "round_c_pks": _pack_keys(st.c_pks if st else ()),
            "round_s_pks": _pack_keys(st.s_pks if st else ()),
            "round_s_sk": st.s_sk if st else b"",
            "round_identity_pks": _pack_keys(st.identity_pks if st else ()),
            "round_graph_degree": st.graph_degree if st else 0,
            "round_sharing_threshold": st.share_threshold if st else 0,
            "round_signed": bool(st and st.signed),
            "round_fixed": bool(st and st.counted is not None),
            "round_counted": _pack_ids(st.counted or () if st else ()),
            "round_dropped": _pack_ids(st.dropped or () if st else ()),
            "round_revealed_self": _pack_ids(sorted(st.revealed_self) if st else ()),
            "round_revealed_key": _pack_ids(sorted(st.revealed_key) if st else ()),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], *, identity: Identity) -> SecureSumClient:
        """Restore a client saved with :meth:`state_dict`.

        Parameters
        ----------
        state : mapping
            What :meth:`state_dict` returned.
        identity : Identity
            The hospital's identity (kept on its disk, not in the state); it must be the
            one the state was made with.

        Raises
        ------
        ProtocolViolation
            If the state is malformed (names the field) or made with another identity.
        """

        def get(key: str) -> Any:
            return require(state, key, _STATE)

        check_int(get("version"), f"{_STATE}.version", lo=_STATE_VERSION, hi=_STATE_VERSION)
        if get("identity_fingerprint") != identity.fingerprint:
            raise ProtocolViolation(f"{_STATE}.identity_fingerprint: the state was made with another identity")
        client = cls(
            node_id=get("node_id"), run_id=get("run_id"), identity=identity, organization=get("organization"),
            federation=get("federation"), min_threshold=get("min_threshold"), mode=get("mode"),
            colluding_fraction=state.get("colluding_fraction", DEFAULT_COLLUDING_FRACTION),
            dropout_fraction=state.get("dropout_fraction", DEFAULT_DROPOUT_FRACTION),
        )  # fmt: skip
        client._next_round = check_u64(get("next_round"), f"{_STATE}.next_round")
        client._next_threshold = check_int(get("next_threshold"), f"{_STATE}.next_threshold", lo=0)
        for name in ("c_sk", "next_s_sk", "round_s_sk"):
            raw = check_bytes(get(name), f"{_STATE}.{name}")
            if raw and len(raw) != KEY_BYTES:
                raise ProtocolViolation(f"{_STATE}.{name}: expected 0 or {KEY_BYTES} bytes")
        client._c_sk = get("c_sk") or None
        client._next_s_sk = get("next_s_sk") or None
        last = check_int(get("last_round"), f"{_STATE}.last_round", lo=-1)
        client._last_round = None if last == -1 else last
        fps = get("revealed_fingerprints")
        if not isinstance(fps, list) or not all(isinstance(f, str) and len(f) == 64 for f in fps):
            raise ProtocolViolation(f"{_STATE}.revealed_fingerprints: expected a list of 64-char hex strings")
        client._revealed = list(fps)
        peer_keys = _unpack_keys(state.get("c_secret_peer_keys", b""), f"{_STATE}.c_secret_peer_keys", KEY_BYTES)
        secrets_ = _unpack_keys(state.get("c_secrets", b""), f"{_STATE}.c_secrets", KEY_BYTES)
        if len(peer_keys) != len(secrets_):
            raise ProtocolViolation(f"{_STATE}.c_secrets: expected one secret per peer key")
        client._c_secrets = dict(zip(peer_keys, secrets_, strict=True)) if client._c_sk is not None else {}
        client._verified_envelope_keys = set(
            _unpack_keys(state.get("verified_envelope_keys", b""), f"{_STATE}.verified_envelope_keys", 32)
        )
        has_round = get("has_round")
        if not isinstance(has_round, bool):
            raise ProtocolViolation(f"{_STATE}.has_round: expected a bool")
        if has_round:
            participants = _unpack_ids(get("round_participants"), f"{_STATE}.round_participants")
            share_index(client._node, participants)  # sorted and contains this node
            st = _RoundState(
                round=check_u64(get("round"), f"{_STATE}.round"),
                participants=participants,
                threshold=check_int(get("round_threshold"), f"{_STATE}.round_threshold", lo=2, hi=len(participants)),
                c_pks=_unpack_keys(get("round_c_pks"), f"{_STATE}.round_c_pks", KEY_BYTES),
                s_pks=_unpack_keys(get("round_s_pks"), f"{_STATE}.round_s_pks", KEY_BYTES),
                s_sk=check_bytes(get("round_s_sk"), f"{_STATE}.round_s_sk", length=KEY_BYTES),
                identity_pks=_unpack_keys(get("round_identity_pks"), f"{_STATE}.round_identity_pks", 32),
                signed=get("round_signed") is True,
                graph_degree=check_int(state.get("round_graph_degree", 0), f"{_STATE}.round_graph_degree", lo=0),
                sharing_threshold=check_int(
                    state.get("round_sharing_threshold", 0), f"{_STATE}.round_sharing_threshold", lo=0
                ),
            )
            if not len(st.c_pks) == len(st.s_pks) == len(st.identity_pks) == len(participants):
                raise ProtocolViolation(f"{_STATE}.round_*: parallel lists differ in length")
            fixed = get("round_fixed")
            if not isinstance(fixed, bool):
                raise ProtocolViolation(f"{_STATE}.round_fixed: expected a bool")
            if fixed:
                st.counted = _unpack_ids(get("round_counted"), f"{_STATE}.round_counted")
                st.dropped = _unpack_ids(get("round_dropped"), f"{_STATE}.round_dropped")
            st.revealed_self = set(_unpack_ids(get("round_revealed_self"), f"{_STATE}.round_revealed_self"))
            st.revealed_key = set(_unpack_ids(get("round_revealed_key"), f"{_STATE}.round_revealed_key"))
            client._round = st
        return client
