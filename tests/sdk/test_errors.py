"""Bad use gets a clear, typed error: against a real coordinator process."""

from __future__ import annotations


import numpy as np
import pytest

from oneliac.encryption import DifferentialPrivacy
from oneliac.federated import FederatedLearner
from oneliac_flwr.errors import (
    AuthenticationFailed,
    CoordinatorUnavailable,
    CoordinatorError,
    PrivacyBudgetExhausted,
    RoundClosed,
    StaleModelVersion,
    SubmissionRejected,
    ValidationFailed,
)
from oneliac_flwr.privacy import GaussianRelease, PrivacyLedger
from oneliac_flwr.privacy.hospital import HospitalPolicy
from oneliac_flwr.sdk.submission import submit_fedavg
from oneliac_flwr.sdk.transport import CoordinatorClient
from oneliac_flwr.sdk.update import ModelUpdate

from api_conftest import wait_until
from sdk_helpers import breast_cancer_frames, fedavg_settings, register


def with_nan(update: ModelUpdate) -> ModelUpdate:
    arrays = [np.array(a, copy=True) for a in update.arrays()]
    arrays[0].flat[0] = np.nan
    return update.replaced(arrays, release=None)


def test_wrong_key_closed_round_stale_version_nan_and_budget(start_service, hospital_dirs) -> None:  # noqa: ANN001
    service = start_service(extra=fedavg_settings(min_participants=3, max_rounds=3,
                                                  extra=("validation.max_update_norm=100000",)))  # fmt: skip
    dirs = hospital_dirs(4)
    orgs = register(service, dirs[:3])
    frames, _ = breast_cancer_frames(4)
    a, b, c = (FederatedLearner(o["organization_id"], o["api_key"], base_url=service.base_url, state_dir=d, progress=None)
               for o, d in zip(orgs, dirs, strict=False))  # fmt: skip

    # wrong API key: typed, with the coordinator's message
    with pytest.raises(AuthenticationFailed, match="unknown or revoked API key") as wrong:
        FederatedLearner(orgs[0]["organization_id"], "sk_live_not-a-key", base_url=service.base_url,
                         state_dir=dirs[0], progress=None).download_model()  # fmt: skip
    assert wrong.value.status == 401

    # round 1 opens with A, B and C; D registers after it opened, with its own cap of epsilon 0.12
    wait_until(lambda: a.round_status().next_action == "submit")
    (late_org,) = register(service, dirs[3:])
    cap = HospitalPolicy(unit="none", epsilon=0.12, delta=1e-5)
    d = FederatedLearner(late_org["organization_id"], late_org["api_key"], base_url=service.base_url,
                         state_dir=dirs[3], progress=None, privacy_policy=cap)  # fmt: skip
    late = d.train_local(frames[3], epochs=1)
    assert late.model_version == "1.0.0"
    for learner, frame in ((a, frames[0]), (b, frames[1]), (c, frames[2])):
        receipt = learner.submit_gradients(learner.train_local(frame, epochs=1).gradients, round=1, wait=False)
        assert receipt.status == "submitted"
    wait_until(lambda: (s := d.round_status()).round == 2 and s.status == "open" and s.next_action == "submit")

    # a submission for a closed round, and one trained on an older model
    with pytest.raises(RoundClosed, match="round 1 is not open") as closed:
        d.submit_gradients(late.gradients, round=1, wait=False)
    assert closed.value.status == 409 and not isinstance(closed.value, StaleModelVersion)
    with pytest.raises(StaleModelVersion) as stale:
        d.submit_gradients(late.gradients, round=2, wait=False)
    assert stale.value.current_version == "1.0.1"

    # NaN gradients: refused locally (nothing sent) ...
    fresh = d.train_local(frames[3], epochs=1)
    assert fresh.model_version == "1.0.1"
    poisoned = with_nan(fresh.gradients)
    report = d.validate_submission(poisoned, checks=["bounds_check", "nan_check", "privacy_check"])
    assert not report.passed and "nan_check" in report.failed_checks and report["privacy_check"].passed
    assert "1 non-finite values" in report["nan_check"].reason
    with pytest.raises(ValidationFailed) as local:
        d.submit_gradients(poisoned, round=2, wait=False)
    assert local.value.check == "nan_check" and not isinstance(local.value, SubmissionRejected)
    assert d.round_status().next_action == "submit"
    # ... and by the coordinator when a client skips its own checks
    with CoordinatorClient(service.base_url, late_org["api_key"], retries=0) as raw:
        with pytest.raises(SubmissionRejected) as remote:
            submit_fedavg(raw, d.state, poisoned, organization_id=late_org["organization_id"], round=2,
                          model_version="1.0.1", base=d.download_model("1.0.1").arrays(), sample_count=10)  # fmt: skip
    assert remote.value.check == "nan_check" and remote.value.status == 422
    assert d.round_status().next_action == "submit"

    # a DP release within the hospital's cap is recorded, then sent; a retry is the same release
    noisy = DifferentialPrivacy(epsilon=0.1).add_noise_to_gradients(fresh.gradients, sensitivity=1.0)
    first = d.submit_gradients(noisy, round=2, wait=False)
    again = d.submit_gradients(noisy, round=2, wait=False)
    assert again.receipt == first.receipt
    own = PrivacyLedger(epsilon_budget=0.12, delta=1e-5)
    own.record([GaussianRelease(noisy.release.noise_multiplier)], round_number=2)
    assert d.get_current_epsilon() == pytest.approx(own.get_current_epsilon(), rel=1e-12)
    assert d.get_current_epsilon() == pytest.approx(0.1, rel=1e-6)  # one (0.1, 1e-5) release
    # a second release would exceed the cap of 0.12 (two compose to about 0.14): refused before anything is sent
    other = DifferentialPrivacy(epsilon=0.1).add_noise_to_gradients(fresh.gradients, sensitivity=1.0)
    with pytest.raises(PrivacyBudgetExhausted, match="above its cap"):
        d.submit_gradients(other, round=2, wait=False)
    assert d.get_current_epsilon() == pytest.approx(own.get_current_epsilon(), rel=1e-12)

    # this federation runs without DP on the coordinator: a typed error, not a raw 404
    with pytest.raises(CoordinatorError, match="privacy is off"):
        d.get_privacy_report(round=2)
    for learner in (a, b, c, d):
        learner.close()


def test_unreachable_coordinator_is_a_typed_error(tmp_path) -> None:  # noqa: ANN001
    from api_conftest import free_port

    learner = FederatedLearner("org_0123456789abcdef", "sk_live_x", base_url=f"http://127.0.0.1:{free_port()}",
                               state_dir=tmp_path / "h", retries=1, progress=None)  # fmt: skip
    with pytest.raises(CoordinatorUnavailable, match="after 2 attempts"):
        learner.download_model()
