"""DifferentialPrivacy: clipping to the sensitivity and noise that matches the calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest

from oneliac.encryption import DifferentialPrivacy
from oneliac_flwr.errors import PrivacyError
from oneliac_flwr.privacy.mechanisms import calibrate_analytic_gaussian
from oneliac_flwr.sdk.update import ModelUpdate

N = 400_000


@pytest.mark.parametrize(("epsilon", "delta", "sensitivity"), [(0.1, 1e-5, 1.0), (1.0, 1e-6, 0.5), (4.0, 1e-5, 2.0)])
def test_gaussian_noise_matches_the_calibration_after_clipping(epsilon: float, delta: float, sensitivity: float) -> None:
    direction = np.random.default_rng(1).standard_normal(N)
    raw = {"w": (50.0 * direction / np.linalg.norm(direction)).astype(np.float64)}  # norm 50: clipped
    noisy = DifferentialPrivacy(epsilon, delta=delta).add_noise_to_gradients(raw, sensitivity=sensitivity)
    expected_sigma = calibrate_analytic_gaussian(epsilon=epsilon, delta=delta, sensitivity=sensitivity)
    clipped = raw["w"] * (sensitivity / 50.0)
    residual = noisy["w"] - clipped
    # the empirical std of N draws is within 4 standard errors (sigma / sqrt(2N)) of sigma
    assert abs(residual.std() - expected_sigma) < 4 * expected_sigma / math.sqrt(2 * N)
    # zero-mean noise around the clipped update, whose component along its direction is the clip bound
    assert abs(float(residual.mean())) < 4 * expected_sigma / math.sqrt(N)
    assert float(noisy["w"] @ (clipped / sensitivity)) == pytest.approx(sensitivity, abs=4 * expected_sigma)
    release = noisy.release
    assert release.mechanism == "gaussian" and release.epsilon == epsilon and release.delta == delta
    assert release.sensitivity == sensitivity and release.noise_scale == pytest.approx(expected_sigma)
    assert release.noise_multiplier == pytest.approx(expected_sigma / sensitivity)
    declared = noisy.declared(epsilon_spent=epsilon)
    assert declared.clip_norm == sensitivity and declared.mechanism == "gaussian" and declared.epsilon_spent == epsilon


def test_laplace_scale_and_l1_clipping() -> None:
    raw = {"w": np.full(N, 1.0)}  # L1 norm N: clipped to 1
    noisy = DifferentialPrivacy(0.5, mechanism="laplace").add_noise_to_gradients(raw, sensitivity=1.0)
    b = 1.0 / 0.5
    residual = noisy["w"] - 1.0 / N
    assert abs(residual.std() - b * math.sqrt(2)) < 5 * b / math.sqrt(N)
    assert noisy.release.delta == 0.0 and noisy.release.noise_scale == b


def test_structure_dtypes_and_refusals() -> None:
    update = ModelUpdate({"0.weight": np.ones((2, 30), np.float32), "0.bias": np.zeros(2, np.float32)},
                         model_version="1.0.4", num_examples=120)  # fmt: skip
    noisy = DifferentialPrivacy(epsilon=0.1).add_noise_to_gradients(update, sensitivity=1.0)
    assert noisy.names == update.names and noisy.model_version == "1.0.4" and noisy.num_examples == 120
    assert all(noisy[n].dtype == np.float32 and noisy[n].shape == update[n].shape for n in update)
    assert noisy.release.release_id == noisy.digest() != update.digest()
    again = DifferentialPrivacy(epsilon=0.1).add_noise_to_gradients(update, sensitivity=1.0)
    assert again.release.release_id != noisy.release.release_id  # fresh OS-entropy noise every time
    with pytest.raises(PrivacyError, match="already noised"):
        DifferentialPrivacy(epsilon=0.1).add_noise_to_gradients(noisy)
    with pytest.raises(PrivacyError, match="nan or inf"):
        DifferentialPrivacy(epsilon=0.1).add_noise_to_gradients({"w": np.array([np.nan, 1.0])})
    with pytest.raises(PrivacyError, match="epsilon"):
        DifferentialPrivacy(epsilon=0.0)
    with pytest.raises(PrivacyError, match="sensitivity"):
        DifferentialPrivacy(epsilon=0.1).add_noise_to_gradients(update, sensitivity=-1.0)
