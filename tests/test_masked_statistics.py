"""Statistics packed into the secure-sum vector: their weighted sums decode to weighted means."""

from __future__ import annotations

import math

import numpy as np
import pytest

from oneliac_flwr.masked_statistics import LOSS_CAP, MaskedStatistics, pack_statistics, slots, unpack_statistics


def test_the_sum_of_packed_statistics_decodes_to_weighted_means() -> None:
    a = MaskedStatistics(train_loss=0.4, train_accuracy=0.9, eval_loss=0.5, eval_accuracy=0.8, label_fractions=(0.25, 0.75))
    b = MaskedStatistics(train_loss=0.8, train_accuracy=0.6, eval_loss=None, eval_accuracy=None, label_fractions=(1.0, 0.0))
    bound = 2.0
    total = 30 * pack_statistics(a, bound=bound) + 10 * pack_statistics(b, bound=bound)
    assert total.shape == (slots(2),)
    mean = unpack_statistics(total, bound=bound)
    assert mean.total_weight == pytest.approx(40)
    assert mean.train_loss == pytest.approx((30 * 0.4 + 10 * 0.8) / 40)
    assert mean.train_accuracy == pytest.approx((30 * 0.9 + 10 * 0.6) / 40)
    assert mean.eval_accuracy == pytest.approx(0.8) and mean.eval_loss == pytest.approx(0.5)  # b did not evaluate
    assert mean.label_fractions == pytest.approx(((30 * 0.25 + 10) / 40, 30 * 0.75 / 40))


def test_every_packed_value_fits_the_ring_bound_even_for_wild_inputs() -> None:
    wild = MaskedStatistics(train_loss=math.inf, train_accuracy=-3, eval_loss=1e9, eval_accuracy=2, label_fractions=(1.5, -1))
    packed = pack_statistics(wild, bound=1.0)
    assert np.all(packed >= 0) and np.all(packed <= 1.0) and np.isfinite(packed).all()
    assert unpack_statistics(packed, bound=1.0).train_loss == pytest.approx(LOSS_CAP)


def test_no_weight_decodes_to_no_statistics() -> None:
    empty = unpack_statistics(np.zeros(slots(3)), bound=1.0)
    assert empty.total_weight == 0 and empty.eval_accuracy is None and math.isnan(empty.train_loss)
