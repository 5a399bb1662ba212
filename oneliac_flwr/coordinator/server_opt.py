"""Server optimizers of the inner strategy (FedAvgM, FedAdam, FedYogi, FedAdagrad), with
their state as named arrays.

Each is a :class:`~oneliac_flwr.coordinator.round.ServerUpdate` that also exposes its
state (:meth:`state_dict`, :meth:`load_state_dict`), so a coordinator that keeps no state
in process memory (the REST service) can store it beside the model version it produced and
restore it for the next round in any process. The Flower adapter uses the same objects
(:func:`oneliac_flwr.flower.inner.server_update_for`); ``tests/flower`` checks them against
Flower's own strategies bit for bit, round after round, also across a state round trip.

The rules are those of Flower 1.42 (Reddi et al., "Adaptive Federated Optimization", ICLR
2021; Hsu et al. 2019 for server momentum), written with the same operations in the same
order so the results are bit-identical:

- FedAvgM: pseudo-gradient ``g = x - avg``; momentum ``v = mu v + g`` (``v = g`` the first
  time); ``x' = x - lr v``. With ``mu = 0`` and ``lr = 1`` it is FedAvg (no state).
- FedOpt family: ``d = avg - x``; ``m = b1 m + (1 - b1) d``; ``v`` by the rule (Adam:
  ``b2 v + (1 - b2) d^2``, Yogi: ``v - (1 - b2) d^2 sign(v - d^2)``, Adagrad: ``v + d^2``);
  ``x' = x + eta m / (sqrt(v) + tau)``, Adam with the bias-corrected ``eta`` of round ``r``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Protocol

import numpy as np

from oneliac_flwr.config import StrategyConfig
from oneliac_flwr.coordinator.round import ServerUpdate, mean_server_update
from oneliac_flwr.errors import ConfigError, ProtocolViolation

__all__ = [
    "ADAPTIVE_BETAS",
    "AdaptiveRule",
    "ServerAdaptive",
    "ServerMomentum",
    "StatefulServerUpdate",
    "build_server_update",
    "server_state",
]

AdaptiveRule = Literal["adam", "yogi", "adagrad"]
# Flower 1.42's defaults (beta_1, beta_2); our config does not expose them.
ADAPTIVE_BETAS: dict[AdaptiveRule, tuple[float, float]] = {"adam": (0.9, 0.99), "yogi": (0.9, 0.99), "adagrad": (0.0, 0.0)}


class StatefulServerUpdate(ServerUpdate, Protocol):
    """A server update with state carried from round to round (as named arrays)."""

    def state_dict(self) -> dict[str, np.ndarray]:
        """The optimizer state, ``{}`` before the first update."""
        ...

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Continue from a state saved with :meth:`state_dict`."""
        ...


def _pack(prefix: str, arrays: list[np.ndarray] | None) -> dict[str, np.ndarray]:
    return {} if arrays is None else {f"{prefix}.{i}": a for i, a in enumerate(arrays)}


def _unpack(state: Mapping[str, np.ndarray], prefix: str, where: str) -> list[np.ndarray] | None:
    keys = [k for k in state if k.startswith(prefix + ".")]
    if not keys:
        return None
    expected = [f"{prefix}.{i}" for i in range(len(keys))]
    if sorted(keys) != sorted(expected):
        raise ProtocolViolation(f"{where}: {prefix!r} arrays must be numbered 0..{len(keys) - 1}, got {sorted(keys)[:5]}")
    return [np.array(state[k]) for k in expected]


def _check_keys(state: Mapping[str, np.ndarray], prefixes: tuple[str, ...], where: str) -> None:
    unknown = sorted(k for k in state if k.split(".", 1)[0] not in prefixes)
    if unknown:
        raise ProtocolViolation(f"{where}: unknown state arrays {unknown[:5]}; expected {list(prefixes)}")


def _check_shapes(state: list[np.ndarray] | None, model: list[np.ndarray], what: str) -> None:
    if state is None:
        return
    if [a.shape for a in state] != [a.shape for a in model]:
        raise ProtocolViolation(f"server optimizer state {what!r}: shapes {[a.shape for a in state]} do not match the "
                                f"model's {[a.shape for a in model]}")  # fmt: skip


