"""Test harness for the secure-sum core: an in-memory federation without transport.

Every message goes through ``to_record()`` / ``from_record()`` so that the wire format
is exercised on every test round.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from oneliac_flwr.secure import (
    AdvertiseKeys,
    AggregateResult,
    Identity,
    MaskedInput,
    RingSpec,
    RoundSetup,
    SecureSumClient,
    SecureSumServer,
    UnmaskRequest,
    UnmaskResponse,
)

CONFIG_SCALARS = (int, float, str, bytes, bool)


def check_config_record(record: Mapping[str, Any]) -> None:
    """Fail unless ``record`` fits a Flower ConfigRecord (flat, homogeneous lists)."""
    for key, value in record.items():
        assert isinstance(key, str)
        if isinstance(value, list):
            assert all(type(v) is type(value[0]) for v in value), key
            assert all(isinstance(v, CONFIG_SCALARS) for v in value), key
        else:
            assert isinstance(value, CONFIG_SCALARS), (key, type(value))


def roundtrip(message: Any) -> Any:
    """Serialize a message to its record and parse it back."""
    record = message.to_record()
    check_config_record(record)
    if isinstance(message, MaskedInput):
        return MaskedInput.from_record(record, masked=np.array(message.masked))
    return type(message).from_record(record)


def exact_weighted_sum(inputs: Mapping[int, tuple[np.ndarray, float]], nodes: Iterable[int]) -> list[Fraction]:
    """Exact rational ``sum w x`` per coordinate (float inputs are exact rationals)."""
    nodes = list(nodes)
    length = len(next(iter(inputs.values()))[0])
    total = [Fraction(0)] * length
    for n in nodes:
        x, w = inputs[n]
        fw = Fraction(w)
        total = [acc + fw * Fraction(float(xi)) for acc, xi in zip(total, x, strict=True)]
    return total


def max_error(result: np.ndarray, exact: Sequence[Fraction]) -> float:
    """Largest ``|result_i - exact_i|`` computed exactly, returned as float."""
    return float(max((abs(Fraction(float(r)) - e) for r, e in zip(result, exact, strict=True)), default=Fraction(0)))


def longdouble_weighted_sum(inputs: Mapping[int, tuple[np.ndarray, float]], nodes: Iterable[int]) -> np.ndarray:
    """``sum w x`` in extended precision (for long vectors)."""
    acc: np.ndarray | None = None
    for n in nodes:
        x, w = inputs[n]
        term = x.astype(np.longdouble) * np.longdouble(w)
        acc = term if acc is None else acc + term
    assert acc is not None
    return acc


@dataclass
class Transcript:
    """Everything the coordinator legitimately received or sent in one round."""

    setup: RoundSetup | None = None
    keys: dict[int, AdvertiseKeys] = field(default_factory=dict)
    masked: dict[int, MaskedInput] = field(default_factory=dict)
    requests: dict[int, UnmaskRequest] = field(default_factory=dict)
    responses: dict[int, UnmaskResponse] = field(default_factory=dict)


class Federation:
    """A coordinator and its clients, exchanging messages in memory."""

    def __init__(
        self,
        ids: Sequence[int],
        *,
        spec: RingSpec,
        length: int,
        run_id: int = 11,
        mode: str = "semi-honest",
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.run_id = run_id
        self.spec = spec
        self.length = length
        self.mode = mode
        self.server = SecureSumServer(run_id=run_id, spec=spec, length=length, mode=mode)
        self.identities = {i: Identity.generate() for i in ids}
        self.clients = {
            i: SecureSumClient(
                node_id=i, run_id=run_id, identity=self.identities[i], organization=f"org-{i}", mode=mode,  # type: ignore[arg-type]
                **dict(client_options or {}),
            )
            for i in ids
        }
        self.transcripts: dict[int, Transcript] = {}
        self.persist = True

    def reload(self, node: int) -> None:
        """Save and restore a client's state, as the adapter does between messages."""
        state = self.clients[node].state_dict()
        check_config_record(state)
        self.clients[node] = SecureSumClient.from_state_dict(state, identity=self.identities[node])

    def stage_k(
        self,
        participants: Sequence[int],
        transcript: Transcript,
        *,
        round: int,
        threshold: int | None = None,
        absent: Iterable[int] = (),
    ) -> list[int]:
        absent = set(absent)
        needed = self.server.needs_keys(participants, round=round, threshold=threshold)
        for node in needed:
            if node in absent:
                continue
            msg = roundtrip(self.clients[node].advertise_keys(round=round))
            transcript.keys[node] = msg
            self.server.register_keys(node, msg)
        return [p for p in participants if p not in absent or p not in needed]

    def run_round(
        self,
        round: int,
        *,
        inputs: Mapping[int, tuple[np.ndarray, float]],
        threshold: int,
        drop_k: Iterable[int] = (),
        drop_m: Iterable[int] = (),
        drop_u: Iterable[int] = (),
        graph_degree: int = 0,
        sharing_threshold: int | None = None,
        subset: bool = False,
        margin: int = 2,
    ) -> AggregateResult:
        """One full round; ``inputs`` maps every selected node to ``(x, weight)``.

        ``drop_m`` nodes mask (their state advances) but their reply is lost;
        ``drop_u`` nodes answer nothing in stage U. ``subset``: stage U asks only the
        survivors needed (with ``margin``), then others while something is missing.
        """
        tr = Transcript()
        self.transcripts[round] = tr
        participants = sorted(inputs)
        share_t = threshold if sharing_threshold is None else sharing_threshold
        participants = self.stage_k(participants, tr, round=round, threshold=share_t, absent=drop_k)
        setup = roundtrip(
            self.server.round_setup(
                round=round, participants=participants, threshold=threshold, graph_degree=graph_degree,
                sharing_threshold=sharing_threshold,
            )
        )  # fmt: skip
        tr.setup = setup
        lost = set(drop_m)
        for node in setup.participants:
            x, w = inputs[node]
            msg = roundtrip(self.clients[node].mask(x, weight=w, setup=setup))
            if self.persist:
                self.reload(node)
            if node in lost:
                continue
            tr.masked[node] = msg
            self.server.receive_masked(node, msg)
        silent = set(drop_u)
        if self.mode == "malicious":
            for node, creq in self.server.consistency_requests().items():
                if node in silent:
                    continue
                self.server.receive_consistency(node, roundtrip(self.clients[node].confirm_survivors(roundtrip(creq))))
                if self.persist:
                    self.reload(node)
        requests = self.server.unmask_requests(subset=subset, margin=margin)
        while requests:
            for node, request in requests.items():
                request = roundtrip(request)
                tr.requests[node] = request
                if node in silent:
                    continue
                response = roundtrip(self.clients[node].unmask(request))
                if self.persist:
                    self.reload(node)
                tr.responses[node] = response
                self.server.receive_unmask(node, response)
            requests = self.server.further_unmask_requests(margin=margin) if subset else {}
        return self.server.finalize()


