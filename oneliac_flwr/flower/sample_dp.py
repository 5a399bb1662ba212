"""Sample-level DP (DP-SGD through Opacus) inside one organization, across rounds.

The organization's accountant history (noise multiplier, sample rate, steps) is kept in
Flower's ``context.state``, so its epsilon accumulates over the whole run instead of
restarting every round. Before training, the client checks that the round fits its
budget and refuses otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from flwr.app import ConfigRecord, RecordDict
from torch.utils.data import DataLoader

from oneliac_flwr.privacy import DpSgdSteps
from oneliac_flwr.privacy.dpsgd import (
    accountant_state,
    calibrate_dpsgd_noise,
    flatten_history,
    make_private,
    sample_level_epsilon,
    unflatten_history,
    would_exceed_budget,
)
from oneliac_flwr.training import TrainResult, train_local
from oneliac_flwr.validation import DeclaredPrivacy

__all__ = ["HISTORY_KEY", "DpSgdOutcome", "train_with_dpsgd"]

HISTORY_KEY = "dp-sgd-history"
NOISE_KEY = "dp-sgd-noise"


@dataclass(frozen=True)
class DpSgdOutcome:
    """What one DP-SGD round produced, or why it was refused."""

    result: TrainResult | None
    declared: DeclaredPrivacy | None
    can_continue: bool
    refusal: str | None = None


def _calibrated_noise(state: RecordDict, *, epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """Calibrate once per run (a bisection over the accountant) and keep it in ``state``."""
    key = [float(epsilon), float(delta), float(sample_rate), float(steps)]
    stored = state.get(NOISE_KEY)
    if isinstance(stored, ConfigRecord) and list(stored["for"]) == key:
        return float(stored["noise-multiplier"])
    noise = calibrate_dpsgd_noise(epsilon=epsilon, delta=delta, sample_rate=sample_rate, steps=steps)
    state[NOISE_KEY] = ConfigRecord({"for": key, "noise-multiplier": noise})
    return noise


def train_with_dpsgd(
    model: torch.nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    *,
    settings: ConfigRecord,
    state: RecordDict,
    epochs: int,
    proximal_mu: float = 0.0,
) -> DpSgdOutcome:
    """Train one round with DP-SGD, or refuse if it would exceed the budget.

    Parameters
    ----------
    model, loader, optimizer
        The organization's model (trained in place), data and optimizer.
    settings : ConfigRecord
        From the coordinator: ``clip-norm``, ``epsilon-budget``, ``delta``, ``max-rounds``
        and optionally ``noise-multiplier``. Without it, the noise is calibrated so that
        ``max-rounds`` rounds spend exactly the budget at this organization's sample rate.
    state : RecordDict
        ``context.state``: where the accountant history persists between rounds.
    epochs : int
        Local epochs per round.
    """
    clip = float(settings["clip-norm"])
    budget = float(settings["epsilon-budget"])
    delta = float(settings["delta"])
    batches = max(1, len(loader))
    sample_rate = 1.0 / batches  # Opacus' Poisson sampler uses this rate
    steps = epochs * batches
    if "noise-multiplier" in settings:
        noise = float(settings["noise-multiplier"])
    else:
        noise = _calibrated_noise(state, epsilon=budget, delta=delta, sample_rate=sample_rate, steps=int(settings["max-rounds"]) * steps)
    stored = state.get(HISTORY_KEY)
    history = unflatten_history(list(stored["values"])) if isinstance(stored, ConfigRecord) else []
    next_round = DpSgdSteps(noise, sample_rate, steps)
    if would_exceed_budget(history, next_round, budget, delta):
        spent = sample_level_epsilon(history, delta) if history else 0.0
        return DpSgdOutcome(
            None,
            None,
            False,
            f"sample-level budget: epsilon spent {spent:.4f}; another round would exceed epsilon={budget}",
        )
    private = make_private(
        module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=noise, max_grad_norm=clip, history=history
    )
    result = train_local(private.module, private.data_loader, private.optimizer, epochs=epochs, proximal_mu=proximal_mu)
    history = accountant_state(private.engine)
    state[HISTORY_KEY] = ConfigRecord({"values": flatten_history(history)})
    spent = sample_level_epsilon(history, delta)
    declared = DeclaredPrivacy(clip_norm=clip, noise_multiplier=noise, mechanism="gaussian", epsilon_spent=spent)
    num_examples = len(loader.dataset)  # type: ignore[arg-type]
    result = TrainResult(loss=result.loss, accuracy=result.accuracy, num_examples=num_examples)
    return DpSgdOutcome(result, declared, not would_exceed_budget(history, next_round, budget, delta))
