"""Stage U asks only the survivors it needs (``unmask_requests(subset=True)``, docs/secure-sum.md
section 6): same aggregate, fewer recipients, each asked exactly what a full stage U would ask
it, silent recipients replaced by a further exchange, and ``t - 1`` shares never enough."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from oneliac_flwr.errors import ConfigError, ProtocolViolation, RoundFailed
from oneliac_flwr.secure import RingSpec, SecureSumServer
from oneliac_flwr.secure.graph import sparse_plan

SPEC = RingSpec(bits=64, frac_bits=24, clip_bound=4.0, weight_bound=100.0, max_participants=64)
LENGTH = 8
IDS = list(range(1001, 1041))  # 40 participants: sparse graph 18 / 10 with the default fractions
PLAN = sparse_plan(len(IDS))
THRESHOLD = len(IDS) // 2 + 1
assert PLAN is not None


def _run(fed: Any, r: int, inputs: dict[int, Any], **kw: Any) -> Any:
    return fed.run_round(
        r, inputs=inputs, threshold=THRESHOLD, graph_degree=PLAN.degree, sharing_threshold=PLAN.threshold, **kw
    )  # fmt: skip


def _masked(fed: Any, r: int, inputs: dict[int, Any], *, lost: tuple[int, ...] = ()) -> Any:
    """Stages K and M of round ``r``; the masked inputs of ``lost`` never arrive."""
    fed.stage_k(IDS, SimpleNamespace(keys={}), round=r, threshold=PLAN.threshold)
    setup = fed.server.round_setup(
        round=r, participants=IDS, threshold=THRESHOLD, graph_degree=PLAN.degree, sharing_threshold=PLAN.threshold
    )  # fmt: skip
    for node in IDS:
        msg = fed.clients[node].mask(inputs[node][0], weight=inputs[node][1], setup=setup)
        if node not in lost:
            fed.server.receive_masked(node, msg)
    return setup


def _answer(fed: Any, requests: dict[int, Any], silent: frozenset[int] | set[int] = frozenset()) -> dict[int, Any]:
    responses = {}
    for node, request in requests.items():
        if node not in silent:
            responses[node] = fed.clients[node].unmask(request)
            fed.server.receive_unmask(node, responses[node])
    return responses


def _clone(server: SecureSumServer) -> SecureSumServer:
    return SecureSumServer.from_state_dict(server.state_dict(), spec=SPEC)


def _holders_asked(setup: Any, asked: set[int], counted: set[int]) -> dict[int, int]:
    """Per counted node: how many of its neighbourhood (holders of its seed shares) were asked."""
    return {w: len(asked.intersection(setup.graph.neighbourhood(w))) for w in counted}


def test_subset_gives_the_same_aggregate_with_fewer_requests(federation_cls: Any, inputs_factory: Any) -> None:
    full = federation_cls(IDS, spec=SPEC, length=LENGTH)
    part = federation_cls(IDS, spec=SPEC, length=LENGTH)
    for r in (1, 2):
        inputs = inputs_factory(IDS, length=LENGTH, spec=SPEC, seed=r)
        res_full = _run(full, r, inputs)
        res_part = _run(part, r, inputs, subset=True)
        # The ring sum is exact: the decoded aggregates are equal bit for bit.
        assert np.array_equal(res_full.weighted_sum, res_part.weighted_sum)
        assert res_part.counted == tuple(IDS) and res_part.silent_in_unmask == ()
        asked = set(part.transcripts[r].requests)
        assert len(full.transcripts[r].requests) == len(IDS)
        assert len(asked) < len(IDS) * 0.8
        cover = _holders_asked(part.transcripts[r].setup, asked, set(IDS))
        assert min(cover.values()) >= PLAN.threshold + 2  # every seed has its threshold and the margin


def test_subset_requests_are_full_requests_to_fewer_nodes(federation_cls: Any, inputs_factory: Any) -> None:
    """Asking fewer reveals less, never more: each request is the one a full stage U would send."""
    fed = federation_cls(IDS, spec=SPEC, length=LENGTH)
    _run(fed, 1, inputs_factory(IDS, length=LENGTH, spec=SPEC, seed=1))
    dropped = IDS[7]
    setup = _masked(fed, 2, inputs_factory(IDS, length=LENGTH, spec=SPEC, seed=2), lost=(dropped,))
    full = _clone(fed.server).unmask_requests()
    part = fed.server.unmask_requests(subset=True)
    assert set(part) < set(full)
    assert all(part[v] == full[v] for v in part)
    # The dropout's key shares: its threshold plus the margin of its holders are asked.
    key_holders = {v for v, req in part.items() if dropped in req.key_share_owners}
    assert len(key_holders) >= PLAN.threshold + 2
    assert key_holders <= set(setup.graph.neighbours(dropped))
    # No request mixes a self share and a key share of one peer.
    for req in part.values():
        assert not set(req.self_share_owners) & set(req.key_share_owners)
    _answer(fed, part)
    assert fed.server.further_unmask_requests() == {}  # nothing missing: no further exchange
    res = fed.server.finalize()
    assert res.dropped == (dropped,) and res.recovered_from_seeds == () and res.silent_in_unmask == ()


def test_silent_recipients_are_replaced_by_a_further_exchange(
    federation_cls: Any, inputs_factory: Any, exact: Any
) -> None:
    exact_sum, max_error, _ = exact
    fed = federation_cls(IDS, spec=SPEC, length=LENGTH)
    _run(fed, 1, inputs_factory(IDS, length=LENGTH, spec=SPEC, seed=1))
    inputs = inputs_factory(IDS, length=LENGTH, spec=SPEC, seed=2)
    dropped = IDS[3]
    _masked(fed, 2, inputs, lost=(dropped,))
    first = fed.server.unmask_requests(subset=True, margin=0)
    silent = set(sorted(first)[:3])
    _answer(fed, first, silent)
    further = fed.server.further_unmask_requests(margin=0)
    assert further and not set(further) & set(first)  # others are asked, never the silent ones again
    assert fed.server.unmask_requests() == {**first, **further}
    _answer(fed, further)
    assert fed.server.further_unmask_requests(margin=0) == {}
    res = fed.server.finalize()
    alive = [n for n in IDS if n != dropped]
    assert res.counted == tuple(alive) and res.dropped == (dropped,)
    assert set(res.silent_in_unmask) == silent  # only those asked count as silent
    assert max_error(res.weighted_sum, exact_sum(inputs, alive)) <= res.error_bound


def test_harness_round_with_silent_recipients_recovers(
    federation_cls: Any, inputs_factory: Any, exact: Any
) -> None:
    """Through the harness: a dropout at stage M each round, silent nodes in stage U, margin 1.

    (Seed recovery needs every counted neighbour of the dropout, section 8's gap: round 1
    has no silent node.)"""
    exact_sum, max_error, _ = exact
    fed = federation_cls(IDS, spec=SPEC, length=LENGTH)
    inputs = inputs_factory(IDS, length=LENGTH, spec=SPEC, seed=5)
    res1 = _run(fed, 1, inputs, drop_m=[IDS[10]], subset=True, margin=1)
    alive = [n for n in IDS if n != IDS[10]]
    assert res1.recovered_from_seeds == (IDS[10],)  # dropped before its first sharing: seeds
    seeds_asked = {n for n, req in fed.transcripts[1].requests.items() if req.seed_requests}
    assert seeds_asked == set(fed.transcripts[1].setup.graph.neighbours(IDS[10])) - {IDS[10]}
    assert max_error(res1.weighted_sum, exact_sum(inputs, alive)) <= res1.error_bound
    inputs2 = inputs_factory(IDS, length=LENGTH, spec=SPEC, seed=6)
    res2 = _run(fed, 2, inputs2, drop_m=[IDS[20]], drop_u=IDS[:4], subset=True, margin=1)
    alive2 = [n for n in IDS if n != IDS[20]]
    assert res2.dropped == (IDS[20],) and res2.recovered_from_seeds == ()
    assert max_error(res2.weighted_sum, exact_sum(inputs2, alive2)) <= res2.error_bound


def test_threshold_minus_one_shares_never_suffice(federation_cls: Any, inputs_factory: Any) -> None:
    fed = federation_cls(IDS, spec=SPEC, length=LENGTH)
    _run(fed, 1, inputs_factory(IDS, length=LENGTH, spec=SPEC, seed=1))
    setup = _masked(fed, 2, inputs_factory(IDS, length=LENGTH, spec=SPEC, seed=2))
    requests = fed.server.unmask_requests(subset=True, margin=0)
    cover = _holders_asked(setup, set(requests), set(IDS))
    # With no margin, some seed has exactly its threshold of holders asked; silence one of them.
    victim = next(w for w, n in cover.items() if n == PLAN.threshold)
    silent = next(v for v in requests if v in setup.graph.neighbourhood(victim))
    _answer(fed, requests, {silent})
    t = PLAN.threshold
    with pytest.raises(RoundFailed, match=f"self-mask seed of counted node {victim}: {t - 1} of {t} shares"):
        fed.server.finalize()


def test_subset_in_malicious_mode_asks_only_signers(federation_cls: Any, inputs_factory: Any, exact: Any) -> None:
    exact_sum, max_error, _ = exact
    ids = IDS[:12]
    fed = federation_cls(ids, spec=SPEC, length=LENGTH, mode="malicious")
    inputs = inputs_factory(ids, length=LENGTH, spec=SPEC, seed=3)
    fed.stage_k(ids, SimpleNamespace(keys={}), round=1)
    setup = fed.server.round_setup(round=1, participants=ids, threshold=7)
    for node in ids:
        fed.server.receive_masked(node, fed.clients[node].mask(inputs[node][0], weight=inputs[node][1], setup=setup))
    unsigned = ids[0]
    for node, creq in fed.server.consistency_requests().items():
        if node != unsigned:
            fed.server.receive_consistency(node, fed.clients[node].confirm_survivors(creq))
    requests = fed.server.unmask_requests(subset=True)
    assert unsigned not in requests and len(requests) == 7 + 2  # complete graph: t plus the margin
    _answer(fed, requests)
    res = fed.server.finalize()
    assert res.silent_in_unmask == ()
    assert max_error(res.weighted_sum, exact_sum(inputs, ids)) <= res.error_bound


def test_subset_state_survives_a_restore_and_bad_margins_are_refused(
    federation_cls: Any, inputs_factory: Any
) -> None:
    fed = federation_cls(IDS, spec=SPEC, length=LENGTH)
    _run(fed, 1, inputs_factory(IDS, length=LENGTH, spec=SPEC, seed=1))
    _masked(fed, 2, inputs_factory(IDS, length=LENGTH, spec=SPEC, seed=2))
    with pytest.raises(ProtocolViolation, match="call unmask_requests"):
        fed.server.further_unmask_requests()
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="margin"):
            fed.server.unmask_requests(subset=True, margin=bad)
    requests = fed.server.unmask_requests(subset=True)
    restored = _clone(fed.server)
    assert restored.state_dict() == fed.server.state_dict()
    for node, response in _answer(fed, requests).items():
        restored.receive_unmask(node, response)
    res = restored.finalize()
    assert res.silent_in_unmask == ()  # those never asked are not silent after a restore either
