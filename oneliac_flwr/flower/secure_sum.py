"""Secure sum at the Flower boundary: the coordinator side (an ``Aggregator``).

Per round (see ``docs/secure-sum.md``):

1. stage K, only for sampled nodes without registered keys: ``train.secure_keys``;
2. stage M rides on the training message: the round setup goes out in the
   ``secure-sum`` ConfigRecord, each client replies with its masked update;
3. stage U: ``train.secure_unmask`` to enough of the nodes whose masked update was
   accepted (a further one to others only if some stay silent and shares are missing).

The inner strategy then receives only the unmasked weighted mean. Every exchange is
bounded by ``aggregation_config.timeout_minutes``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.errors import ConfigError, ProtocolViolation, RoundFailed, SecureAggregationError
from oneliac_flwr.flower.exchange import send_and_receive
from oneliac_flwr.flower.records import MASKED, SECURE_SUM, TrainReply
from oneliac_flwr.coordinator import Aggregate, secure_sum_aggregate
from oneliac_flwr.coordinator.aggregate import publishable_check
from oneliac_flwr.coordinator.secure_plan import graph_for, participants_source, ring_for, threshold_for
from oneliac_flwr.results import Rejection, RoundRecord
from oneliac_flwr.secure import (
    AdvertiseKeys,
    ConsistencyResponse,
    MaskedInput,
    RingSpec,
    SecureSumServer,
    UnmaskResponse,
)

__all__ = [
    "CONFIRM_ACTION", "KEYS_ACTION", "UNMASK_ACTION", "SecureSumAggregator", "graph_for", "ring_for", "threshold_for",
]  # fmt: skip

logger = logging.getLogger("oneliac_flwr")

KEYS_ACTION = "secure_keys"
UNMASK_ACTION = "secure_unmask"
CONFIRM_ACTION = "secure_confirm"


def _payload_bytes(message: Message) -> int:
    content = message.content
    total = 0
    masked = content.get(MASKED)
    if masked is not None:
        total += sum(a.nbytes for a in masked.to_numpy_ndarrays())
    record = content.get(SECURE_SUM)
    if isinstance(record, ConfigRecord):
        for value in record.values():
            items = value if isinstance(value, list) else [value]
            total += sum(len(v) if isinstance(v, (bytes, str)) else 8 for v in items)
    return total


class SecureSumAggregator:
    """Coordinator side of the secure sum: it never sees one organization's update.

    Parameters
    ----------
    config : ExperimentConfig
        ``secure_sum.*`` (ring, clip) and ``aggregation_config.min_participants``
        (threshold floor).
    run_id : int
        Binds every key derivation and ciphertext to this run.
    num_parameters : int
        Length of the flattened model.
    noise_std : float
        Standard deviation of DP noise the clients add before masking (distributed DP),
        allowed for in the aggregate's norm check.
    spec : RingSpec, optional
        The ring (default: planned from ``secure_sum.*``).
    statistics_slots : int
        Coordinates appended to each update for the masked statistics
        (:mod:`oneliac_flwr.masked_statistics`); 0 under DP, where none are sent.
    on_reveal : callable, optional
        Called with ``(round, contributors)`` the moment a sum is unmasked, before its
        checks: the privacy ledger records the release there.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        *,
        run_id: int,
        num_parameters: int,
        noise_std: float = 0.0,
        spec: RingSpec | None = None,
        statistics_slots: int = 0,
        on_reveal: Callable[[int, int], None] | None = None,
    ) -> None:
        self.config = config
        self.spec = spec if spec is not None else ring_for(config)
        self.num_parameters = num_parameters
        self.statistics_slots = statistics_slots
        self.server = SecureSumServer(
            run_id=run_id, spec=self.spec, length=num_parameters + statistics_slots, mode=config.secure_sum.mode
        )
        self.noise_std = noise_std
        self.on_reveal = on_reveal
        self.unnoised = False  # central DP noise: the unmasked sum is not noised yet (publishable_check)
        self._exchanges: dict[int, int] = {}
        self._keyed_this_round: dict[int, list[int]] = {}

    # -------------------------------------------------------------- helpers
    def _exchange(self, grid: Grid, node_ids: list[int], action: str, records: dict[int, ConfigRecord], timeout: float, server_round: int) -> dict[int, Message]:
        messages = [
            Message(content=RecordDict({SECURE_SUM: records[n]}), dst_node_id=n, message_type=f"train.{action}")
            for n in node_ids
        ]
        self._exchanges[server_round] = self._exchanges.get(server_round, 1) + 1
        replies = send_and_receive(grid, messages, timeout=timeout)
        return {m.metadata.src_node_id: m for m in replies if not m.has_error() and m.has_content()}

    # -------------------------------------------------------------- Aggregator protocol
    def organization_of(self, node: int) -> str | None:
        """The organization a node signed its key advertisement for (stage K), if any."""
        return self.server.organization_of(node)

    def prepare(
        self, server_round: int, node_ids: list[int], grid: Grid, timeout: float
    ) -> tuple[list[int], dict[str, ConfigRecord]]:
        """Stage K for nodes without keys, then the round setup for the training message."""
        self.server.abort_round()  # a round left open by a failed stage never blocks the next
        self._exchanges[server_round] = 1  # the training exchange itself
        participants = list(node_ids)
        # A carried key is usable only in the round it names and with a sharing threshold no
        # lower than the round's. Stage K can change the round's size and so its graph and
        # sharing threshold; a carried key that no longer fits is re-keyed in a second pass.
        keyed: list[int] = []
        for _ in range(2):
            plan = graph_for(self.config, len(participants))
            need = self.server.needs_keys(participants, round=server_round, threshold=plan.threshold)
            if not need:
                break
            keyed += need
            replies = self._exchange(grid, need, KEYS_ACTION, {n: ConfigRecord({"round": server_round}) for n in need}, timeout, server_round)
            for node in need:
                message = replies.get(node)
                try:
                    if message is None:
                        raise ProtocolViolation("no key advertisement within the timeout")
                    self.server.register_keys(node, AdvertiseKeys.from_record(dict(message.content[SECURE_SUM])))
                except (SecureAggregationError, KeyError, TypeError) as exc:
                    logger.warning("round %d: node %d left out of the secure sum at stage K: %s", server_round, node, exc)
                    participants.remove(node)
        self._keyed_this_round[server_round] = keyed
        if len(participants) > self.spec.max_participants:
            # Only possible in deployment: more SuperNodes connected than the federation declared.
            raise ConfigError(
                "federation.num_organizations",
                f"{len(participants)} nodes were sampled in round {server_round}, but the secure-sum ring "
                f"was planned at start-up as {participants_source(self.config)}; declare the real federation size",
            )
        threshold = threshold_for(len(participants), self.config.aggregation_config.min_participants)
        plan = graph_for(self.config, len(participants))
        setup = self.server.round_setup(
            round=server_round, participants=sorted(participants), threshold=threshold, graph_degree=plan.degree,
            sharing_threshold=plan.threshold,
        )  # fmt: skip
        return sorted(participants), {SECURE_SUM: ConfigRecord(setup.to_record())}

    def aggregate(
        self,
        server_round: int,
        replies: list[TrainReply],
        global_arrays: list[np.ndarray],
        grid: Grid,
        timeout: float,
        record: RoundRecord,
    ) -> Aggregate:
        """Collect masked updates, unmask the sum of the accepted ones, check it, return the mean."""
        try:
            return self._aggregate(server_round, replies, global_arrays, grid, timeout, record)
        finally:
            self.server.abort_round()  # no-op after a finalized round; closes a failed one

    def _aggregate(
        self,
        server_round: int,
        replies: list[TrainReply],
        global_arrays: list[np.ndarray],
        grid: Grid,
        timeout: float,
        record: RoundRecord,
    ) -> Aggregate:
        accepted: dict[int, TrainReply] = {}
        uploaded: list[int] = []
        for reply in replies:
            content = reply.message.content
            try:
                masked_record = content.get(MASKED)
                setup_record = content.get(SECURE_SUM)
                if masked_record is None or not isinstance(setup_record, ConfigRecord):
                    raise ProtocolViolation(f"reply lacks the {MASKED!r} payload or the {SECURE_SUM!r} record")
                arrays = masked_record.to_numpy_ndarrays()
                if len(arrays) != 1:
                    raise ProtocolViolation(f"expected 1 masked array, got {len(arrays)}")
                message = MaskedInput.from_record(dict(setup_record), masked=arrays[0])
                self.server.receive_masked(reply.node_id, message)
            except (SecureAggregationError, KeyError, TypeError, ValueError) as exc:
                record.rejected.append(Rejection(reply.node_id, reply.organization, "secure_sum_payload", str(exc)))
                continue
            accepted[reply.node_id] = reply
            uploaded.append(_payload_bytes(reply.message))
        if self.config.secure_sum.mode == "malicious":  # stage C: survivors sign the survivor set
            confirms = self.server.consistency_requests()
            signed = self._exchange(
                grid, sorted(confirms), CONFIRM_ACTION, {n: ConfigRecord(r.to_record()) for n, r in confirms.items()},
                timeout, server_round,
            )  # fmt: skip
            for node, message in signed.items():
                try:
                    self.server.receive_consistency(node, ConsistencyResponse.from_record(dict(message.content[SECURE_SUM])))
                except (SecureAggregationError, KeyError, TypeError) as exc:
                    logger.warning("round %d: consistency reply of node %d ignored: %s", server_round, node, exc)
        # Stage U asks only the survivors needed (each secret's threshold plus the core's
        # default margin of 2 spare holders, so up to 2 silent holders of one secret cost
        # nothing); only if more stay silent, a further exchange asks others
        # (docs/secure-sum.md section 6).
        requests = self.server.unmask_requests(subset=True)
        while requests:
            responses = self._exchange(
                grid,
                sorted(requests),
                UNMASK_ACTION,
                {n: ConfigRecord(req.to_record()) for n, req in requests.items()},
                timeout,
                server_round,
            )
            for node, message in responses.items():
                try:
                    self.server.receive_unmask(node, UnmaskResponse.from_record(dict(message.content[SECURE_SUM])))
                except (SecureAggregationError, KeyError, TypeError) as exc:
                    logger.warning("round %d: unmask reply of node %d ignored: %s", server_round, node, exc)
            requests = self.server.further_unmask_requests()
        result = self.server.finalize()
        counted = [n for n in result.counted if n in accepted]
        if self.on_reveal is not None:
            self.on_reveal(server_round, len(counted))  # the sum is revealed: account before any check
        outcome = secure_sum_aggregate(
            result.weighted_sum,
            counted=counted,
            global_arrays=global_arrays,
            statistics_slots=self.statistics_slots,
            clip_bound=self.spec.clip_bound,
            frac_bits=self.spec.frac_bits,
            noise_std=self.noise_std,
            central_noise=self.unnoised,
        )
        total_weight = outcome.aggregate.total_weight
        check, failure = publishable_check(outcome, unnoised=self.unnoised)
        record.secure_sum = {
            "counted": [accepted[n].organization for n in counted],
            "dropped": [int(n) for n in result.dropped],
            "dropouts_recovered": int(result.recovered_dropouts),
            "recovered_from_seeds": [int(n) for n in result.recovered_from_seeds],
            "silent_in_unmask": [int(n) for n in result.silent_in_unmask],
            "keys_advertised": len(self._keyed_this_round.get(server_round, [])),
            "exchanges": self._exchanges.get(server_round, 2),
            "bytes_uploaded_per_client": int(np.mean(uploaded)) if uploaded else 0,
            "ring_bits": self.spec.bits,
            "frac_bits": self.spec.frac_bits,
            "error_bound_sum": float(result.error_bound),
            "aggregate_check": check,
            "total_weight": round(total_weight, 6),
            "label_distribution": outcome.label_distribution,
        }
        if failure is not None:
            raise RoundFailed(failure)
        return outcome.aggregate
