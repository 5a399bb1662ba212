"""L2 clipping: bound, direction, zero vectors, per-layer, dtypes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from oneliac_flwr.privacy import clip_l2, l2_norm

layer = hnp.arrays(
    np.float64,
    hnp.array_shapes(min_dims=1, max_dims=2, max_side=6),
    elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
)


@settings(max_examples=60, deadline=None)
@given(layers=st.lists(layer, min_size=1, max_size=4), clip=st.floats(0.0, 1e3))
def test_flat_clipping_bounds_norm_and_keeps_direction(layers: list[np.ndarray], clip: float) -> None:
    with np.errstate(divide="raise", invalid="raise"):
        clipped, original = clip_l2(layers, clip)
    assert original == pytest.approx(math.sqrt(sum(float(np.sum(a * a)) for a in layers)), rel=1e-9)
    assert l2_norm(clipped) <= clip * (1 + 1e-12) + 1e-300
    if original <= clip:
        for before, after in zip(layers, clipped, strict=True):
            np.testing.assert_array_equal(before, after)
    else:
        factor = clip / original
        for before, after in zip(layers, clipped, strict=True):
            np.testing.assert_allclose(after, before * factor, rtol=1e-9, atol=1e-300)


@settings(max_examples=40, deadline=None)
@given(layers=st.lists(layer, min_size=1, max_size=4), clip=st.floats(0.01, 1e3))
def test_per_layer_clipping_bounds_each_layer_and_the_total(layers: list[np.ndarray], clip: float) -> None:
    clipped, original = clip_l2(layers, clip, per_layer=True)
    bound = clip / math.sqrt(len(layers))
    for after in clipped:
        assert l2_norm(after) <= bound * (1 + 1e-12)
    assert l2_norm(clipped) <= clip * (1 + 1e-12)
    assert original == pytest.approx(l2_norm(layers), rel=1e-12)


def test_zero_vector_stays_zero_without_division_by_zero() -> None:
    with np.errstate(divide="raise", invalid="raise"):
        clipped, norm = clip_l2([np.zeros(3), np.zeros((2, 2))], 0.0)
        assert norm == 0.0
        assert all(not np.any(a) and np.all(np.isfinite(a)) for a in clipped)
        single, norm_single = clip_l2(np.zeros(4), 1.0, per_layer=True)
    assert norm_single == 0.0
    np.testing.assert_array_equal(single, np.zeros(4))


def test_known_values() -> None:
    clipped, norm = clip_l2(np.array([3.0, 4.0]), 1.0)
    assert norm == 5.0
    np.testing.assert_allclose(clipped, [0.6, 0.8], rtol=1e-12)
    unchanged, norm = clip_l2([np.array([0.3]), np.array([0.4])], 1.0)
    assert norm == pytest.approx(0.5)
    assert [a.tolist() for a in unchanged] == [[0.3], [0.4]]


def test_float32_stays_float32_and_strictly_within_bound() -> None:
    rng = np.random.default_rng(0)
    update = [rng.normal(size=(50, 20)).astype(np.float32), rng.normal(size=7).astype(np.float32)]
    clipped, _ = clip_l2(update, 0.1)
    assert [a.dtype for a in clipped] == [np.float32, np.float32]
    assert l2_norm(clipped) <= 0.1
    assert l2_norm(clipped) >= 0.1 * (1 - 1e-5)


def test_input_is_not_modified() -> None:
    update = np.array([3.0, 4.0])
    clip_l2(update, 1.0)
    np.testing.assert_array_equal(update, [3.0, 4.0])


def test_structure_is_preserved() -> None:
    clipped, _ = clip_l2((np.ones(2), np.ones(3)), 1.0)
    assert isinstance(clipped, tuple)
    single, _ = clip_l2(np.ones(2), 1.0)
    assert isinstance(single, np.ndarray)


@pytest.mark.parametrize(
    ("update", "clip", "message"),
    [
        (np.ones(2), -1.0, "clip_norm: must be >= 0, got -1.0"),
        (np.array([1.0, np.nan]), 1.0, "update: must contain only finite values"),
        (np.array([np.inf]), 1.0, "update: must contain only finite values"),
        ("not an array", 1.0, "update: must be an ndarray"),
    ],
)
def test_bad_inputs_are_rejected(update: object, clip: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        clip_l2(update, clip)  # type: ignore[type-var]
