"""Coordinator side of the secure-sum protocol: a transport-free state machine.

Per round (``docs/secure-sum.md`` section 6)::

    needs_keys(S) -> register_keys(...)            # stage K, only if someone needs keys
    round_setup(...) -> receive_masked(...)        # stage M
    unmask_requests() -> receive_unmask(...)       # stage U
    finalize() -> AggregateResult

The coordinator also keeps, between rounds, the encrypted key shares (envelopes it
cannot open) of every node's next mask key: the newest sharing per owner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from oneliac_flwr.errors import ConfigError, ProtocolViolation, RoundFailed

from ._fields import check_bytes, check_int, check_u64, check_u64_tuple, require
from .encoding import RingSpec, decode_sum, error_bound
from .identity import ANY_ROUND, survivors_statement, verify_key_signature, verify_survivors_signature
from .keys import load_private_key, pairwise_mask_key, public_bytes, self_mask_key
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
from .sharing import combine_shares, reconstruct_many

__all__ = ["AggregateResult", "SecureSumServer"]

Stage = Literal["idle", "masking", "unmasking"]
_STATE = "server_state"
_STATE_VERSION = 1
#: Spare holders per secret that ``unmask_requests(subset=True)`` asks beyond the threshold.
UNMASK_MARGIN = 2


@dataclass(frozen=True, eq=False, kw_only=True)
class AggregateResult:
    """Outcome of one secure-sum round.

    Parameters
    ----------
    weighted_sum : numpy.ndarray
        float64 ``sum_{w in counted} weight_w * x_w`` (divide by the total weight, which
        the adapter knows, for the mean).
    counted : tuple of int
        Nodes whose updates are in the sum.
    dropped : tuple of int
        Participants whose masked input was not accepted.
    recovered_dropouts : int
        Number of dropped nodes whose masks were removed (``len(dropped)``).
    recovered_from_seeds : tuple of int
        Dropped nodes whose masks were removed with per-round seeds (not key shares).
    silent_in_unmask : tuple of int
        Counted nodes that did not answer stage U (still counted).
    error_bound : float
        Bound on ``|weighted_sum - exact|`` per coordinate.
    """

    weighted_sum: np.ndarray
    counted: tuple[int, ...]
    dropped: tuple[int, ...]
    recovered_dropouts: int
    recovered_from_seeds: tuple[int, ...]
    silent_in_unmask: tuple[int, ...]
    error_bound: float


@dataclass
class _Registration:
    organization: str
    federation: str
    identity_pk: bytes
    c_pk: bytes
    c_sig: bytes
    s_pk: bytes | None  # None: consumed or invalidated, the node must re-advertise
    s_sig: bytes = b""
    s_round: int = 0  # the single round s_pk may be used in
    s_threshold: int | None = None  # threshold of the sharing of s_sk (None: never shared)


@dataclass
class _KeySharing:
    """Envelopes of the shares of one owner's next mask key."""

    s_pk: bytes
    round: int
    threshold: int
    holders: dict[int, tuple[int, bytes]]  # holder -> (share index, envelope)


@dataclass
class _Round:
    setup: RoundSetup
    total: np.ndarray
    accepted: set[int] = field(default_factory=set)
    self_envelopes: dict[int, dict[int, bytes]] = field(default_factory=dict)  # owner -> recipient -> envelope
    requests: dict[int, UnmaskRequest] | None = None
    counted: tuple[int, ...] = ()
    dropped: tuple[int, ...] = ()
    key_plan: dict[int, _KeySharing] = field(default_factory=dict)
    seed_plan: tuple[int, ...] = ()
    responses: dict[int, UnmaskResponse] = field(default_factory=dict)
    closed: bool = False  # stage M closed: counted and dropped are fixed
    signatures: dict[int, bytes] = field(default_factory=dict)  # malicious mode: survivor-set signatures
    selective: bool = False  # stage U asks only the survivors needed (unmask_requests(subset=True))

    def index_of(self, node: int) -> int:
        return self.setup.participants.index(node) + 1

    def s_pk_of(self, node: int) -> bytes:
        return self.setup.s_pks[self.setup.participants.index(node)]


