"""Local training loop: learns, reports honest metrics, applies the FedProx term."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oneliac_flwr.data.tables import Table
from oneliac_flwr.errors import ConfigError
from oneliac_flwr.models import build_model
from oneliac_flwr.training import evaluate, get_weights, make_loader, make_optimizer, set_weights, train_local


def _separable(n: int = 200, seed: int = 0) -> Table:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    features = rng.normal(size=(n, 4)) + (labels[:, None] * 2.0 - 1.0) * 1.5
    return Table(features.astype(np.float32), labels.astype(np.int64), ("a", "b", "c", "d"), "synthetic")


def _model() -> torch.nn.Module:
    return build_model("logistic", num_features=4, num_classes=2, generator=torch.Generator().manual_seed(0))


def test_training_lowers_loss_and_reaches_high_accuracy() -> None:
    table = _separable()
    model = _model()
    before = evaluate(model, table)
    optimizer = make_optimizer(model, name="sgd", learning_rate=0.1)
    result = train_local(model, make_loader(table, batch_size=16, generator=torch.Generator().manual_seed(0)), optimizer, epochs=5)
    after = evaluate(model, table)
    assert after.loss < before.loss * 0.5
    assert after.accuracy > 0.95
    assert result.num_examples == 200
    assert 0.0 <= result.accuracy <= 1.0


def test_proximal_term_keeps_weights_closer_to_the_start() -> None:
    table = _separable()

    def distance(mu: float) -> float:
        model = _model()
        start = get_weights(model)
        optimizer = make_optimizer(model, name="sgd", learning_rate=0.1)
        loader = make_loader(table, batch_size=16, generator=torch.Generator().manual_seed(0))
        train_local(model, loader, optimizer, epochs=3, proximal_mu=mu)
        return float(sum(np.sum((w - s) ** 2) for w, s in zip(get_weights(model), start, strict=True)))

    assert distance(5.0) < 0.5 * distance(0.0)


def test_set_weights_refuses_wrong_shapes() -> None:
    model = _model()
    weights = get_weights(model)
    with pytest.raises(ConfigError, match="expected shape"):
        set_weights(model, [weights[0].T, weights[1]])
    with pytest.raises(ConfigError, match="expected 2 arrays"):
        set_weights(model, weights[:1])


def test_evaluate_on_empty_table_reports_no_examples() -> None:
    empty = Table(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), ("a", "b", "c", "d"), "empty")
    assert evaluate(_model(), empty).num_examples == 0
