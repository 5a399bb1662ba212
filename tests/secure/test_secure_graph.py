"""Sparse sharing graphs (docs/secure-sum.md section 12): construction, parameters, rounds,
dropouts recovered per neighbourhood, and the client-side refusals."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from oneliac_flwr.errors import ProtocolViolation, RoundFailed
from oneliac_flwr.secure import RingSpec, SecureSumClient
from oneliac_flwr.secure.graph import (
    SECURITY_BITS,
    check_graph,
    failure_bound,
    graph_seed,
    plan_graph,
    sharing_graph,
    sparse_plan,
)

SPEC = RingSpec(bits=64, frac_bits=24, clip_bound=4.0, weight_bound=100.0, max_participants=64)
LENGTH = 16
IDS = list(range(101, 113))  # 12 participants
# Clients that assume no collusion and no dropout accept any graph with a majority threshold:
# small graphs (k = 4 of 12) exercise the mechanics without a large federation.
LAX = {"colluding_fraction": 0.0, "dropout_fraction": 0.0}
K, T_NBHD = 4, 3


def roundtrip(setup: Any) -> Any:
    return type(setup).from_record(setup.to_record())


# ---------------------------------------------------------------------------- the graph
def test_graph_is_k_regular_symmetric_and_a_function_of_run_and_participants() -> None:
    nodes = tuple(sorted(np.random.default_rng(3).choice(2**40, size=100, replace=False).tolist()))
    graph = sharing_graph(7, nodes, 32)
    for u in nodes:
        peers = graph.neighbours(u)
        assert len(peers) == 32 and len(set(peers)) == 32 and u not in peers
        assert all(graph.adjacent(v, u) for v in peers)
        assert graph.neighbourhood(u) == tuple(sorted((*peers, u)))
    assert sharing_graph(7, nodes, 32) == graph and sharing_graph(7, nodes, 32)._adjacent == graph._adjacent
    assert sharing_graph(8, nodes, 32)._adjacent != graph._adjacent  # another run, another graph
    assert sharing_graph(7, nodes[1:], 32)._adjacent != graph._adjacent  # another S, another graph
    assert graph_seed(7, nodes) != graph_seed(7, nodes[::-1])
    complete = sharing_graph(7, nodes, 0)
    assert complete.neighbourhood(nodes[0]) == nodes and len(complete.neighbours(nodes[0])) == 99


def test_graph_neighbourhoods_are_uniform_over_seeds() -> None:
    """Over many runs, how often node 0 neighbours node j is flat (the permutation is uniform)."""
    nodes, k, runs = tuple(range(20)), 4, 3000
    counts = np.zeros(20)
    for run in range(runs):
        for v in sharing_graph(run, nodes, k).neighbours(0):
            counts[v] += 1
    expected = runs * k / 19
    chi2 = float(((counts[1:] - expected) ** 2 / expected).sum())
    assert chi2 < 45.0  # 18 degrees of freedom: p < 1e-3 above ~42.3


@pytest.mark.parametrize("degree", [-2, 3, 1, 11])
def test_graph_degree_out_of_range_is_refused(degree: int) -> None:
    with pytest.raises(ProtocolViolation, match="graph_check"):
        sharing_graph(1, tuple(range(12)), degree)


# ---------------------------------------------------------------------------- the parameters
@pytest.mark.parametrize(("n", "degree", "threshold"), [(30, 14, 8), (50, 22, 12), (100, 32, 17), (200, 40, 21)])
def test_sparse_plan_meets_the_bound_with_the_smallest_degree(n: int, degree: int, threshold: int) -> None:
    plan = sparse_plan(n)
    assert (plan.degree, plan.threshold) == (degree, threshold)
    assert failure_bound(n, degree, threshold, 0.1, 0.1) <= 2.0**-SECURITY_BITS
    assert threshold >= (degree + 1) // 2 + 1  # a majority of the neighbourhood's shares
    smaller = degree - 2
    assert all(failure_bound(n, smaller, t, 0.1, 0.1) > 2.0**-SECURITY_BITS for t in range(smaller // 2 + 1, smaller + 2))


def test_auto_uses_the_complete_graph_for_small_federations() -> None:
    assert plan_graph(10, complete_threshold=6).degree == 0
    assert plan_graph(20, complete_threshold=11).degree == 0  # k = 10: 11 of 20 is more than half
    assert plan_graph(30, complete_threshold=16).degree == 14
    assert plan_graph(100, complete_threshold=51).degree == 32
    assert plan_graph(100, complete_threshold=51, graph="complete").degree == 0
    assert plan_graph(20, complete_threshold=11, graph="sparse").degree == 10
    # Not every fraction admits a sparse graph below n - 1: then complete.
    assert plan_graph(10, complete_threshold=6, graph="sparse", colluding_fraction=0.4).degree == 0


def test_client_graph_check_refuses_weak_graphs() -> None:
    check_graph(100, 32, 17, colluding_fraction=0.1, dropout_fraction=0.1, min_threshold=2)
    with pytest.raises(ProtocolViolation, match="graph_check"):
        check_graph(100, 30, 17, colluding_fraction=0.1, dropout_fraction=0.1, min_threshold=2)
    with pytest.raises(ProtocolViolation, match="graph_check"):  # a hospital assuming more colluders
        check_graph(100, 32, 17, colluding_fraction=0.2, dropout_fraction=0.1, min_threshold=2)
    with pytest.raises(ProtocolViolation, match="threshold_check"):
        check_graph(100, 32, 16, colluding_fraction=0.1, dropout_fraction=0.1, min_threshold=2)
    with pytest.raises(ProtocolViolation, match="threshold_check"):
        check_graph(100, 32, 17, colluding_fraction=0.1, dropout_fraction=0.1, min_threshold=18)


# ---------------------------------------------------------------------------- rounds
def _sparse_fed(federation_cls: Any, ids: list[int] = IDS) -> Any:
    return federation_cls(ids, spec=SPEC, length=LENGTH, client_options=LAX)


def _run(fed: Any, r: int, inputs: dict[int, Any], **kw: Any) -> Any:
    return fed.run_round(r, inputs=inputs, threshold=len(inputs) // 2 + 1, graph_degree=K, sharing_threshold=T_NBHD, **kw)


def test_sparse_round_is_exact_and_shares_only_with_neighbours(
    federation_cls: Any, inputs_factory: Any, exact: Any
) -> None:
    exact_sum, max_error, _ = exact
    fed = _sparse_fed(federation_cls)
    inputs = inputs_factory(IDS, length=LENGTH, spec=SPEC, seed=1)
    res = _run(fed, 1, inputs)
    assert res.counted == tuple(IDS) and res.dropped == ()
    assert max_error(res.weighted_sum, exact_sum(inputs, IDS)) <= res.error_bound
    tr = fed.transcripts[1]
    graph = tr.setup.graph
    for node, msg in tr.masked.items():
        assert msg.share_recipients == graph.neighbourhood(node)
        assert len(msg.self_share_ciphertexts) == len(msg.key_share_ciphertexts) == K + 1
    for node, req in tr.requests.items():
        assert set(req.self_share_owners) == set(graph.neighbourhood(node))
    # The steady round reuses the carried keys: no stage K.
    inputs2 = inputs_factory(IDS, length=LENGTH, spec=SPEC, seed=2)
    res2 = _run(fed, 2, inputs2)
    assert fed.transcripts[2].keys == {}
    assert max_error(res2.weighted_sum, exact_sum(inputs2, IDS)) <= res2.error_bound


def test_sparse_dropouts_are_recovered_per_neighbourhood(
    federation_cls: Any, inputs_factory: Any, exact: Any
) -> None:
    exact_sum, max_error, _ = exact
    fed = _sparse_fed(federation_cls)
    # Round 1: a node drops before its first sharing: its neighbours give per-round seeds.
    inputs = inputs_factory(IDS, length=LENGTH, spec=SPEC, seed=1)
    res = _run(fed, 1, inputs, drop_m=[IDS[3]])
    alive = [n for n in IDS if n != IDS[3]]
    assert res.dropped == (IDS[3],) and res.recovered_from_seeds == (IDS[3],)
    assert max_error(res.weighted_sum, exact_sum(inputs, alive)) <= res.error_bound
    seeds_asked = {n for n, req in fed.transcripts[1].requests.items() if req.seed_requests}
    assert seeds_asked == set(fed.transcripts[1].setup.graph.neighbours(IDS[3]))
    # Round 2 (same S after its re-key): a node drops after sharing its key: key shares, from
    # its neighbours only; a counted node silent in stage U is still counted.
    inputs2 = inputs_factory(IDS, length=LENGTH, spec=SPEC, seed=2)
    res2 = _run(fed, 2, inputs2, drop_m=[IDS[5]], drop_u=[IDS[0]])
    alive2 = [n for n in IDS if n != IDS[5]]
    assert res2.dropped == (IDS[5],) and res2.recovered_from_seeds == ()
    assert res2.silent_in_unmask == (IDS[0],)
    assert max_error(res2.weighted_sum, exact_sum(inputs2, alive2)) <= res2.error_bound
    graph2 = fed.transcripts[2].setup.graph
    asked = {n for n, req in fed.transcripts[2].requests.items() if req.key_share_owners}
    assert asked and asked <= set(graph2.neighbours(IDS[5]))


def test_sparse_round_fails_loudly_when_a_neighbourhood_is_too_thin(
    federation_cls: Any, inputs_factory: Any
) -> None:
    fed = _sparse_fed(federation_cls)
    inputs = inputs_factory(IDS, length=LENGTH, spec=SPEC, seed=1)
    fed.run_round(1, inputs=inputs, threshold=7, graph_degree=K, sharing_threshold=T_NBHD)
    graph = fed.transcripts[1].setup.graph
    victim = IDS[0]
    silent = list(graph.neighbours(victim))[:3]  # 2 of 5 shares of the victim's seed remain
    with pytest.raises(RoundFailed, match=f"self-mask seed of counted node {victim}"):
        _run(fed, 2, inputs, drop_u=silent)


def test_sparse_setup_with_a_weaker_graph_is_refused_by_clients(
    federation_cls: Any, inputs_factory: Any
) -> None:
    fed = federation_cls(list(range(1, 41)), spec=SPEC, length=LENGTH)  # default fractions 0.1 / 0.1
    ids = list(range(1, 41))
    for node in fed.server.needs_keys(ids, round=1):
        fed.server.register_keys(node, fed.clients[node].advertise_keys(round=1))
    plan = sparse_plan(40)
    setup = roundtrip(fed.server.round_setup(round=1, participants=ids, threshold=21, graph_degree=plan.degree,
                                             sharing_threshold=plan.threshold))  # fmt: skip
    x = np.zeros(LENGTH)
    weaker = dataclasses.replace(setup, graph_degree=plan.degree - 2)
    with pytest.raises(ProtocolViolation, match="graph_check"):
        fed.clients[1].mask(x, weight=1.0, setup=weaker)
    low_t = dataclasses.replace(setup, sharing_threshold=(plan.degree + 1) // 2)
    with pytest.raises(ProtocolViolation, match="threshold_check"):
        fed.clients[1].mask(x, weight=1.0, setup=low_t)
    fed.clients[1].mask(x, weight=1.0, setup=setup)  # the planned graph is accepted


def test_sparse_unmask_refusals(federation_cls: Any, inputs_factory: Any) -> None:
    fed = _sparse_fed(federation_cls)
    inputs = inputs_factory(IDS, length=LENGTH, spec=SPEC, seed=1)
    _run(fed, 1, inputs)
    tr = fed.transcripts
    fed.stage_k(IDS, tr[1], round=2, threshold=T_NBHD)
    setup = roundtrip(fed.server.round_setup(round=2, participants=IDS, threshold=7, graph_degree=K,
                                             sharing_threshold=T_NBHD))  # fmt: skip
    graph = setup.graph
    inputs2 = inputs_factory(IDS, length=LENGTH, spec=SPEC, seed=2)
    victim = IDS[0]
    for node in IDS:
        msg = fed.clients[node].mask(inputs2[node][0], weight=inputs2[node][1], setup=setup)
        if node != victim:
            fed.server.receive_masked(node, msg)
    requests = fed.server.unmask_requests()
    stranger = next(v for v in IDS if v != victim and not graph.adjacent(victim, v))
    holder = next(v for v in graph.neighbours(victim))
    saved = fed.clients[stranger].state_dict()
    # A non-neighbour is asked for the victim's seed: refused as a whole.
    with pytest.raises(ProtocolViolation, match="partition_check"):
        fed.clients[stranger].unmask(dataclasses.replace(requests[stranger], seed_requests=(victim,)))
    # A non-neighbour handed a key share of the victim drops it (key_share_neighbour_check).
    env = fed.transcripts[1].masked[victim]
    idx = env.share_recipients.index(holder)
    fed.clients[stranger] = SecureSumClient.from_state_dict(saved, identity=fed.identities[stranger])
    forged = dataclasses.replace(
        requests[stranger], key_share_owners=(victim,), key_share_rounds=(1,),
        key_share_ciphertexts=(env.key_share_ciphertexts[idx],),
    )  # fmt: skip
    assert fed.clients[stranger].unmask(forged).key_share_owners == ()
    # Too few counted in the holder's neighbourhood: refused (neighbourhood_threshold_check).
    near = [v for v in graph.neighbourhood(holder) if v != holder]
    thin = tuple(v for v in IDS if v not in near[:3])
    dropped = tuple(v for v in IDS if v not in thin)
    req = dataclasses.replace(
        requests[holder], counted=thin, dropped=dropped,
        self_share_owners=tuple(w for w in requests[holder].self_share_owners if w in thin),
        self_share_ciphertexts=tuple(c for w, c in zip(requests[holder].self_share_owners,
                                                       requests[holder].self_share_ciphertexts, strict=True) if w in thin),
        key_share_owners=(), key_share_rounds=(), key_share_ciphertexts=(), seed_requests=(),
    )  # fmt: skip
    with pytest.raises(ProtocolViolation, match="neighbourhood_threshold_check"):
        fed.clients[holder].unmask(req)


def test_sparse_carried_key_with_lower_threshold_is_refused_by_its_owner(
    federation_cls: Any, inputs_factory: Any
) -> None:
    """The v2 key-threshold binding holds per neighbourhood: a key shared with t = 3 is not
    used in a round whose sharing threshold is 4."""
    fed = _sparse_fed(federation_cls)
    _run(fed, 1, inputs_factory(IDS, length=LENGTH, spec=SPEC, seed=1))
    assert fed.server.needs_keys(IDS, round=2, threshold=4) == IDS
    with pytest.raises(ProtocolViolation, match="run stage K first"):
        fed.server.round_setup(round=2, participants=IDS, threshold=7, graph_degree=K, sharing_threshold=4)
    setup = dataclasses.replace(
        fed.server.round_setup(round=2, participants=IDS, threshold=7, graph_degree=K, sharing_threshold=T_NBHD),
        sharing_threshold=4,
    )
    with pytest.raises(ProtocolViolation, match="key_threshold_check"):
        fed.clients[IDS[0]].mask(np.zeros(LENGTH), weight=1.0, setup=setup)