class SecureSumServer:
    """Secure-sum coordinator for one run.

    Parameters
    ----------
    run_id : int
        Flower run id.
    spec : RingSpec
        Ring of the run (``plan_ring``).
    length : int
        Number of ring elements per masked vector (the flattened model size).
    mode : {"semi-honest", "malicious"}
        ``malicious`` adds stage C (consistency check) between stages M and U: unmask
        requests go only to survivors that signed the survivor set, with the signatures.
    """

    def __init__(self, *, run_id: int, spec: RingSpec, length: int, mode: str = "semi-honest") -> None:
        if not isinstance(spec, RingSpec):
            raise ConfigError("spec", f"expected a RingSpec, got {type(spec).__name__}")
        if not isinstance(run_id, int) or isinstance(run_id, bool) or not 0 <= run_id < 2**64:
            raise ConfigError("run_id", f"expected an integer in [0, 2^64), got {run_id!r}")
        if not isinstance(length, int) or isinstance(length, bool) or length < 1:
            raise ConfigError("length", f"expected an integer >= 1, got {length!r}")
        if mode not in ("semi-honest", "malicious"):
            raise ConfigError("secure_sum.mode", f"expected 'semi-honest' or 'malicious', got {mode!r}")
        self._mode = mode
        self._run = run_id
        self._length = length
        self._spec = spec
        self._registry: dict[int, _Registration] = {}
        self._sharings: dict[int, _KeySharing] = {}
        self._round: _Round | None = None
        self._last_round: int | None = None

    # ------------------------------------------------------------------ properties
    @property
    def spec(self) -> RingSpec:
        """The ring."""
        return self._spec

    @property
    def open_setup(self) -> RoundSetup | None:
        """The open round's setup (``None`` when no round is open)."""
        return None if self._round is None else self._round.setup

    @property
    def stage(self) -> Stage:
        """``idle`` (no open round), ``masking`` (stage M) or ``unmasking`` (stage U)."""
        if self._round is None:
            return "idle"
        return "masking" if self._round.requests is None else "unmasking"

    def key_share_holders(self, owner: int) -> tuple[int, ...]:
        """Holders of stored key-share envelopes of ``owner``'s registered mask key."""
        reg = self._registry.get(owner)
        sharing = self._sharings.get(owner)
        if reg is None or sharing is None or sharing.s_pk != reg.s_pk:
            return ()
        return tuple(sorted(sharing.holders))

    # ------------------------------------------------------------------ stage K
    def needs_keys(
        self, participants: Sequence[int], *, round: int | None = None, threshold: int | None = None
    ) -> list[int]:
        """Participants without a mask key usable in ``round`` with ``threshold`` (they run stage K).

        Parameters
        ----------
        participants : sequence of int
            Candidate participants.
        round : int, optional
            The round about to start: a key bound to any other round is not usable.
        threshold : int, optional
            The round's threshold: a key whose sharing has a lower threshold is not usable
            (its owner and holders would refuse it).

        Returns
        -------
        list of int
            Sorted node ids.
        """
        nodes = check_u64_tuple(list(participants), "participants")
        return sorted(n for n in nodes if not self._usable(n, round=round, threshold=threshold))

    def _usable(self, node: int, *, round: int | None, threshold: int | None) -> bool:
        reg = self._registry.get(node)
        if reg is None or reg.s_pk is None:
            return False
        if round is not None and reg.s_round != round:
            return False
        return threshold is None or reg.s_threshold is None or threshold <= reg.s_threshold

    def register_keys(self, node: int, message: AdvertiseKeys) -> None:
        """Record a node's advertised keys.

        Its stored sharing (of an older key) is discarded; if its envelope key changed,
        so are the envelopes addressed to it. Both signatures are verified here, so that a
        node with a bad announcement is left out (not the whole round refused by peers).

        Raises
        ------
        ProtocolViolation
            If the message is not for this run or node, a signature does not verify, or
            another node already speaks for the same organization with another identity.
        """
        check_u64(node, "node")
        if not isinstance(message, AdvertiseKeys):
            raise ProtocolViolation(f"message: expected AdvertiseKeys, got {type(message).__name__}")
        if message.run_id != self._run:
            raise ProtocolViolation(f"{message.TAG}.run_id: expected {self._run}, got {message.run_id}")
        if message.node_id != node:
            raise ProtocolViolation(f"{message.TAG}.node_id: {message.node_id} sent by node {node}")
        signer = {
            "identity_pk": message.identity_pk, "federation": message.federation,
            "organization": message.organization, "run_id": self._run,
        }  # fmt: skip
        verify_key_signature(message.c_pk_signature, kind="envelope", round=ANY_ROUND, public_key=message.c_pk, **signer)
        verify_key_signature(message.s_pk_signature, kind="mask", round=message.round, public_key=message.s_pk, **signer)
        for other, reg in list(self._registry.items()):
            if other != node and reg.organization == message.organization:
                if reg.identity_pk != message.identity_pk:
                    raise ProtocolViolation(
                        f"{message.TAG}.organization: {message.organization!r} is already node {other}'s"
                    )
                self.forget(other)  # the same hospital came back under a new node id
        old = self._registry.get(node)
        if old is not None and old.c_pk != message.c_pk:
            for sharing in self._sharings.values():
                sharing.holders.pop(node, None)
        self._sharings.pop(node, None)
        self._registry[node] = _Registration(
            organization=message.organization,
            federation=message.federation,
            identity_pk=message.identity_pk,
            c_pk=message.c_pk,
            c_sig=message.c_pk_signature,
            s_pk=message.s_pk,
            s_sig=message.s_pk_signature,
            s_round=message.round,
        )

    def organization_of(self, node: int) -> str | None:
        """The organization named in ``node``'s signed key advertisement, if it sent one."""
        reg = self._registry.get(node)
        return reg.organization if reg is not None else None

    def forget(self, node: int) -> None:
        """Drop every key of ``node`` and every share envelope addressed to it."""
        self._registry.pop(node, None)
        self._sharings.pop(node, None)
        for sharing in self._sharings.values():
            sharing.holders.pop(node, None)

    def invalidate_keys(self, node: int) -> None:
        """Force ``node`` to re-advertise keys before its next round."""
        reg = self._registry.get(check_u64(node, "node"))
        if reg is not None:
            reg.s_pk = None
        self._sharings.pop(node, None)

    # ------------------------------------------------------------------ stage M
    def round_setup(
        self,
        *,
        round: int,
        participants: Sequence[int],
        threshold: int,
        graph_degree: int = 0,
        sharing_threshold: int | None = None,
    ) -> RoundSetup:
        """Open a round: build the setup sent to every participant.

        Every listed mask key is consumed from now on. An open round is closed first.

        Parameters
        ----------
        round : int
            Server round, greater than every earlier one.
        participants : sequence of int
            Nodes with registered keys (after stage K).
        threshold : int
            ``t``, with ``2 <= t``: the fewest counted nodes the round may unmask.
        graph_degree : int
            0 (default): complete graph. Else the even degree of the sparse sharing graph
            (:func:`~oneliac_flwr.secure.graph.plan_graph`).
        sharing_threshold : int, optional
            Threshold of every sharing of the round (per neighbourhood for a sparse graph);
            default ``threshold``. Keys are checked against it.

        Raises
        ------
        ConfigError
            If ``threshold < 2`` or there are more participants than ``max_participants``.
        ProtocolViolation
            If the round is not new or a participant has no key usable in this round with
            this threshold.
        RoundFailed
            If fewer than ``threshold`` participants remain.
        """
        if self._round is not None:
            self._close()
        check_u64(round, "round")
        nodes = tuple(sorted(check_u64_tuple(list(participants), "participants")))
        if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold < 2:
            raise ConfigError("threshold", f"expected an integer >= 2, got {threshold!r}")
        if len(nodes) > self._spec.max_participants:
            raise ConfigError(
                "max_participants",
                f"{len(nodes)} participants exceed the ring's bound {self._spec.max_participants}",
            )
        if self._last_round is not None and round <= self._last_round:
            raise ProtocolViolation(f"round: {round} is not after the last round {self._last_round}")
        share_t = threshold if sharing_threshold is None else sharing_threshold
        missing = self.needs_keys(nodes, round=round, threshold=share_t)
        if missing:
            raise ProtocolViolation(
                f"participants: nodes {missing} have no key usable in round {round} with threshold {share_t}; "
                "run stage K first"
            )
        if len(nodes) < threshold:
            raise RoundFailed(f"round {round}: {len(nodes)} participants, below the threshold {threshold}")
        spec = self._spec
        setup = RoundSetup(
            run_id=self._run,
            round=round,
            threshold=threshold,
            length=self._length,
            bits=spec.bits,
            frac_bits=spec.frac_bits,
            clip_bound=spec.clip_bound,
            weight_bound=spec.weight_bound,
            max_participants=spec.max_participants,
            participants=nodes,
            c_pks=tuple(self._registry[n].c_pk for n in nodes),
            s_pks=tuple(self._registry[n].s_pk or b"" for n in nodes),
            organizations=tuple(self._registry[n].organization for n in nodes),
            identity_pks=tuple(self._registry[n].identity_pk for n in nodes),
            c_pk_signatures=tuple(self._registry[n].c_sig for n in nodes),
            s_pk_signatures=tuple(self._registry[n].s_sig for n in nodes),
            graph_degree=graph_degree,
            sharing_threshold=share_t,
        )
        _ = setup.graph  # build (and check) the graph once, before any key is consumed
        for n in nodes:
            self._registry[n].s_pk = None  # consumed: single-use mask keys
        self._round = _Round(setup=setup, total=np.zeros(self._length, dtype=spec.dtype))
        self._last_round = round
        return setup

    def receive_masked(self, node: int, message: MaskedInput) -> None:
        """Accept a masked input (stage M).

        Raises
        ------
        ProtocolViolation
            If it arrives outside stage M, twice, from a non-participant, or has a wrong
            run, round, node, ring, dtype, length, recipient list or key. The node then
            counts as dropped.
        """
        rnd = self._open("masked input")
        setup, tag = rnd.setup, MaskedInput.TAG
        if not isinstance(message, MaskedInput):
            raise ProtocolViolation(f"message: expected MaskedInput, got {type(message).__name__}")
        if rnd.closed:
            raise ProtocolViolation(f"{tag}: node {node}'s input arrived after stage M closed; rejected")
        if node not in setup.participants:
            raise ProtocolViolation(f"{tag}: node {node} is not a participant of round {setup.round}")
        if node in rnd.accepted:
            raise ProtocolViolation(f"{tag}: node {node} already sent its input for round {setup.round}")
        expected = {"run_id": self._run, "round": setup.round, "node_id": node, "bits": setup.bits}
        for name, value in expected.items():
            if getattr(message, name) != value:
                raise ProtocolViolation(f"{tag}.{name}: expected {value}, got {getattr(message, name)}")
        masked = message.masked
        if masked.dtype != self._spec.dtype:
            raise ProtocolViolation(f"{tag}.masked: expected dtype {self._spec.dtype}, got {masked.dtype}")
        if masked.shape != (self._length,):
            raise ProtocolViolation(f"{tag}.masked: expected shape ({self._length},), got {masked.shape}")
        neighbourhood = setup.graph.neighbourhood(node)
        if message.share_recipients != neighbourhood:
            raise ProtocolViolation(f"{tag}.share_recipients: expected the participants of node {node}'s neighbourhood {list(neighbourhood)}")
        reg = self._registry[node]
        if message.next_s_pk in (rnd.s_pk_of(node), reg.c_pk):
            raise ProtocolViolation(f"{tag}.next_s_pk: must be a fresh key")
        verify_key_signature(
            message.next_s_pk_signature, identity_pk=reg.identity_pk, federation=reg.federation,
            organization=reg.organization, run_id=self._run, kind="mask", round=setup.round + 1,
            public_key=message.next_s_pk,
        )  # fmt: skip
        np.add(rnd.total, masked, out=rnd.total)
        rnd.accepted.add(node)
        rnd.self_envelopes[node] = dict(zip(neighbourhood, message.self_share_ciphertexts, strict=True))
        reg.s_pk, reg.s_sig = message.next_s_pk, message.next_s_pk_signature
        reg.s_round, reg.s_threshold = setup.round + 1, setup.sharing_threshold
        self._sharings[node] = _KeySharing(
            s_pk=message.next_s_pk,
            round=setup.round,
            threshold=setup.sharing_threshold,
            holders={
                v: (rnd.index_of(v), env)
                for v, env in zip(neighbourhood, message.key_share_ciphertexts, strict=True)
            },
        )

    # ------------------------------------------------------------------ stage U
    def unmask_requests(self, *, subset: bool = False, margin: int = UNMASK_MARGIN) -> dict[int, UnmaskRequest]:
        """Close stage M and build the unmask requests.

        Parameters
        ----------
        subset : bool
            ``False`` (default): one request per counted node (in malicious mode, per
            signer). ``True``: only to enough of them that every secret to recover (each
            counted node's self-mask seed, each dropped node's mask key) has its threshold
            of holders among the recipients plus ``margin`` spare holders where there are
            that many, and every counted neighbour of a dropped node recovered from seeds.
            The requests themselves are the same as with ``subset=False``, so fewer
            recipients reveal less, never more. If some recipients stay silent, call
            :meth:`further_unmask_requests` after collecting the responses.
        margin : int
            Spare holders asked per secret beyond its threshold (``subset=True`` only).

        Returns
        -------
        dict of int to UnmaskRequest
            Keyed by recipient. A repeated call returns every request built so far.

        Raises
        ------
        ConfigError
            If ``margin`` is not an integer ``>= 0``.
        RoundFailed
            If fewer than ``threshold`` masked inputs were accepted, or in malicious mode
            fewer than ``threshold`` survivors signed the survivor set (the round is closed).
        """
        if not isinstance(margin, int) or isinstance(margin, bool) or margin < 0:
            raise ConfigError("margin", f"expected an integer >= 0, got {margin!r}")
        rnd = self._open("unmask requests")
        if rnd.requests is not None:
            return dict(rnd.requests)
        self._close_masking(rnd)
        setup, counted, dropped = rnd.setup, rnd.counted, rnd.dropped
        if self._mode == "malicious" and len(rnd.signatures) < setup.threshold:
            self._close()
            raise RoundFailed(
                f"round {setup.round}: consistency check: {len(rnd.signatures)} survivors signed the survivor "
                f"set, below the threshold {setup.threshold}"
            )
        alive, graph = set(counted), setup.graph
        seeds: list[int] = []
        for d in dropped:
            sharing = self._sharings.get(d)
            # Only d's neighbours of this round reveal its key (key_share_neighbour_check).
            holders = alive.intersection(sharing.holders).intersection(graph.neighbours(d)) if sharing else set()
            if (
                sharing is not None
                and sharing.s_pk == rnd.s_pk_of(d)
                and sharing.round + 1 == setup.round
                and sharing.threshold >= setup.sharing_threshold
                and len(holders) >= sharing.threshold
            ):
                rnd.key_plan[d] = _KeySharing(
                    s_pk=sharing.s_pk, round=sharing.round, threshold=sharing.threshold,
                    holders={v: sharing.holders[v] for v in holders},
                )  # fmt: skip
            else:
                seeds.append(d)
        rnd.seed_plan = tuple(seeds)
        rnd.selective = subset
        recipients = self._eligible(rnd)
        if subset:
            recipients = self._choose(rnd, recipients, margin=margin, first=True)
        rnd.requests = {v: self._request_for(rnd, v) for v in recipients}
        return dict(rnd.requests)

    def further_unmask_requests(self, *, margin: int = UNMASK_MARGIN) -> dict[int, UnmaskRequest]:
        """After a partial answer to :meth:`unmask_requests`, ask survivors not asked yet.

        Call it once the responses of the requests sent so far are in (a recipient that has
        not answered counts as silent). When some secret has fewer shares (or seeds) than it
        needs, the survivors not asked yet that hold the missing ones are chosen as in
        ``unmask_requests(subset=True)``, restoring ``margin`` spare holders where possible.

        Parameters
        ----------
        margin : int
            Spare holders asked per secret beyond its threshold.

        Returns
        -------
        dict of int to UnmaskRequest
            The new requests only, keyed by recipient; empty when nothing is missing or no
            survivor not yet asked can help (``finalize`` then names what is missing).

        Raises
        ------
        ConfigError
            If ``margin`` is not an integer ``>= 0``.
        ProtocolViolation
            If no unmask request was built yet.
        """
        if not isinstance(margin, int) or isinstance(margin, bool) or margin < 0:
            raise ConfigError("margin", f"expected an integer >= 0, got {margin!r}")
        rnd = self._open("further unmask requests")
        if rnd.requests is None:
            raise ProtocolViolation("further unmask requests: call unmask_requests() first")
        pool = [v for v in self._eligible(rnd) if v not in rnd.requests]
        chosen = self._choose(rnd, pool, margin=margin, first=False) if pool else ()
        new = {v: self._request_for(rnd, v) for v in chosen}
        rnd.requests.update(new)
        return new

    def _eligible(self, rnd: _Round) -> tuple[int, ...]:
        """Who may receive an unmask request: counted nodes (malicious mode: the signers)."""
        return tuple(sorted(rnd.signatures)) if self._mode == "malicious" else rnd.counted

    def _request_for(self, rnd: _Round, v: int) -> UnmaskRequest:
        setup, counted = rnd.setup, rnd.counted
        near = set(setup.graph.neighbourhood(v))
        owners = tuple(w for w in counted if w in near)
        key_owners = [d for d, sh in rnd.key_plan.items() if v in sh.holders]
        signers = tuple(sorted(rnd.signatures))
        return UnmaskRequest(
            run_id=self._run,
            round=setup.round,
            node_id=v,
            counted=counted,
            dropped=rnd.dropped,
            self_share_owners=owners,
            self_share_ciphertexts=tuple(rnd.self_envelopes[w][v] for w in owners),
            key_share_owners=tuple(key_owners),
            key_share_rounds=tuple(rnd.key_plan[d].round for d in key_owners),
            key_share_ciphertexts=tuple(rnd.key_plan[d].holders[v][1] for d in key_owners),
            seed_requests=tuple(d for d in rnd.seed_plan if d in near),
            consistency_signers=signers,
            consistency_signatures=tuple(rnd.signatures[n] for n in signers),
        )

    def _choose(self, rnd: _Round, pool: Sequence[int], *, margin: int, first: bool) -> tuple[int, ...]:
        """Greedy multi-cover: the fewest of ``pool`` that give every secret its shares.

        Each secret needs its threshold of shares (self-mask seed of a counted ``w``: from
        ``N[w]``; mask key of a key-plan dropout: from its holders) plus ``margin`` spares
        where the pool has them; a seed-plan dropout needs a seed from each of its counted
        neighbours, so those are always asked. After the first wave (``first=False``)
        nothing is chosen unless some secret is below its threshold.
        """
        setup, graph = rnd.setup, rnd.setup.graph
        alive = set(rnd.counted)
        index = {v: i for i, v in enumerate(pool)}
        got_self: dict[int, int] = {}
        got_key: dict[int, int] = {}
        got_seed: dict[int, set[int]] = {}
        for v, resp in rnd.responses.items():
            for w in resp.self_share_owners:
                got_self[w] = got_self.get(w, 0) + 1
            for d in resp.key_share_owners:
                got_key[d] = got_key.get(d, 0) + 1
            for d in resp.seed_peers:
                got_seed.setdefault(d, set()).add(v)
        # Columns: one per secret with (candidates in the pool, shares needed, shares held).
        columns: list[tuple[list[int], int, int]] = []
        for w in rnd.counted:
            columns.append(
                ([index[v] for v in graph.neighbourhood(w) if v in index], setup.sharing_threshold, got_self.get(w, 0))
            )
        for d, sharing in rnd.key_plan.items():
            columns.append(([index[v] for v in sharing.holders if v in index], sharing.threshold, got_key.get(d, 0)))
        forced: set[int] = set()
        below = False
        for d in rnd.seed_plan:
            missing = [v for v in graph.neighbours(d) if v in alive and v not in got_seed.get(d, set())]
            forced.update(index[v] for v in missing if v in index)
            below = below or bool(missing)
        cover = np.zeros((len(pool), len(columns)), dtype=np.int64)
        deficit = np.zeros(len(columns), dtype=np.int64)
        for j, (rows, need, held) in enumerate(columns):
            cover[rows, j] = 1
            if held < need and rows:
                below = True
            deficit[j] = min(need + margin - held, len(rows))
        if not first and not below:
            return ()
        chosen = np.zeros(len(pool), dtype=bool)
        for i in forced:
            chosen[i] = True
            deficit -= cover[i]
        while (deficit > 0).any():
            score = cover @ (deficit > 0)
            score[chosen] = 0
            best = int(np.argmax(score))
            if score[best] == 0:
                break
            chosen[best] = True
            deficit -= cover[best]
        return tuple(v for v, c in zip(pool, chosen, strict=True) if c)

    def _close_masking(self, rnd: _Round) -> None:
        if rnd.closed:
            return
        setup = rnd.setup
        counted = tuple(sorted(rnd.accepted))
        dropped = tuple(n for n in setup.participants if n not in rnd.accepted)
        if len(counted) < setup.threshold:
            self._close()
            raise RoundFailed(
                f"round {setup.round}: {len(counted)} of {len(setup.participants)} masked inputs accepted, "
                f"below the threshold {setup.threshold} (accepted {list(counted)}, missing {list(dropped)})"
            )
        rnd.counted, rnd.dropped, rnd.closed = counted, dropped, True

    def consistency_requests(self) -> dict[int, ConsistencyRequest]:
        """Malicious mode, stage C: close stage M and ask every counted node to sign ``(C, D)``.

        Raises
        ------
        RoundFailed
            If fewer than ``threshold`` masked inputs were accepted (the round is closed).
        """
        rnd = self._open("consistency requests")
        self._close_masking(rnd)
        return {
            v: ConsistencyRequest(
                run_id=self._run, round=rnd.setup.round, node_id=v, counted=rnd.counted, dropped=rnd.dropped
            )
            for v in rnd.counted
        }

    def receive_consistency(self, node: int, message: ConsistencyResponse) -> None:
        """Accept a survivor-set signature (stage C).

        Raises
        ------
        ProtocolViolation
            If it comes before stage C, after stage U started, from a node not counted,
            for another run or round, or its signature does not verify.
        """
        rnd = self._open("consistency response")
        tag = ConsistencyResponse.TAG
        if not isinstance(message, ConsistencyResponse):
            raise ProtocolViolation(f"message: expected ConsistencyResponse, got {type(message).__name__}")
        if not rnd.closed or rnd.requests is not None or node not in rnd.counted:
            raise ProtocolViolation(f"{tag}: no consistency request is open for node {node}")
        if (message.run_id, message.round, message.node_id) != (self._run, rnd.setup.round, node):
            raise ProtocolViolation(f"{tag}: run, round or node do not match")
        reg = self._registry[node]
        statement = survivors_statement(
            federation=reg.federation, run_id=self._run, round=rnd.setup.round, counted=rnd.counted,
            dropped=rnd.dropped,
        )  # fmt: skip
        identity = rnd.setup.identity_pks[rnd.setup.participants.index(node)]
        if not verify_survivors_signature(message.signature, identity_pk=identity, statement=statement):
            raise ProtocolViolation(f"{tag}.signature: does not verify for node {node}")
        rnd.signatures[node] = message.signature

    def receive_unmask(self, node: int, message: UnmaskResponse) -> None:
        """Accept an unmask response (stage U).

        Raises
        ------
        ProtocolViolation
            If it is unexpected, duplicated, or answers something that was not asked
            (other owners, wrong share indices).
        """
        rnd = self._open("unmask response")
        tag = UnmaskResponse.TAG
        if not isinstance(message, UnmaskResponse):
            raise ProtocolViolation(f"message: expected UnmaskResponse, got {type(message).__name__}")
        if rnd.requests is None or node not in rnd.requests:
            raise ProtocolViolation(f"{tag}: no unmask request was sent to node {node}")
        if node in rnd.responses:
            raise ProtocolViolation(f"{tag}: node {node} already answered round {rnd.setup.round}")
        expected = {"run_id": self._run, "round": rnd.setup.round, "node_id": node}
        for name, value in expected.items():
            if getattr(message, name) != value:
                raise ProtocolViolation(f"{tag}.{name}: expected {value}, got {getattr(message, name)}")
        request = rnd.requests[node]
        my_index = rnd.index_of(node)
        if not set(message.self_share_owners) <= set(request.self_share_owners):
            raise ProtocolViolation(f"{tag}.self_share_owners: not requested from node {node}")
        if any(i != my_index for i in message.self_share_indices):
            raise ProtocolViolation(f"{tag}.self_share_indices: node {node}'s index is {my_index}")
        if not set(message.key_share_owners) <= set(request.key_share_owners):
            raise ProtocolViolation(f"{tag}.key_share_owners: not requested from node {node}")
        for d, index in zip(message.key_share_owners, message.key_share_indices, strict=True):
            if index != rnd.key_plan[d].holders[node][0]:
                raise ProtocolViolation(
                    f"{tag}.key_share_indices: share of node {d} held by node {node} has index "
                    f"{rnd.key_plan[d].holders[node][0]}, got {index}"
                )
        if not set(message.seed_peers) <= set(request.seed_requests):
            raise ProtocolViolation(f"{tag}.seed_peers: not requested from node {node}")
        rnd.responses[node] = message

    def finalize(self) -> AggregateResult:
        """Remove all masks and decode the weighted sum; closes the round.

        Raises
        ------
        RoundFailed
            If a secret cannot be recovered (names who and what is missing) or a
            reconstructed key does not match its public key. The round is closed.
        """
        rnd = self._open("finalize")
        if rnd.requests is None:
            raise ProtocolViolation("finalize: call unmask_requests() and collect responses first")
        try:
            return self._finalize(rnd)
        finally:
            self._close()

    def abort_round(self) -> None:
        """Close the open round without a result (dropped nodes must re-key)."""
        if self._round is not None:
            self._close()

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Serializable state: ``int``, ``str``, ``bool``, ``bytes``, ``None`` and lists of them.

        Holds no secret of any node (public keys, signatures, envelopes the coordinator
        cannot open, the masked running total and unmask responses of the open round).
        :meth:`from_state_dict` restores an equal server, so a coordinator process can
        continue a round another one started.
        """
        rnd = self._round

        def sharing(sh: _KeySharing) -> list[Any]:
            return [sh.s_pk, sh.round, sh.threshold, [[v, i, env] for v, (i, env) in sorted(sh.holders.items())]]

        round_state: dict[str, Any] | None = None
        if rnd is not None:
            round_state = {
                "setup": rnd.setup.to_record(),
                "total": rnd.total.tobytes(),
                "accepted": sorted(rnd.accepted),
                "self_envelopes": [[w, [[v, e] for v, e in sorted(envs.items())]] for w, envs in sorted(rnd.self_envelopes.items())],
                "requests": None if rnd.requests is None else [[v, r.to_record()] for v, r in sorted(rnd.requests.items())],
                "counted": list(rnd.counted),
                "dropped": list(rnd.dropped),
                "key_plan": [[d, sharing(sh)] for d, sh in sorted(rnd.key_plan.items())],
                "seed_plan": list(rnd.seed_plan),
                "responses": [[v, r.to_record()] for v, r in sorted(rnd.responses.items())],
                "closed": rnd.closed,
                "signatures": [[v, sig] for v, sig in sorted(rnd.signatures.items())],
                "selective": rnd.selective,
            }  # fmt: skip
        spec = self._spec
        return {
            "version": _STATE_VERSION,
            "run_id": self._run,
            "length": self._length,
            "mode": self._mode,
            "ring": [spec.bits, spec.frac_bits, float(spec.clip_bound), float(spec.weight_bound), spec.max_participants],
            "last_round": -1 if self._last_round is None else self._last_round,
            "registry": [
                [n, [r.organization, r.federation, r.identity_pk, r.c_pk, r.c_sig, r.s_pk, r.s_sig, r.s_round,
                     -1 if r.s_threshold is None else r.s_threshold]]
                for n, r in sorted(self._registry.items())
            ],  # fmt: skip
            "sharings": [[n, sharing(sh)] for n, sh in sorted(self._sharings.items())],
            "round": round_state,
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], *, spec: RingSpec) -> SecureSumServer:
        """Restore a server saved with :meth:`state_dict`.

        Parameters
        ----------
        state : mapping
            What :meth:`state_dict` returned (possibly through a JSON codec).
        spec : RingSpec
            The run's ring; it must be the one the state was made with.

        Raises
        ------
        ProtocolViolation
            If the state is malformed (names the field) or made with another ring.
        """

        def get(key: str, where: Mapping[str, Any] = state, prefix: str = _STATE) -> Any:
            return require(where, key, prefix)

        check_int(get("version"), f"{_STATE}.version", lo=_STATE_VERSION, hi=_STATE_VERSION)
        ring = get("ring")
        mine = [spec.bits, spec.frac_bits, float(spec.clip_bound), float(spec.weight_bound), spec.max_participants]
        if list(ring) != mine:
            raise ProtocolViolation(f"{_STATE}.ring: the state was made with ring {list(ring)}, not {mine}")
        try:
            server = cls(run_id=get("run_id"), spec=spec, length=get("length"), mode=get("mode"))
        except ConfigError as exc:
            raise ProtocolViolation(f"{_STATE}.{exc}") from None
        last = check_int(get("last_round"), f"{_STATE}.last_round", lo=-1)
        server._last_round = None if last == -1 else last

        def sharing(raw: Any, where: str) -> _KeySharing:
            s_pk, rnd_no, threshold, holders = raw
            return _KeySharing(
                s_pk=check_bytes(s_pk, f"{where}.s_pk"), round=check_int(rnd_no, f"{where}.round", lo=0),
                threshold=check_int(threshold, f"{where}.threshold", lo=1),
                holders={check_u64(v, f"{where}.holder"): (check_int(i, f"{where}.index", lo=1), check_bytes(e, f"{where}.envelope"))
                         for v, i, e in holders},
            )  # fmt: skip

        try:
            for node, fields in get("registry"):
                org, fed, identity, c_pk, c_sig, s_pk, s_sig, s_round, s_t = fields
                server._registry[check_u64(node, f"{_STATE}.registry")] = _Registration(
                    organization=org, federation=fed, identity_pk=check_bytes(identity, f"{_STATE}.registry.identity_pk"),
                    c_pk=check_bytes(c_pk, f"{_STATE}.registry.c_pk"), c_sig=check_bytes(c_sig, f"{_STATE}.registry.c_sig"),
                    s_pk=None if s_pk is None else check_bytes(s_pk, f"{_STATE}.registry.s_pk"),
                    s_sig=check_bytes(s_sig, f"{_STATE}.registry.s_sig"),
                    s_round=check_int(s_round, f"{_STATE}.registry.s_round", lo=0),
                    s_threshold=None if s_t == -1 else check_int(s_t, f"{_STATE}.registry.s_threshold", lo=1),
                )  # fmt: skip
            for node, raw in get("sharings"):
                server._sharings[check_u64(node, f"{_STATE}.sharings")] = sharing(raw, f"{_STATE}.sharings")
            raw_round = get("round")
            if raw_round is not None:
                where = f"{_STATE}.round"
                setup = RoundSetup.from_record(get("setup", raw_round, where))
                total = np.frombuffer(check_bytes(get("total", raw_round, where), f"{where}.total"), dtype=spec.dtype)
                if total.shape != (server._length,):
                    raise ProtocolViolation(f"{where}.total: expected {server._length} ring elements, got {total.size}")
                requests = get("requests", raw_round, where)
                rnd = _Round(
                    setup=setup,
                    total=total.copy(),
                    accepted=set(check_u64_tuple(get("accepted", raw_round, where), f"{where}.accepted")),
                    self_envelopes={w: {v: check_bytes(e, f"{where}.self_envelopes") for v, e in envs}
                                    for w, envs in get("self_envelopes", raw_round, where)},
                    requests=None if requests is None else {v: UnmaskRequest.from_record(r) for v, r in requests},
                    counted=check_u64_tuple(get("counted", raw_round, where), f"{where}.counted"),
                    dropped=check_u64_tuple(get("dropped", raw_round, where), f"{where}.dropped"),
                    key_plan={d: sharing(raw, f"{where}.key_plan") for d, raw in get("key_plan", raw_round, where)},
                    seed_plan=check_u64_tuple(get("seed_plan", raw_round, where), f"{where}.seed_plan"),
                    responses={v: UnmaskResponse.from_record(r) for v, r in get("responses", raw_round, where)},
                    closed=get("closed", raw_round, where) is True,
                    signatures={v: check_bytes(sig, f"{where}.signatures") for v, sig in get("signatures", raw_round, where)},
                    selective=raw_round.get("selective") is True,  # absent in states saved before it existed
                )  # fmt: skip
                server._round = rnd
        except (TypeError, ValueError) as exc:
            raise ProtocolViolation(f"{_STATE}: malformed ({exc})") from None
        return server

    # ------------------------------------------------------------------ internals
    def _open(self, what: str) -> _Round:
        if self._round is None:
            raise ProtocolViolation(f"{what}: no open round")
        return self._round

    def _close(self) -> None:
        rnd = self._round
        self._round = None
        if rnd is None:
            return
        for node in rnd.setup.participants:
            if node not in rnd.accepted:
                self.invalidate_keys(node)

    def _finalize(self, rnd: _Round) -> AggregateResult:
        setup, run, graph = rnd.setup, self._run, rnd.setup.graph
        counted, dropped, t = rnd.counted, rnd.dropped, setup.sharing_threshold
        self_shares: dict[int, list[tuple[int, bytes]]] = {w: [] for w in counted}
        key_shares: dict[int, list[tuple[int, bytes]]] = {d: [] for d in rnd.key_plan}
        seeds: dict[int, dict[int, bytes]] = {d: {} for d in rnd.seed_plan}
        for v, resp in rnd.responses.items():
            for w, i, share in zip(resp.self_share_owners, resp.self_share_indices, resp.self_shares, strict=True):
                self_shares[w].append((i, share))
            for d, i, share in zip(resp.key_share_owners, resp.key_share_indices, resp.key_shares, strict=True):
                key_shares[d].append((i, share))
            for d, seed in zip(resp.seed_peers, resp.seeds, strict=True):
                seeds[d][v] = seed

        missing: list[str] = []
        for w in counted:
            if len(self_shares[w]) < t:
                missing.append(f"self-mask seed of counted node {w}: {len(self_shares[w])} of {t} shares")
        for d, sharing in rnd.key_plan.items():
            if len(key_shares[d]) < sharing.threshold:
                missing.append(f"mask key of dropped node {d}: {len(key_shares[d])} of {sharing.threshold} key shares")
        alive = set(counted)
        near = {d: [w for w in graph.neighbours(d) if w in alive] for d in dropped}
        for d in rnd.seed_plan:
            absent = [w for w in near[d] if w not in seeds[d]]
            if absent:
                missing.append(f"pairwise masks of dropped node {d}: no seed from counted nodes {absent}")
        if missing:
            silent = [w for w in counted if w not in rnd.responses and (not rnd.selective or w in rnd.requests)]
            raise RoundFailed(
                f"round {setup.round} cannot be unmasked: " + "; ".join(missing) + f" (silent in stage U: {silent})"
            )

        masks: list[tuple[bytes, int]] = []
        seeds_b = reconstruct_many(
            [self_shares[w] for w in counted], threshold=t, what=[f"self-mask seed of node {w}" for w in counted]
        )
        for w, b_w in zip(counted, seeds_b, strict=True):
            masks.append((self_mask_key(b_w, run_id=run, round=setup.round, node=w), -1))
        for d, sharing in rnd.key_plan.items():
            raw = combine_shares(key_shares[d], threshold=sharing.threshold, what=f"mask key of node {d}")
            s_sk = load_private_key(raw, field=f"mask key of node {d}")
            if public_bytes(s_sk) != rnd.s_pk_of(d):
                raise RoundFailed(
                    f"round {setup.round}: the mask key of dropped node {d} reconstructed from key shares "
                    "does not match its public key (a wrong share was returned)"
                )
            for w in near[d]:
                key = pairwise_mask_key(s_sk, rnd.s_pk_of(w), run_id=run, round=setup.round, me=d, peer=w)
                masks.append((key, -pairwise_sign(w, d)))
        for d in rnd.seed_plan:
            for w in near[d]:
                masks.append((seeds[d][w], -pairwise_sign(w, d)))
        total = rnd.total
        apply_masks(total, masks)
        return AggregateResult(
            weighted_sum=decode_sum(total, spec=self._spec),
            counted=counted,
            dropped=dropped,
            recovered_dropouts=len(dropped),
            recovered_from_seeds=rnd.seed_plan,
            silent_in_unmask=tuple(
                w for w in counted if w not in rnd.responses and (not rnd.selective or w in rnd.requests)
            ),
            error_bound=error_bound(self._spec, len(counted)),
        )
