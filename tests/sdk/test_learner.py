"""FederatedLearner against a real coordinator (uvicorn on loopback, temporary SQLite)."""

from __future__ import annotations

import numpy as np
import pytest

from oneliac.federated import FederatedLearner
from oneliac_flwr.errors import ConfigError
from oneliac_flwr.privacy.hospital import HospitalPolicy
from oneliac_flwr.data.federated import feature_schema
from oneliac_flwr.sdk.data import local_table

from sdk_helpers import breast_cancer_frames, fedavg_settings, register


def test_three_hospitals_three_fedavg_rounds(start_service, hospital_dirs) -> None:  # noqa: ANN001
    service = start_service(extra=fedavg_settings(min_participants=3, max_rounds=3))
    dirs = hospital_dirs(3)
    orgs = register(service, dirs)
    frames, test = breast_cancer_frames(3)
    learners = [FederatedLearner(o["organization_id"], o["api_key"], base_url=service.base_url, state_dir=d, progress=None)
                for o, d in zip(orgs, dirs, strict=True)]  # fmt: skip
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda lf: lf[0].run(lf[1], rounds=3, epochs=5, batch_size=16), zip(learners, frames)))
    for receipts in results:
        assert [r.round for r in receipts] == [1, 2, 3]
        assert [r.model_version for r in receipts] == ["1.0.1", "1.0.2", "1.0.3"]
        assert all(r.organizations_contributed == 3 and r.receipt.startswith("rcpt_") for r in receipts)
    final = learners[0].download_model()
    assert final.model_version == "1.0.3" and final.training_round == 3 and final.organizations_contributed == 3
    config = learners[0].config
    raw = local_table(test, config.dataset)
    held_out = feature_schema(config, raw).scale(raw)  # every held-out row, scaled by the public schema
    accuracy = float((final.predict(held_out.features) == held_out.labels).mean())
    print("held-out accuracy", accuracy)
    initial = learners[0].download_model("1.0.0")
    assert accuracy >= 0.93 > float((initial.predict(held_out.features) == held_out.labels).mean())
    for learner in learners:
        learner.close()


def test_environment_fallbacks_local_analysis_and_sample_level_dp(start_service, hospital_dirs, monkeypatch) -> None:  # noqa: ANN001
    service = start_service(extra=fedavg_settings(min_participants=3))
    (folder,) = hospital_dirs(1)
    (org,) = register(service, [folder])
    frames, _ = breast_cancer_frames(2)

    monkeypatch.delenv("ONELIAC_URL", raising=False)
    monkeypatch.delenv("ONELIAC_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="base_url.*ONELIAC_URL"):
        FederatedLearner(org["organization_id"], state_dir=folder)
    monkeypatch.setenv("ONELIAC_URL", service.base_url)
    with pytest.raises(ConfigError, match="api_key.*ONELIAC_API_KEY"):
        FederatedLearner(org["organization_id"], state_dir=folder)
    monkeypatch.setenv("ONELIAC_API_KEY", org["api_key"])
    monkeypatch.setenv("ONELIAC_STATE_DIR", str(folder))
    learner = FederatedLearner(org["organization_id"], progress=None)
    assert learner.base_url == service.base_url and learner.state.path == folder
    initial = learner.download_model()  # authenticated with the key from the environment
    assert initial.model_version == "1.0.0" and initial.training_round == 0 and initial.accuracy is None

    # local analysis: nothing is sent, missing values are counted
    frame = frames[0].copy()
    frame.loc[[0, 1, 2], "mean radius"] = np.nan
    stats = learner.analyze_local_data(frame)
    assert stats.label_distribution == {str(k): int(v) for k, v in frame["target"].value_counts().sort_index().items()}
    assert stats.num_examples == len(frame) and stats.missing_values["mean radius"] == 3
    assert stats.feature_ranges["mean texture"] == (frame["mean texture"].min(), frame["mean texture"].max())

    # a hospital whose own policy is sample-level trains with DP-SGD and accounts it on its disk (a
    # federation without DP does not lower it; the DP-SGD settings are the published privacy_budget's)
    own = HospitalPolicy(unit="sample", epsilon=10.0, delta=1e-5)
    private = FederatedLearner(org["organization_id"], privacy_policy=own, state_dir=folder.parent / "dp", progress=None)
    assert private.policy.unit == "sample" and private.get_current_epsilon() == 0.0
    local = private.train_local(frames[0], epochs=1, batch_size=32)
    spent = private.get_current_epsilon()
    assert 0.0 < spent <= 10.0 and local.gradients.declared().mechanism == "gaussian"
    assert local.num_examples > 0 and set(local.gradients) == set(initial.names)
    reopened = FederatedLearner(org["organization_id"], state_dir=folder.parent / "dp", progress=None)  # policy saved
    assert reopened.get_current_epsilon() == spent  # persisted
    for each in (learner, private, reopened):
        each.close()
