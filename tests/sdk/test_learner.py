"""FederatedLearner against a real coordinator (uvicorn on loopback, temporary SQLite)."""

from __future__ import annotations

from oneliac.federated import FederatedLearner
from oneliac_flwr.data.federated import feature_schema
from oneliac_flwr.sdk.data import local_table

from conftest import breast_cancer_frames, fedavg_settings, register


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
