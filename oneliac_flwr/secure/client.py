"""Client side of the secure-sum protocol: a transport-free, persistable state machine.

One instance per node and run. Stages (``docs/secure-sum.md`` section 6):
``advertise_keys()`` (stage K, when asked), ``mask()`` (stage M), ``unmask()`` (stage U).
Between messages the adapter saves ``state_dict()`` (bytes/int/str/bool and lists of
them) and restores it with :meth:`SecureSumClient.from_state_dict`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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
from .envelope import open_share, seal_share
from .keys import (
    KEY_BYTES,
    fingerprint,
    generate_private_key,
    load_private_key,
    pairwise_mask_key,
    private_bytes,
    public_bytes,
    self_mask_key,
)
from .masks import apply_masks, pairwise_sign
from .messages import AdvertiseKeys, MaskedInput, RoundSetup, UnmaskRequest, UnmaskResponse
from .sharing import SharePlaintext, share_index, share_many

__all__ = ["MAX_REVEALED_FINGERPRINTS", "SecureSumClient"]

#: How many fingerprints of revealed peer keys a client remembers (newest kept).
MAX_REVEALED_FINGERPRINTS = 4096
_STATE = "client_state"
_STATE_VERSION = 1


@dataclass
class _RoundState:
    """What a client keeps from stage M to answer stage U of the same round."""

    round: int
    participants: tuple[int, ...]
    threshold: int
    c_pks: tuple[bytes, ...]
    s_pks: tuple[bytes, ...]
    s_sk: bytes
    counted: tuple[int, ...] | None = None
    dropped: tuple[int, ...] | None = None
    revealed_self: set[int] = field(default_factory=set)
    revealed_key: set[int] = field(default_factory=set)

    def position(self, node: int) -> int:
        return self.participants.index(node)


class SecureSumClient:
    """Secure-sum participant (one node, one run).

    Parameters
    ----------
    node_id : int
        This node's Flower node id (``[0, 2^64)``).
    run_id : int
        Flower run id (``[0, 2^64)``).

    Notes
    -----
    Holds a long-lived X25519 envelope key pair ``c`` and the single-use mask key pair
    ``s`` it will use in its next round. Every method either completes or raises
    :class:`~oneliac_flwr.errors.ProtocolViolation` with the state unchanged.
    """

    def __init__(self, *, node_id: int, run_id: int) -> None:
        self._node = check_u64(node_id, "node_id")
        self._run = check_u64(run_id, "run_id")
        self._c_sk: bytes | None = None
        self._next_s_sk: bytes | None = None
        self._last_round: int | None = None
        self._round: _RoundState | None = None
        self._revealed: list[str] = []

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
    def identity_fingerprint(self) -> str | None:
        """``fingerprint(c_pk)``: the value peers pin for this node (``None`` before stage K)."""
        if self._c_sk is None:
            return None
        return fingerprint(public_bytes(load_private_key(self._c_sk)))

    @property
    def revealed_fingerprints(self) -> tuple[str, ...]:
        """Fingerprints of peer mask keys whose shares or seeds this node revealed."""
        return tuple(self._revealed)

    # ------------------------------------------------------------------ stage K
    def advertise_keys(self, *, rotate_envelope_key: bool = False) -> AdvertiseKeys:
        """Stage K: make a fresh mask key pair (and an envelope pair if none) and announce them.

        Parameters
        ----------
        rotate_envelope_key : bool
            Also replace the envelope key pair ``c``. Shares addressed to the old key
            become unreadable (the coordinator discards them).

        Returns
        -------
        AdvertiseKeys
            The public keys ``c_pk`` and ``s_pk``.
        """
        c_sk = self._c_sk
        if c_sk is None or rotate_envelope_key:
            c_sk = private_bytes(generate_private_key())
        s_sk = private_bytes(generate_private_key())
        self._c_sk, self._next_s_sk = c_sk, s_sk
        return AdvertiseKeys(
            run_id=self._run,
            node_id=self._node,
            c_pk=public_bytes(load_private_key(c_sk)),
            s_pk=public_bytes(load_private_key(s_sk)),
        )

    # ------------------------------------------------------------------ stage M
    def mask(
        self,
        update: np.ndarray,
        *,
        weight: float,
        setup: RoundSetup,
        expected_fingerprints: Mapping[int, str] | None = None,
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
        expected_fingerprints : mapping of int to str or None
            Pinned ``fingerprint(c_pk)`` per node. If given, every other participant must
            have a pin and match it.

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
            raise ProtocolViolation(f"round_setup.run_id: expected {run}, got {setup.run_id}")
        if me not in setup.participants:
            raise ProtocolViolation(f"round_setup.participants: this node ({me}) is not listed")
        if self._last_round is not None and rnd <= self._last_round:
            raise ProtocolViolation(
                f"round_setup.round: {rnd} is not after the last round this node masked ({self._last_round})"
            )
        if self._c_sk is None or self._next_s_sk is None:
            raise ProtocolViolation(f"node {me} holds no keys: it must advertise keys (stage K) first")
        pos = setup.participants.index(me)
        self._check_own_keys(setup, pos, c_sk_raw=self._c_sk, s_sk_raw=self._next_s_sk)
        self._check_peer_keys(setup, expected_fingerprints)
        arr = np.asarray(update)
        if arr.shape != (setup.length,):
            raise ProtocolViolation(f"update: expected shape ({setup.length},), got {arr.shape}")
        masked = encode(arr, weight=weight, spec=setup.spec)

        s_sk = load_private_key(self._next_s_sk)
        seed = os.urandom(KEY_BYTES)
        masks = [(self_mask_key(seed, run_id=run, round=rnd, node=me), 1)]
        for v, s_pk in zip(setup.participants, setup.s_pks, strict=True):
            if v != me:
                key = pairwise_mask_key(s_sk, s_pk, run_id=run, round=rnd, me=me, peer=v)
                masks.append((key, pairwise_sign(me, v)))
        apply_masks(masked, masks)

        next_s = private_bytes(generate_private_key())
        next_s_pk = public_bytes(load_private_key(next_s))
        n, t = len(setup.participants), setup.threshold
        seed_shares, key_shares = share_many([seed, next_s], threshold=t, n=n)
        c_sk = load_private_key(self._c_sk)
        self_envs: list[bytes] = []
        key_envs: list[bytes] = []
        for v, c_pk, (i_b, sh_b), (i_k, sh_k) in zip(
            setup.participants, setup.c_pks, seed_shares, key_shares, strict=True
        ):
            common: dict[str, Any] = {
                "sender_c_sk": c_sk, "recipient_c_pk": c_pk, "run_id": run, "round": rnd,
                "sender": me, "recipient": v,
            }  # fmt: skip
            self_envs.append(seal_share(SharePlaintext(i_b, sh_b).to_bytes(), kind="self", **common))
            key_envs.append(seal_share(SharePlaintext(i_k, sh_k, next_s_pk).to_bytes(), kind="pairwise", **common))
        masked.setflags(write=False)
        message = MaskedInput(
            run_id=run,
            round=rnd,
            node_id=me,
            bits=setup.bits,
            length=setup.length,
            next_s_pk=next_s_pk,
            share_recipients=setup.participants,
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
        )
        self._next_s_sk = next_s
        self._last_round = rnd
        return message

    def _check_own_keys(self, setup: RoundSetup, pos: int, *, c_sk_raw: bytes, s_sk_raw: bytes) -> None:
        me = self._node
        own_c = public_bytes(load_private_key(c_sk_raw))
        if setup.c_pks[pos] != own_c:
            raise ProtocolViolation(
                f"round_setup.c_pks: lists {fingerprint(setup.c_pks[pos])[:16]}... for node {me}, "
                f"which holds {fingerprint(own_c)[:16]}..."
            )
        own_s = public_bytes(load_private_key(s_sk_raw))
        listed = setup.s_pks[pos]
        if listed != own_s:
            prev = self._round
            if prev is not None and me in prev.participants and prev.s_pks[prev.position(me)] == listed:
                raise ProtocolViolation(
                    f"round_setup.s_pks: lists for node {me} the mask key it already used in round "
                    f"{prev.round}; a mask key is used once: the coordinator must use the key announced "
                    "since or ask for keys (stage K)"
                )
            raise ProtocolViolation(
                f"round_setup.s_pks: lists for node {me} a mask key it does not hold "
                f"({fingerprint(listed)[:16]}...); it must advertise keys (stage K)"
            )

    def _check_peer_keys(self, setup: RoundSetup, pins: Mapping[int, str] | None) -> None:
        me = self._node
        revealed = set(self._revealed)
        prev = self._round
        prev_keys = dict(zip(prev.participants, prev.s_pks, strict=True)) if prev is not None else {}
        for v, c_pk, s_pk in zip(setup.participants, setup.c_pks, setup.s_pks, strict=True):
            if pins is not None:
                pinned = pins.get(v)
                if pinned is None and v != me:
                    raise ProtocolViolation(f"expected_fingerprints: no pinned fingerprint for participant {v}")
                actual = fingerprint(c_pk)
                if pinned is not None and pinned != actual:
                    raise ProtocolViolation(
                        f"round_setup.c_pks: node {v} presents key fingerprint {actual}, pinned {pinned}"
                    )
            if v == me:
                continue
            s_fp = fingerprint(s_pk)
            if s_fp in revealed:
                raise ProtocolViolation(
                    f"round_setup.s_pks: node {v}'s mask key {s_fp[:16]}... was revealed (share or seed) "
                    f"by this node earlier; refusing to mask with it: node {v} must be re-keyed (stage K)"
                )
            if prev_keys.get(v) == s_pk:
                raise ProtocolViolation(
                    f"round_setup.s_pks: node {v} reuses the mask key it had in round {prev.round if prev else '?'}; "
                    "mask keys are single-use"
                )

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
            raise ProtocolViolation(f"unmask_request.run_id: expected {self._run}, got {request.run_id}")
        if request.node_id != me:
            raise ProtocolViolation(f"unmask_request.node_id: addressed to {request.node_id}, this node is {me}")
        if st is None or request.round != st.round:
            last = "none" if st is None else str(st.round)
            raise ProtocolViolation(
                f"unmask_request.round: this node did not mask in round {request.round} "
                f"(its last masked round is {last}); refusing to reveal anything about it"
            )
        self._check_partition(request, st)
        if self._c_sk is None:
            raise ProtocolViolation(f"node {me} lost its envelope key")
        c_sk = load_private_key(self._c_sk)
        my_index = st.position(me) + 1

        self_shares: list[bytes] = []
        for w, env in zip(request.self_share_owners, request.self_share_ciphertexts, strict=True):
            plain = open_share(
                env, recipient_c_sk=c_sk, sender_c_pk=st.c_pks[st.position(w)], run_id=self._run,
                round=st.round, sender=w, recipient=me, kind="self",
            )  # fmt: skip
            share = SharePlaintext.from_bytes(plain, with_key=False)
            if share.index != my_index:
                raise ProtocolViolation(f"self-mask share of node {w}: index {share.index}, expected {my_index}")
            self_shares.append(share.share)

        key_indices: list[int] = []
        key_shares: list[bytes] = []
        for d, made_in, env in zip(
            request.key_share_owners, request.key_share_rounds, request.key_share_ciphertexts, strict=True
        ):
            if made_in >= st.round:
                raise ProtocolViolation(
                    f"unmask_request.key_share_rounds: key share of node {d} made in round {made_in}; "
                    f"only shares made before round {st.round} can be of the key used in it"
                )
            plain = open_share(
                env, recipient_c_sk=c_sk, sender_c_pk=st.c_pks[st.position(d)], run_id=self._run,
                round=made_in, sender=d, recipient=me, kind="pairwise",
            )  # fmt: skip
            share = SharePlaintext.from_bytes(plain, with_key=True)
            used = st.s_pks[st.position(d)]
            if share.s_pk != used:
                raise ProtocolViolation(
                    f"key share of node {d}: shares key {fingerprint(share.s_pk or b'')[:16]}..., but node {d} "
                    f"masked round {st.round} with {fingerprint(used)[:16]}...; refusing"
                )
            key_indices.append(share.index)
            key_shares.append(share.share)

        s_sk = load_private_key(st.s_sk)
        seeds = [
            pairwise_mask_key(s_sk, st.s_pks[st.position(d)], run_id=self._run, round=st.round, me=me, peer=d)
            for d in request.seed_requests
        ]

        # Commit.
        st.counted, st.dropped = request.counted, request.dropped
        st.revealed_self.update(request.self_share_owners)
        newly = set(request.key_share_owners) | set(request.seed_requests)
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
            self_share_owners=request.self_share_owners,
            self_share_indices=(my_index,) * len(self_shares),
            self_shares=tuple(self_shares),
            key_share_owners=request.key_share_owners,
            key_share_indices=tuple(key_indices),
            key_shares=tuple(key_shares),
            seed_peers=request.seed_requests,
            seeds=tuple(seeds),
        )

    def _check_partition(self, request: UnmaskRequest, st: _RoundState) -> None:
        me, rnd = self._node, st.round
        self_owners = set(request.self_share_owners)
        key_owners = set(request.key_share_owners) | set(request.seed_requests)
        both = sorted(self_owners & key_owners) or sorted(
            (self_owners & st.revealed_key) | (key_owners & st.revealed_self)
        )
        if both:
            raise ProtocolViolation(
                f"unmask_request: refusing to reveal both the self-mask share and the mask-key share "
                f"(or seed) of node(s) {both} in round {rnd}"
            )
        counted, dropped = set(request.counted), set(request.dropped)
        if counted & dropped:
            raise ProtocolViolation(f"unmask_request: nodes {sorted(counted & dropped)} are both counted and dropped")
        if counted | dropped != set(st.participants):
            raise ProtocolViolation(
                f"unmask_request: counted + dropped must be the participants of round {rnd} "
                f"{list(st.participants)}, got {sorted(counted | dropped)}"
            )
        if me not in counted:
            raise ProtocolViolation(f"unmask_request.counted: does not include this node ({me})")
        if len(counted) < st.threshold:
            raise ProtocolViolation(
                f"unmask_request.counted: {len(counted)} counted nodes, below the threshold {st.threshold}"
            )
        if st.counted is not None and (set(st.counted), set(st.dropped or ())) != (counted, dropped):
            raise ProtocolViolation(f"unmask_request: counted/dropped differ from an earlier request for round {rnd}")
        if not self_owners <= counted:
            raise ProtocolViolation(
                f"unmask_request.self_share_owners: {sorted(self_owners - counted)} are not counted"
            )
        if not key_owners <= dropped:
            raise ProtocolViolation(
                f"unmask_request: key shares / seeds asked for {sorted(key_owners - dropped)}, which are not dropped"
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
            "c_sk": self._c_sk or b"",
            "next_s_sk": self._next_s_sk or b"",
            "last_round": -1 if self._last_round is None else self._last_round,
            "revealed_fingerprints": list(self._revealed),
            "has_round": st is not None,
            "round": st.round if st else 0,
            "round_participants": list(st.participants) if st else [],
            "round_threshold": st.threshold if st else 0,
            "round_c_pks": list(st.c_pks) if st else [],
            "round_s_pks": list(st.s_pks) if st else [],
            "round_s_sk": st.s_sk if st else b"",
            "round_fixed": bool(st and st.counted is not None),
            "round_counted": list(st.counted or ()) if st else [],
            "round_dropped": list(st.dropped or ()) if st else [],
            "round_revealed_self": sorted(st.revealed_self) if st else [],
            "round_revealed_key": sorted(st.revealed_key) if st else [],
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> SecureSumClient:
        """Restore a client saved with :meth:`state_dict`.

        Raises
        ------
        ProtocolViolation
            If the state is malformed (names the field).
        """

        def get(key: str) -> Any:
            return require(state, key, _STATE)

        check_int(get("version"), f"{_STATE}.version", lo=_STATE_VERSION, hi=_STATE_VERSION)
        client = cls(node_id=get("node_id"), run_id=get("run_id"))
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
        has_round = get("has_round")
        if not isinstance(has_round, bool):
            raise ProtocolViolation(f"{_STATE}.has_round: expected a bool")
        if has_round:
            participants = check_u64_tuple(get("round_participants"), f"{_STATE}.round_participants")
            share_index(client._node, participants)  # sorted and contains this node
            st = _RoundState(
                round=check_u64(get("round"), f"{_STATE}.round"),
                participants=participants,
                threshold=check_int(get("round_threshold"), f"{_STATE}.round_threshold", lo=2, hi=len(participants)),
                c_pks=check_bytes_tuple(get("round_c_pks"), f"{_STATE}.round_c_pks", length=KEY_BYTES),
                s_pks=check_bytes_tuple(get("round_s_pks"), f"{_STATE}.round_s_pks", length=KEY_BYTES),
                s_sk=check_bytes(get("round_s_sk"), f"{_STATE}.round_s_sk", length=KEY_BYTES),
            )
            if not len(st.c_pks) == len(st.s_pks) == len(participants):
                raise ProtocolViolation(f"{_STATE}.round_*: parallel lists differ in length")
            fixed = get("round_fixed")
            if not isinstance(fixed, bool):
                raise ProtocolViolation(f"{_STATE}.round_fixed: expected a bool")
            if fixed:
                st.counted = check_u64_tuple(get("round_counted"), f"{_STATE}.round_counted")
                st.dropped = check_u64_tuple(get("round_dropped"), f"{_STATE}.round_dropped")
            st.revealed_self = set(check_u64_tuple(get("round_revealed_self"), f"{_STATE}.round_revealed_self"))
            st.revealed_key = set(check_u64_tuple(get("round_revealed_key"), f"{_STATE}.round_revealed_key"))
            client._round = st
        return client
