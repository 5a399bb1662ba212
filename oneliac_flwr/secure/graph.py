"""Sparse sharing graphs (SecAgg+-style, Bell et al. 2020) derived from public randomness.

Each participant masks against, and shares its secrets with, only its ``k`` neighbours in
a random ``k``-regular graph instead of all ``|S| - 1`` others. The graph is a Harary
circulant ``H(k, n)``: the participants are placed on a circle by a permutation seeded
with ``SHA-256(domain || run || n || S sorted)`` (``docs/secure-sum.md`` section 12), and
each is joined to the ``k/2`` positions on either side. Every client recomputes the graph
from the round setup; the coordinator chooses only ``S``.

:func:`failure_bound` is the union bound of section 12 on the probability that the graph
fails the stated security (a node with ``>= t`` colluding neighbours, a node with too few
surviving neighbours, or the honest survivors split into two components);
:func:`plan_graph` picks the cheapest ``(k, t)`` that keeps it below ``2^-40``.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from math import comb

from oneliac_flwr.errors import ConfigError, ProtocolViolation

__all__ = [
    "DEFAULT_COLLUDING_FRACTION",
    "DEFAULT_DROPOUT_FRACTION",
    "GRAPHS",
    "SECURITY_BITS",
    "GraphPlan",
    "SharingGraph",
    "failure_bound",
    "plan_graph",
    "sharing_graph",
]

#: Statistical security of the graph: failure probability at most ``2^-SECURITY_BITS``.
SECURITY_BITS = 40
#: Default fraction of the round's participants that may collude with the coordinator.
DEFAULT_COLLUDING_FRACTION = 0.1
#: Default fraction of the round's participants that may drop out.
DEFAULT_DROPOUT_FRACTION = 0.1
#: ``secure_sum.graph`` values: ``auto`` (sparse where it halves the work), ``complete``, ``sparse``.
GRAPHS: tuple[str, ...] = ("auto", "complete", "sparse")

_DOMAIN = b"oneliac-secure-sum/v2|sharing-graph|"
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")


@dataclass(frozen=True)
class GraphPlan:
    """The sharing graph of a round: ``degree`` 0 is the complete graph.

    ``threshold`` is the Shamir threshold of every sharing in the round (per neighbourhood
    of ``degree + 1`` shares, or of the ``|S|`` shares of the complete graph).
    """

    degree: int
    threshold: int

    @property
    def sparse(self) -> bool:
        return self.degree > 0


@dataclass(frozen=True)
class SharingGraph:
    """Who masks against and shares with whom in one round.

    ``neighbourhood(u)`` (sorted, including ``u``) receives ``u``'s shares; ``neighbours(u)``
    (without ``u``) are the peers ``u`` masks against. ``degree`` 0: complete graph.
    """

    participants: tuple[int, ...]
    degree: int
    _adjacent: dict[int, tuple[int, ...]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def sparse(self) -> bool:
        return self.degree > 0

    def neighbours(self, node: int) -> tuple[int, ...]:
        if not self.sparse:
            if node not in self._adjacent:
                raise ProtocolViolation(f"graph: node {node} is not a participant")
            return tuple(v for v in self.participants if v != node)
        try:
            return self._adjacent[node]
        except KeyError:
            raise ProtocolViolation(f"graph: node {node} is not a participant") from None

    def neighbourhood(self, node: int) -> tuple[int, ...]:
        if not self.sparse:
            self.neighbours(node)  # membership check
            return self.participants
        return tuple(sorted((*self.neighbours(node), node)))

    def adjacent(self, u: int, v: int) -> bool:
        return u != v and v in self.neighbours(u)


def _permutation(seed: bytes, n: int) -> list[int]:
    """Uniform permutation of ``range(n)``: Fisher-Yates driven by SHAKE-256(seed), rejection sampled."""
    need = 8 * (n + 16)
    stream = hashlib.shake_256(seed).digest(need)
    pos = 0
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        bound = i + 1
        limit = 2**64 - (2**64 % bound)
        while True:
            if pos + 8 > len(stream):
                need *= 2
                stream = hashlib.shake_256(seed).digest(need)
            x = _U64.unpack_from(stream, pos)[0]
            pos += 8
            if x < limit:
                break
        j = x % bound
        order[i], order[j] = order[j], order[i]
    return order


def graph_seed(run_id: int, participants: Sequence[int]) -> bytes:
    """``SHA-256(domain || I64(run) || I32(n) || I64(v) for v in S sorted)``."""
    nodes = tuple(participants)
    data = _DOMAIN + _U64.pack(run_id) + _U32.pack(len(nodes)) + b"".join(_U64.pack(v) for v in nodes)
    return hashlib.sha256(data).digest()


def _check_degree(degree: int, n: int) -> None:
    if not isinstance(degree, int) or isinstance(degree, bool) or degree < 0:
        raise ProtocolViolation(f"graph_check: degree must be an integer >= 0, got {degree!r}")
    if degree and (degree % 2 or not 2 <= degree <= n - 2):
        raise ProtocolViolation(f"graph_check: a sparse degree must be even and in [2, {n - 2}] for {n} participants, got {degree}")


def sharing_graph(run_id: int, participants: Sequence[int], degree: int) -> SharingGraph:
    """The round's graph, a pure function of ``(run, S, degree)`` that every client recomputes.

    Raises
    ------
    ProtocolViolation
        ``graph_check``: ``degree`` is not 0 (complete) or an even number in ``[2, |S| - 2]``.
    """
    nodes = tuple(participants)
    if any(a >= b for a, b in zip(nodes, nodes[1:], strict=False)):
        raise ProtocolViolation("graph: participants must be strictly increasing")
    n = len(nodes)
    _check_degree(degree, n)
    if not degree:
        return SharingGraph(nodes, 0, {v: () for v in nodes})
    return SharingGraph(nodes, degree, _circulant(graph_seed(run_id, nodes), nodes, degree))


@lru_cache(maxsize=16)
def _circulant(seed: bytes, nodes: tuple[int, ...], degree: int) -> dict[int, tuple[int, ...]]:
    n, half = len(nodes), degree // 2
    ring = [nodes[i] for i in _permutation(seed, n)]  # ring[p]: the node at position p
    adjacent: dict[int, tuple[int, ...]] = {}
    for p, node in enumerate(ring):
        peers = [ring[(p + j) % n] for j in range(1, half + 1)] + [ring[(p - j) % n] for j in range(1, half + 1)]
        adjacent[node] = tuple(sorted(peers))
    return adjacent


# --------------------------------------------------------------------------- security bound
def _tail_at_least(population: int, marked: int, draws: int, at_least: int) -> float:
    """``P(X >= at_least)`` for ``X`` hypergeometric (``draws`` from ``population`` with ``marked``)."""
    top = min(marked, draws)
    if at_least > top:
        return 0.0
    at_least = max(at_least, 0)
    favourable = sum(comb(marked, i) * comb(population - marked, draws - i) for i in range(at_least, top + 1))
    return favourable / comb(population, draws)


@lru_cache(maxsize=4096)
def failure_bound(n: int, degree: int, threshold: int, colluding_fraction: float, dropout_fraction: float) -> float:
    """Union bound on the probability that the graph fails (``docs/secure-sum.md`` section 12).

    With ``c = floor(gamma n)`` colluders and ``d = floor(delta n)`` dropouts fixed
    independently of the graph, the sum of

    * ``n P[Hyp(n-1, c, k) >= t]``: some honest node has ``t`` colluding neighbours (they
      could rebuild its secrets);
    * ``n P[Hyp(n-1, d, k) >= k - t + 1]``: some node keeps fewer than ``t`` surviving
      holders (its masks could not be removed: the round would fail);
    * ``n C(c + d, k/2) / C(n, k/2)``: a run of ``k/2`` consecutive colluding or dropped
      positions on the circle, the only way the honest survivors' graph can split.
    """
    if degree == 0:
        return 0.0
    c, d = int(colluding_fraction * n), int(dropout_fraction * n)
    p_collude = n * _tail_at_least(n - 1, c, degree, threshold)
    p_drop = n * _tail_at_least(n - 1, d, degree, degree - threshold + 1)
    half, bad = degree // 2, c + d
    p_split = n * comb(bad, half) / comb(n, half) if half <= bad else 0.0
    return p_collude + p_drop + p_split


def _check_fraction(value: float, name: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 0.5:
        raise ConfigError(name, f"expected a fraction in [0, 0.5), got {value!r}")
    return float(value)


def sparse_plan(
    n: int,
    *,
    colluding_fraction: float = DEFAULT_COLLUDING_FRACTION,
    dropout_fraction: float = DEFAULT_DROPOUT_FRACTION,
    min_threshold: int = 2,
) -> GraphPlan | None:
    """Smallest even degree ``k`` (then smallest ``t``) with ``failure_bound <= 2^-40``; None if none ``< n - 1``."""
    gamma = _check_fraction(colluding_fraction, "secure_sum.colluding_fraction")
    delta = _check_fraction(dropout_fraction, "secure_sum.dropout_fraction")
    target = 2.0**-SECURITY_BITS
    for k in range(2, n - 1, 2):
        for t in range(max((k + 1) // 2 + 1, min_threshold), k + 2):
            if failure_bound(n, k, t, gamma, delta) <= target:
                return GraphPlan(k, t)
    return None


def plan_graph(
    n: int,
    *,
    complete_threshold: int,
    graph: str = "auto",
    colluding_fraction: float = DEFAULT_COLLUDING_FRACTION,
    dropout_fraction: float = DEFAULT_DROPOUT_FRACTION,
    min_threshold: int = 2,
) -> GraphPlan:
    """The graph of a round of ``n`` participants.

    ``complete``: every pair (threshold ``complete_threshold``). ``sparse``: the cheapest
    graph of :func:`sparse_plan`, complete if there is none. ``auto`` (default): sparse only
    when a neighbourhood (``k + 1``) is at most half the round, i.e. it at least halves the
    pairwise work; otherwise the complete graph, whose privacy holds against up to ``t - 1``
    colluders whatever their fraction (section 12).
    """
    if graph not in GRAPHS:
        raise ConfigError("secure_sum.graph", f"expected one of {list(GRAPHS)}, got {graph!r}")
    complete = GraphPlan(0, complete_threshold)
    if graph == "complete":
        return complete
    plan = sparse_plan(
        n, colluding_fraction=colluding_fraction, dropout_fraction=dropout_fraction, min_threshold=min_threshold
    )
    if plan is None or (graph == "auto" and 2 * (plan.degree + 1) > n):
        return complete
    return plan


def check_graph(
    n: int,
    degree: int,
    threshold: int,
    *,
    colluding_fraction: float,
    dropout_fraction: float,
    min_threshold: int,
) -> None:
    """Client-side check of a round's graph parameters (``graph_check``, ``threshold_check``).

    A sparse graph must be even-degree, its per-neighbourhood threshold a strict majority of
    the ``k + 1`` shares and at least the hospital's minimum, and its failure bound, for the
    hospital's own colluding and dropout fractions, at most ``2^-40``.
    """
    _check_degree(degree, n)
    if not degree:
        return
    if threshold < (degree + 1) // 2 + 1 or threshold > degree + 1:
        raise ProtocolViolation(
            f"threshold_check: neighbourhood threshold {threshold} is not a majority of the {degree + 1} shares"
        )
    if threshold < min_threshold:
        raise ProtocolViolation(f"threshold_check: t = {threshold} is below this hospital's minimum {min_threshold}")
    bound = failure_bound(n, degree, threshold, colluding_fraction, dropout_fraction)
    if bound > 2.0**-SECURITY_BITS:
        raise ProtocolViolation(
            f"graph_check: degree {degree} with threshold {threshold} for {n} participants fails with "
            f"probability up to {bound:.3g} > 2^-{SECURITY_BITS} (colluding fraction {colluding_fraction}, "
            f"dropout fraction {dropout_fraction})"
        )
