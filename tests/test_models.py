"""Models are chosen by name and initialised from the generator passed in."""

from __future__ import annotations

import pytest
import torch

from oneliac_flwr.errors import ConfigError
from oneliac_flwr.models import build_model


def test_same_generator_seed_gives_the_same_weights() -> None:
    a = build_model("mlp", num_features=5, num_classes=3, hidden_sizes=(4,), generator=torch.Generator().manual_seed(1))
    b = build_model("mlp", num_features=5, num_classes=3, hidden_sizes=(4,), generator=torch.Generator().manual_seed(1))
    c = build_model("mlp", num_features=5, num_classes=3, hidden_sizes=(4,), generator=torch.Generator().manual_seed(2))
    for (ka, va), (_, vb), (_, vc) in zip(a.state_dict().items(), b.state_dict().items(), c.state_dict().items(), strict=True):
        assert torch.equal(va, vb), ka
        assert not torch.equal(va, vc), ka


def test_shapes() -> None:
    logistic = build_model("logistic", num_features=30, num_classes=2, generator=torch.Generator())
    assert logistic(torch.zeros(7, 30)).shape == (7, 2)
    mlp = build_model("mlp", num_features=30, num_classes=2, hidden_sizes=(16, 8), generator=torch.Generator())
    assert [tuple(p.shape) for p in mlp.parameters()] == [(16, 30), (16,), (8, 16), (8,), (2, 8), (2,)]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": "transformer", "num_features": 3, "num_classes": 2}, "model.name"),
        ({"name": "logistic", "num_features": 0, "num_classes": 2}, "num_features"),
        ({"name": "logistic", "num_features": 3, "num_classes": 1}, "dataset.num_classes"),
    ],
)
def test_bad_arguments_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_model(**kwargs, generator=torch.Generator())
    assert info.value.field == field