class ServerMomentum:
    """FedAvgM's server update: SGD with momentum on the pseudo-gradient.

    Parameters
    ----------
    server_learning_rate : float
        ``strategy.server_learning_rate``.
    server_momentum : float
        ``strategy.server_momentum`` (0: no momentum, no state).
    """

    def __init__(self, *, server_learning_rate: float, server_momentum: float) -> None:
        self.server_learning_rate = server_learning_rate
        self.server_momentum = server_momentum
        self.momentum: list[np.ndarray] | None = None

    def __call__(
        self,
        server_round: int,
        global_arrays: list[np.ndarray],
        averaged: list[np.ndarray],
        metrics: dict[str, float],
        total_weight: float,
    ) -> tuple[list[np.ndarray] | None, dict[str, float] | None]:
        """The new model from the round's starting model and weighted mean."""
        if self.server_momentum == 0.0 and self.server_learning_rate == 1.0:
            return averaged, metrics
        _check_shapes(self.momentum, global_arrays, "momentum")
        pseudo_gradient = [old - new for new, old in zip(averaged, global_arrays, strict=True)]
        if self.server_momentum > 0.0:
            if self.momentum is None:
                self.momentum = pseudo_gradient
            else:
                self.momentum = [self.server_momentum * mv + pg for mv, pg in zip(self.momentum, pseudo_gradient, strict=True)]
            pseudo_gradient = self.momentum
        return [np.asarray(old - self.server_learning_rate * pg) for old, pg in zip(global_arrays, pseudo_gradient, strict=True)], metrics

    def state_dict(self) -> dict[str, np.ndarray]:
        """``momentum.<i>`` per model array once a round has updated it."""
        return _pack("momentum", self.momentum)

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Continue from a saved state (``{}``: from the start).

        Raises
        ------
        ProtocolViolation
            Arrays other than ``momentum.<i>``.
        """
        _check_keys(state, ("momentum",), "FedAvgM state")
        self.momentum = _unpack(state, "momentum", "FedAvgM state")


class ServerAdaptive:
    """FedAdam, FedYogi or FedAdagrad's server update (first and second moments).

    Parameters
    ----------
    rule : {"adam", "yogi", "adagrad"}
        The second-moment rule.
    eta : float
        Server learning rate (``strategy.eta``).
    tau : float
        Adaptivity (``strategy.tau``).
    beta_1, beta_2 : float
        Moment decay rates (Flower's defaults: :data:`ADAPTIVE_BETAS`).
    """

    def __init__(self, *, rule: AdaptiveRule, eta: float, tau: float, beta_1: float, beta_2: float) -> None:
        if rule not in ADAPTIVE_BETAS:
            raise ConfigError("strategy.name", f"expected an adaptive rule in {sorted(ADAPTIVE_BETAS)}, got {rule!r}")
        self.rule = rule
        self.eta = eta
        self.tau = tau
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.m_t: list[np.ndarray] | None = None
        self.v_t: list[np.ndarray] | None = None

    def __call__(
        self,
        server_round: int,
        global_arrays: list[np.ndarray],
        averaged: list[np.ndarray],
        metrics: dict[str, float],
        total_weight: float,
    ) -> tuple[list[np.ndarray] | None, dict[str, float] | None]:
        """The new model from the round's starting model and weighted mean."""
        _check_shapes(self.m_t, global_arrays, "m_t")
        _check_shapes(self.v_t, global_arrays, "v_t")
        delta_t = [x - c for x, c in zip(averaged, global_arrays, strict=True)]
        m_t = self.m_t if self.m_t is not None else [np.zeros_like(v) for v in averaged]
        self.m_t = [self.beta_1 * v + (1 - self.beta_1) * d for v, d in zip(m_t, delta_t, strict=True)]
        v_t = self.v_t if self.v_t is not None else [np.zeros_like(v) for v in averaged]
        if self.rule == "adam":
            self.v_t = [self.beta_2 * v + (1 - self.beta_2) * (d**2) for v, d in zip(v_t, delta_t, strict=True)]
            eta = self.eta * np.sqrt(1 - np.power(self.beta_2, server_round + 1.0)) / (1 - np.power(self.beta_1, server_round + 1.0))
        elif self.rule == "yogi":
            self.v_t = [v - (1.0 - self.beta_2) * (d**2) * np.sign(v - d**2) for v, d in zip(v_t, delta_t, strict=True)]
            eta = self.eta
        else:
            self.v_t = [v + (d**2) for v, d in zip(v_t, delta_t, strict=True)]
            eta = self.eta
        new = [x + eta * m / (np.sqrt(v) + self.tau) for x, m, v in zip(global_arrays, self.m_t, self.v_t, strict=True)]
        return [np.asarray(a) for a in new], metrics

    def state_dict(self) -> dict[str, np.ndarray]:
        """``m_t.<i>`` and ``v_t.<i>`` per model array once a round has updated them."""
        return {**_pack("m_t", self.m_t), **_pack("v_t", self.v_t)}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Continue from a saved state (``{}``: from the start).

        Raises
        ------
        ProtocolViolation
            Arrays other than ``m_t.<i>`` and ``v_t.<i>``, or only one of the two moments.
        """
        where = f"Fed{self.rule.capitalize()} state"
        _check_keys(state, ("m_t", "v_t"), where)
        m_t, v_t = _unpack(state, "m_t", where), _unpack(state, "v_t", where)
        if (m_t is None) != (v_t is None) or (m_t is not None and v_t is not None and len(m_t) != len(v_t)):
            raise ProtocolViolation(f"{where}: m_t and v_t must be stored together, one array each per model array")
        self.m_t, self.v_t = m_t, v_t


def build_server_update(settings: StrategyConfig) -> ServerUpdate:
    """A fresh server update (no state yet) for ``strategy.name``.

    FedAvg and FedProx: :func:`~oneliac_flwr.coordinator.round.mean_server_update`
    (stateless); FedAvgM: :class:`ServerMomentum`; FedAdam, FedYogi, FedAdagrad:
    :class:`ServerAdaptive` with Flower's default betas.

    Raises
    ------
    ConfigError
        ``strategy.name`` is not a weighted-mean strategy.
    """
    name = settings.name
    if name in ("fedavg", "fedprox"):
        return mean_server_update
    if name == "fedavgm":
        return ServerMomentum(server_learning_rate=settings.server_learning_rate, server_momentum=settings.server_momentum)
    rules: dict[str, AdaptiveRule] = {"fedadam": "adam", "fedyogi": "yogi", "fedadagrad": "adagrad"}
    if name in rules:
        rule = rules[name]
        beta_1, beta_2 = ADAPTIVE_BETAS[rule]
        return ServerAdaptive(rule=rule, eta=settings.eta, tau=settings.tau, beta_1=beta_1, beta_2=beta_2)
    raise ConfigError("strategy.name", f"expected fedavg, fedprox, fedavgm, fedadam, fedyogi or fedadagrad, got {name!r}")


def server_state(update: ServerUpdate) -> dict[str, np.ndarray] | None:
    """The state of a stateful server update, ``None`` for a stateless one."""
    state_dict = getattr(update, "state_dict", None)
    return state_dict() if callable(state_dict) else None
