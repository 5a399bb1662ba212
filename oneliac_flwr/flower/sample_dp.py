"""Sample-level DP (DP-SGD through Opacus) inside one hospital, across rounds and runs.

The hospital's DP-SGD history (noise multiplier, sample rate, steps) lives in its own
:class:`~oneliac_flwr.privacy.hospital.HospitalPrivacyState` on its own disk, so its
epsilon accumulates over every round of every run, and a restarted SuperNode resumes it.
The hospital calibrates its noise from its own policy (never from a coordinator's
number alone), refuses a round that would exceed its epsilon cap, and records the
round's steps before the trained model leaves. Poisson sampling and noise draw from
generators seeded by the operating system.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from flwr.app import ConfigRecord
from torch.utils.data import DataLoader

from oneliac_flwr.privacy import DpSgdSteps
from oneliac_flwr.privacy.dpsgd import accountant_state, calibrate_dpsgd_noise, make_private, would_exceed_budget
from oneliac_flwr.privacy.entropy import os_torch_generator
from oneliac_flwr.privacy.hospital import HospitalPrivacyState
from oneliac_flwr.training import TrainResult, train_local
from oneliac_flwr.validation import DeclaredPrivacy

__all__ = ["DpSgdOutcome", "train_with_dpsgd"]


@dataclass(frozen=True)
class DpSgdOutcome:
    """What one DP-SGD round produced, or why it was refused (a local detail, never sent)."""

    result: TrainResult | None
    declared: DeclaredPrivacy | None
    refusal: str | None = None


@lru_cache(maxsize=64)
def _calibrated_noise(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """Calibration is a bisection over the accountant: do it once per setting."""
    return calibrate_dpsgd_noise(epsilon=epsilon, delta=delta, sample_rate=sample_rate, steps=steps)


def train_with_dpsgd(
    model: torch.nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    *,
    settings: ConfigRecord,
    state: HospitalPrivacyState,
    epochs: int,
    proximal_mu: float = 0.0,
) -> DpSgdOutcome:
    """Train one round with DP-SGD, or refuse if it would exceed the hospital's cap.

    Parameters
    ----------
    model, loader, optimizer
        The hospital's model (trained in place), data and optimizer. The loader's
        generator drives Opacus' Poisson sampler: give it one seeded by the OS.
    settings : ConfigRecord
        The coordinator's instruction: ``clip-norm``, ``epsilon-budget``, ``max-rounds``
        and optionally ``noise-multiplier``. The hospital calibrates with the smaller of
        the coordinator's budget and its own cap, and never uses less noise than its
        policy's minimum.
    state : HospitalPrivacyState
        The hospital's DP-SGD history on its own disk (read, then extended and saved).
    epochs : int
        Local epochs per round.
    """
    policy = state.policy
    clip = float(settings["clip-norm"])
    budget = min(float(settings["epsilon-budget"]), policy.epsilon)
    delta = policy.delta
    batches = max(1, len(loader))
    sample_rate = 1.0 / batches  # Opacus' Poisson sampler uses this rate
    steps = epochs * batches
    if "noise-multiplier" in settings:
        noise = float(settings["noise-multiplier"])
    else:
        noise = _calibrated_noise(budget, delta, sample_rate, int(settings["max-rounds"]) * steps)
    noise = max(noise, policy.min_noise_multiplier)
    history = state.dpsgd_history
    if would_exceed_budget(history, DpSgdSteps(noise, sample_rate, steps), policy.epsilon, delta):
        return DpSgdOutcome(
            None,
            None,
            f"sample-level budget: epsilon spent {state.epsilon():.4f}; another round would exceed this "
            f"hospital's cap epsilon={policy.epsilon}",
        )
    private = make_private(
        module=model,
        optimizer=optimizer,
        data_loader=loader,
        noise_multiplier=noise,
        max_grad_norm=clip,
        history=history,
        noise_generator=os_torch_generator(),
    )
    result = train_local(private.module, private.data_loader, private.optimizer, epochs=epochs, proximal_mu=proximal_mu)
    state.record_dpsgd(accountant_state(private.engine))  # saved before the model leaves
    # Declared: the clip and mechanism only. The noise multiplier and epsilon follow from
    # the sample rate, i.e. from the hospital's row count, so they are not sent.
    return DpSgdOutcome(result, DeclaredPrivacy(clip_norm=clip, mechanism="gaussian"))
