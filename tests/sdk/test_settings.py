"""The SDK uses the coordinator's published configuration; a local one is a checked override,
and a published privacy policy weaker than the hospital's own is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from oneliac.encryption import DifferentialPrivacy
from oneliac.federated import FederatedLearner
from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.errors import ConfigError, PrivacyError, PrivacyPolicyRefused
from oneliac_flwr.privacy.hospital import HospitalPolicy
from oneliac_flwr.sdk.settings import merge_local, privacy_refusal
from oneliac_flwr.sdk.state import StateDirectory

from sdk_helpers import PREFIX, breast_cancer_frames, register

Z = 4.0
DELTA = 1e-5
RELEASE = [
    "aggregation_config.aggregation_method=fedavg", "strategy=fedavg", "aggregation_config.min_participants=3",
    "aggregation_config.max_rounds=3", "aggregation_config.timeout_minutes=5", "privacy_budget=release",
    "privacy_budget.epsilon=8.0", f"privacy_budget.delta={DELTA}", f"privacy_budget.noise_multiplier={Z}",
    "privacy_budget.clip_norm=1.0", "privacy_budget.mechanism=gaussian", "validation.max_update_norm=100000",
    "model=mlp", "model.hidden_sizes=[8]", "training.local_epochs=2",
]  # fmt: skip


def published() -> ExperimentConfig:
    return ExperimentConfig.from_dict({
        "model": {"name": "mlp", "hidden_sizes": [8]}, "validation": {"max_update_norm": 100000.0},
        "aggregation_config": {"min_participants": 3, "max_rounds": 3, "timeout_minutes": 5.0},
        "privacy_budget": {"mode": "release", "epsilon": 8.0, "delta": DELTA, "noise_multiplier": Z, "clip_norm": 1.0},
        "training": {"local_epochs": 2},
    })  # fmt: skip


def test_learner_uses_the_published_configuration_with_no_local_file(start_service, hospital_dirs, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.delenv("ONELIAC_CONFIG", raising=False)
    service = start_service(extra=RELEASE)
    dirs = hospital_dirs(4)
    orgs = register(service, dirs)
    frames, _ = breast_cancer_frames(2)
    learner = FederatedLearner(orgs[0]["organization_id"], orgs[0]["api_key"], base_url=service.base_url,
                               state_dir=dirs[0], progress=None)  # fmt: skip
    settings = learner.settings
    with service.client(token=orgs[0]["api_key"]) as client:
        key = client.get(f"{PREFIX}/coordinator-key").json()
        policy = client.get(f"{PREFIX}/privacy/policy").json()
    assert settings.source == "coordinator" and settings.privacy_policy == policy
    assert settings.coordinator_key_fingerprint == key["fingerprint"]
    config = learner.config
    assert (config.model.name, config.model.hidden_sizes) == ("mlp", (8,))
    assert config.privacy_budget.mode == "release" and config.privacy_budget.noise_multiplier == Z
    assert config.validation.max_update_norm == 100000.0 and config.training.local_epochs == 2
    assert config.aggregation_config.min_participants == 3 and config.aggregation_config.max_rounds == 3
    # the hospital's policy is taken from the published budget on first use, and saved
    assert learner.policy == HospitalPolicy(unit="release", epsilon=8.0, delta=DELTA)
    # it trains the published model (an MLP, not the default logistic regression) and checks with its bounds
    local = learner.train_local(frames[0], batch_size=32)
    assert {name for name in local.gradients} == set(learner.download_model().names)
    assert any(a.ndim == 2 and 8 in a.shape for a in local.gradients.arrays())
    noised = DifferentialPrivacy(epsilon=policy["release-epsilon"]).add_noise_to_gradients(local.gradients, sensitivity=1.0)
    assert learner.validate_submission(noised).passed
    learner.close()

    # a local override: training is the hospital's own; a contradiction names the field
    with FederatedLearner(orgs[1]["organization_id"], orgs[1]["api_key"], base_url=service.base_url,
                          state_dir=dirs[1], config={"training": {"local_epochs": 5}}, progress=None) as own:  # fmt: skip
        assert own.config.training.local_epochs == 5 and own.config.model.name == "mlp"
        assert own.settings.source == "coordinator"
    contradictions = {
        "model.name": {"model": {"name": "logistic"}},
        "validation.max_update_norm": {"validation": {"max_update_norm": 100.0}},
        "privacy_budget.noise_multiplier": {"privacy_budget": {"mode": "release", "noise_multiplier": 1.0}},
    }
    for field, local in contradictions.items():
        with FederatedLearner(orgs[1]["organization_id"], orgs[1]["api_key"], base_url=service.base_url,
                              state_dir=dirs[1], config=local, progress=None) as wrong:  # fmt: skip
            with pytest.raises(ConfigError, match=f"^{field}: .*the coordinator publishes") as refused:
                wrong.train_local(frames[0])
            assert refused.value.field == field
    # a complete local ExperimentConfig (the default one) contradicts the published model
    file = dirs[1].parent / "shared.json"
    file.write_text(json.dumps({"privacy_budget": {"mode": "none"}}))
    monkeypatch.setenv("ONELIAC_CONFIG", str(file))
    with FederatedLearner(orgs[1]["organization_id"], orgs[1]["api_key"], base_url=service.base_url,
                          state_dir=dirs[1], progress=None) as from_file:  # fmt: skip
        with pytest.raises(ConfigError, match="^privacy_budget.mode: the local configuration says 'none'"):
            from_file.settings  # noqa: B018
    monkeypatch.delenv("ONELIAC_CONFIG")
    with FederatedLearner(orgs[1]["organization_id"], orgs[1]["api_key"], base_url=service.base_url,
                          state_dir=dirs[1], config=ExperimentConfig(), progress=None) as default:  # fmt: skip
        with pytest.raises(ConfigError, match="^dataset|^model|^privacy_budget|^validation"):
            default.settings  # noqa: B018

    # fail closed: a published policy weaker than the hospital's own is refused, typed
    weaker = {
        "delta": HospitalPolicy(unit="release", epsilon=8.0, delta=1e-7),
        "noise multiplier": HospitalPolicy(unit="release", epsilon=8.0, delta=DELTA, min_noise_multiplier=5.0),
        "unit": HospitalPolicy(unit="organization", epsilon=8.0, delta=DELTA),
    }
    for what, policy in weaker.items():
        with FederatedLearner(orgs[2]["organization_id"], orgs[2]["api_key"], base_url=service.base_url,
                              state_dir=dirs[2], privacy_policy=policy, progress=None) as strict:  # fmt: skip
            with pytest.raises(PrivacyPolicyRefused, match=what) as refused:
                strict.train_local(frames[1])
            assert isinstance(refused.value, PrivacyError)
    # ... also when the hospital's requirement is the one saved in its state directory
    StateDirectory(dirs[3]).save_policy(HospitalPolicy(unit="release", epsilon=1.0, delta=DELTA, min_noise_multiplier=6.0))
    with FederatedLearner(orgs[3]["organization_id"], orgs[3]["api_key"], base_url=service.base_url,
                          state_dir=dirs[3], progress=None) as restarted:  # fmt: skip
        with pytest.raises(PrivacyPolicyRefused, match="noise multiplier 4;.* at least 6"):
            restarted.settings  # noqa: B018
        assert restarted.state.saved_policy().min_noise_multiplier == 6.0  # not lowered
    # a stronger published policy than the hospital needs is fine
    with FederatedLearner(orgs[2]["organization_id"], orgs[2]["api_key"], base_url=service.base_url, state_dir=dirs[2],
                          privacy_policy=HospitalPolicy(unit="release", epsilon=2.0, delta=1e-4, min_noise_multiplier=2.0),
                          progress=None) as lenient:  # fmt: skip
        assert lenient.settings.privacy_mode == "release"


def test_merge_checks_every_field_that_matters() -> None:
    config = published()
    assert merge_local(config, None) is config
    merged = merge_local(config, {"training": {"batch_size": 8}, "dataset": {"test_fraction": 0.3}})
    assert merged.training.batch_size == 8 and merged.dataset.test_fraction == 0.3 and merged.model == config.model
    assert merge_local(config, {"aggregation_config": {"timeout_minutes": 99.0}}).aggregation_config.timeout_minutes == 5.0
    assert merge_local(config, config.to_dict()) == config
    for field, value in (("secure_sum.clip_norm", 2.0), ("dataset.num_classes", 3), ("validation.checks", ["nan_check"]),
                         ("aggregation_config.aggregation_method", "secure_sum"), ("privacy_budget.delta", 1e-6)):  # fmt: skip
        group, name = field.split(".")
        with pytest.raises(ConfigError) as refused:
            merge_local(config, {group: {name: value}})
        assert refused.value.field == field
    with pytest.raises(ConfigError, match="model.name"):
        merge_local(config, ExperimentConfig.from_dict({**config.to_dict(), "model": {"name": "logistic"}}))
    with pytest.raises(ConfigError, match="^model.depth"):  # a typo in the override is named too
        merge_local(config, {"model": {"depth": 2}})


def test_privacy_refusal_never_lowers_the_hospitals_policy() -> None:
    release = published()
    policy = {"mode": "release", "noise-multiplier": Z, "delta": DELTA, "clip-norm": 1.0, "mechanism": "gaussian"}
    none = ExperimentConfig()
    assert privacy_refusal(HospitalPolicy(unit="none", epsilon=1.0, delta=DELTA), release, policy) is None
    assert privacy_refusal(HospitalPolicy(unit="release", epsilon=1.0, delta=DELTA), release, policy) is None
    assert "publishes no differential privacy" in privacy_refusal(HospitalPolicy(unit="release", epsilon=1.0, delta=DELTA), none, None)
    assert "delta" in privacy_refusal(HospitalPolicy(unit="release", epsilon=1.0, delta=1e-6), release, policy)
    assert "noise multiplier" in privacy_refusal(
        HospitalPolicy(unit="release", epsilon=1.0, delta=DELTA, min_noise_multiplier=Z * 1.01), release, policy)
    # a policy document that contradicts privacy_budget (the values the SDK uses) is refused,
    # whichever way it leans: neither a lower nor a reassuringly higher figure is believed
    for said in (2.0, Z * 100):
        assert "contradictory" in privacy_refusal(
            HospitalPolicy(unit="release", epsilon=1.0, delta=DELTA, min_noise_multiplier=Z / 2), release,
            {**policy, "noise-multiplier": said})  # fmt: skip
    assert "contradictory" in privacy_refusal(HospitalPolicy(unit="release", epsilon=1.0, delta=DELTA), release,
                                              {**policy, "delta": DELTA / 100})  # fmt: skip
    # settings taken locally (a coordinator without GET /config): privacy_budget is checked alone
    assert privacy_refusal(HospitalPolicy(unit="release", epsilon=1.0, delta=DELTA), release, None) is None
    assert "delta" in privacy_refusal(HospitalPolicy(unit="release", epsilon=1.0, delta=1e-6), release, None)
    # a sample-level hospital runs DP-SGD itself: a federation without DP does not lower it
    assert privacy_refusal(HospitalPolicy(unit="sample", epsilon=1.0, delta=DELTA), none, None) is None
    assert "requires 'sample'" in privacy_refusal(HospitalPolicy(unit="sample", epsilon=1.0, delta=DELTA), release, policy)
    central = ExperimentConfig.from_dict({"privacy_budget": {"mode": "organization", "noise_multiplier": Z}})
    distributed_only = HospitalPolicy(unit="organization", epsilon=1.0, delta=DELTA, require_distributed_noise=True)
    assert "central noise" in privacy_refusal(distributed_only, central, {**policy, "mode": "organization"})


def test_a_status_that_contradicts_the_published_method_sends_nothing(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """A coordinator publishing secure_sum but answering 'fedavg' in the round status would get
    the update sealed to its own key: the SDK refuses before anything is recorded or sent."""
    from oneliac_flwr.sdk.settings import FederationSettings
    from oneliac_flwr.sdk.submission import RoundStatus
    from oneliac_flwr.sdk.update import ModelUpdate

    config = ExperimentConfig.from_dict({"aggregation_config": {"aggregation_method": "secure_sum"}})
    learner = FederatedLearner("org_x", "sk_live_x", base_url="http://127.0.0.1:9", state_dir=tmp_path / "h",
                               progress=None)  # fmt: skip
    learner._settings = FederationSettings(config=config, source="coordinator")
    sent: list[str] = []
    monkeypatch.setattr(learner, "resume", lambda: None)
    monkeypatch.setattr(learner, "round_status", lambda: RoundStatus(
        round=1, status="open", model_version="1.0.0", next_action="submit", roster_size=3, in_roster=True,
        deadline=None, reason=None, contributors=None, aggregation_method="fedavg"))  # fmt: skip
    monkeypatch.setattr(learner._client, "request", lambda *a, **k: sent.append(str(a)), raising=False)
    update = ModelUpdate({"w": np.zeros(3, np.float32)}, model_version="1.0.0", num_examples=10)
    with pytest.raises(ConfigError, match="^aggregation_config.aggregation_method") as refused:
        learner.submit_gradients(update, round=1)
    assert "'fedavg'" in str(refused.value) and "'secure_sum'" in str(refused.value)
    assert sent == [] and learner.get_current_epsilon() == 0.0
    learner.close()


def test_attack_a_published_noise_placement_that_contradicts_the_budget_is_refused() -> None:
    """What a hospital does follows the published policy (``frac-bits``: add a share; none:
    clip only, for central noise); what it accepted follows ``privacy_budget``. A coordinator
    publishing distributed noise in one and central in the other would get an update with no
    noise from a hospital that requires distributed noise; a share outside a secure sum would
    travel alone. Both are refused before anything is recorded or sent."""
    def org_config(placement: str, method: str) -> ExperimentConfig:
        return ExperimentConfig.from_dict({"privacy_budget": {"mode": "organization", "noise_multiplier": Z,
                                                              "noise_placement": placement},
                                           "aggregation_config": {"aggregation_method": method}})  # fmt: skip

    central_policy = {"mode": "organization", "noise-multiplier": Z, "delta": DELTA, "clip-norm": 1.0,
                      "mechanism": "gaussian", "noise-placement": "central"}  # fmt: skip
    share_policy = {**central_policy, "noise-placement": "distributed", "frac-bits": 16, "min-contributors": 3,
                    "share-std": 0.5}  # fmt: skip
    distributed_only = HospitalPolicy(unit="organization", epsilon=1.0, delta=DELTA, require_distributed_noise=True)
    plain = HospitalPolicy(unit="organization", epsilon=1.0, delta=DELTA)
    # consistent documents pass
    assert privacy_refusal(distributed_only, org_config("distributed", "secure_sum"), share_policy) is None
    assert privacy_refusal(plain, org_config("central", "secure_sum"), central_policy) is None
    # the budget says distributed, the instruction has no share: refused (the hospital would add no noise)
    no_share = {k: v for k, v in share_policy.items() if k not in ("frac-bits", "min-contributors", "share-std")}
    assert "contradictory" in privacy_refusal(distributed_only, org_config("distributed", "secure_sum"), no_share)
    assert "contradictory" in privacy_refusal(distributed_only, org_config("distributed", "secure_sum"),
                                              {**central_policy, "noise-placement": "distributed"})  # fmt: skip
    # the budget says central, the instruction has a share (or says distributed): refused either way
    assert "contradictory" in privacy_refusal(plain, org_config("central", "secure_sum"), share_policy)
    assert "contradictory" in privacy_refusal(plain, org_config("central", "secure_sum"),
                                              {**central_policy, "noise-placement": "distributed"})  # fmt: skip
    # a share outside secure_sum would reach the coordinator alone
    assert "without secure_sum" in privacy_refusal(plain, org_config("distributed", "fedavg"), share_policy)
