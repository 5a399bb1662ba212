"""One local training run from the global model, with the project's training loop.

Training is :func:`oneliac_flwr.training.train_local` (or, under a sample-level privacy
policy, DP-SGD through Opacus with the hospital's DP-SGD history, exactly as the Flower
ClientApp does). Shuffling and DP-SGD draws come from OS entropy.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
from torch import nn

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.data import OrganizationData
from oneliac_flwr.errors import PrivacyBudgetExhausted
from oneliac_flwr.masked_statistics import MaskedStatistics
from oneliac_flwr.privacy.entropy import os_torch_generator
from oneliac_flwr.privacy.hospital import HospitalPrivacyState
from oneliac_flwr.sdk.model import GlobalModel
from oneliac_flwr.sdk.update import ModelUpdate
from oneliac_flwr.training import evaluate, make_loader, make_optimizer, train_local

__all__ = ["LocalModel", "masked_statistics", "train_from_global"]


@dataclass(frozen=True)
class LocalModel:
    """What :meth:`FederatedLearner.train_local` returns.

    Attributes
    ----------
    gradients : ModelUpdate
        The model update (trained minus global weights), same names and shapes as the weights.
    metrics : dict
        ``train_loss``, ``train_accuracy`` and, on the local validation rows,
        ``val_loss``, ``val_accuracy`` (local figures: never sent).
    num_examples : int
        Training rows used.
    model_version : str
        The global model version trained from.
    model : torch.nn.Module
        The trained local model.
    """

    gradients: ModelUpdate
    metrics: dict[str, float]
    num_examples: int
    model_version: str
    model: nn.Module = field(repr=False)


def train_from_global(
    global_model: GlobalModel,
    data: OrganizationData,
    config: ExperimentConfig,
    *,
    epochs: int,
    batch_size: int,
    state: HospitalPrivacyState | None,
) -> LocalModel:
    """Train a copy of ``global_model`` on the hospital's rows.

    Parameters
    ----------
    global_model : GlobalModel
        The round's base model.
    data : OrganizationData
        Scaled training and local-validation rows.
    config : ExperimentConfig
        ``training`` (optimizer, learning rate), ``privacy_budget`` (clip, max rounds,
        noise multiplier under sample-level DP), ``aggregation_config.max_rounds``.
    epochs, batch_size : int
        Local epochs and batch size.
    state : HospitalPrivacyState or None
        The hospital's privacy state; DP-SGD runs when its policy's unit is ``sample``.

    Raises
    ------
    PrivacyBudgetExhausted
        If DP-SGD for this round would exceed the hospital's own cap (nothing trained).
    """
    module = copy.deepcopy(global_model.module)
    before = global_model.arrays()
    loader = make_loader(data.train, batch_size=batch_size, generator=os_torch_generator())
    settings = config.training
    optimizer = make_optimizer(module, name=settings.optimizer, learning_rate=settings.learning_rate,
                               momentum=settings.momentum)  # fmt: skip
    training_privacy = None
    if state is not None and state.policy.unit == "sample":
        from oneliac_flwr.flower.sample_dp import train_with_dpsgd  # the one DP-SGD round (Opacus)

        budget = config.privacy_budget
        instruction: dict[str, float | int] = {"clip-norm": budget.clip_norm, "epsilon-budget": budget.epsilon,
                                               "max-rounds": config.aggregation_config.max_rounds}  # fmt: skip
        if budget.noise_multiplier is not None:
            instruction["noise-multiplier"] = budget.noise_multiplier
        outcome = train_with_dpsgd(module, loader, optimizer, settings=instruction, state=state, epochs=epochs)  # type: ignore[arg-type]
        if outcome.refusal is not None or outcome.result is None:
            raise PrivacyBudgetExhausted(outcome.refusal or "DP-SGD produced no model")
        result, training_privacy = outcome.result, outcome.declared
    else:
        result = train_local(module, loader, optimizer, epochs=epochs)
    after = module.state_dict()
    update = {name: after[name].detach().cpu().numpy().astype(before[name].dtype) - before[name] for name in global_model.names}
    metrics = {"train_loss": result.loss, "train_accuracy": result.accuracy}
    if len(data.validation):
        held_out = evaluate(module, data.validation)
        metrics.update(val_loss=held_out.loss, val_accuracy=held_out.accuracy)
    gradients = ModelUpdate(update, model_version=global_model.model_version, num_examples=result.num_examples,
                            training_privacy=training_privacy)  # fmt: skip
    return LocalModel(gradients=gradients, metrics={k: float(v) for k, v in metrics.items()},
                      num_examples=result.num_examples, model_version=global_model.model_version, model=module)  # fmt: skip


def masked_statistics(local: LocalModel, received: GlobalModel, data: OrganizationData,
                      config: ExperimentConfig) -> MaskedStatistics:  # fmt: skip
    """What a secure-sum round without DP appends to the masked update, as the Flower
    client does: training loss and accuracy, the evaluation of the received model on the
    local validation rows, and the training label fractions.
    """
    received_eval: tuple[float | None, float | None] = (None, None)
    if len(data.validation):
        result = evaluate(copy.deepcopy(received.module), data.validation)
        received_eval = (result.loss, result.accuracy)
    counts = np.bincount(data.train.labels, minlength=config.dataset.num_classes).astype(np.float64)
    return MaskedStatistics(
        train_loss=local.metrics["train_loss"], train_accuracy=local.metrics["train_accuracy"],
        eval_loss=received_eval[0], eval_accuracy=received_eval[1],
        label_fractions=tuple(counts / max(counts.sum(), 1.0)),
    )  # fmt: skip