def make_inputs(
    ids: Iterable[int], *, length: int, spec: RingSpec, seed: int, extremes: bool = False
) -> dict[int, tuple[np.ndarray, float]]:
    """Random inputs within the clip bound and weights within the weight bound."""
    rng = np.random.default_rng(seed)
    out: dict[int, tuple[np.ndarray, float]] = {}
    for node in ids:
        x = rng.uniform(-spec.clip_bound, spec.clip_bound, size=length)
        w = float(rng.uniform(0.0, spec.weight_bound)) or spec.weight_bound
        if extremes:
            x[rng.random(length) < 0.3] = spec.clip_bound
            x[rng.random(length) < 0.3] = -spec.clip_bound
            w = spec.weight_bound
        out[node] = (x, w)
    return out


@pytest.fixture(scope="session")
def federation_cls() -> type[Federation]:
    """The :class:`Federation` harness."""
    return Federation


@pytest.fixture(scope="session")
def inputs_factory() -> Any:
    """:func:`make_inputs`."""
    return make_inputs


@pytest.fixture(scope="session")
def exact() -> Any:
    """Exact-arithmetic helpers: ``(exact_weighted_sum, max_error, longdouble_weighted_sum)``."""
    return exact_weighted_sum, max_error, longdouble_weighted_sum
