"""``GET /config``: the federation's published configuration, against a real uvicorn process."""

from __future__ import annotations

import pytest
from sklearn.datasets import load_breast_cancer

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.coordinator.secure_plan import ring_for

from conftest import PREFIX, hospital

SECURE_RELEASE = [
    "aggregation_config.aggregation_method=secure_sum", "strategy=fedavg", "secure_sum.max_participants=6",
    "aggregation_config.min_participants=3", "aggregation_config.timeout_minutes=2.5", "aggregation_config.max_rounds=7",
    "privacy_budget=release", "privacy_budget.epsilon=3.0", "privacy_budget.delta=1e-06",
    "privacy_budget.noise_multiplier=4.0", "privacy_budget.clip_norm=1.0", "privacy_budget.mechanism=gaussian",
    "validation.max_update_norm=5000", "model=mlp", "model.hidden_sizes=[16]",
]  # fmt: skip


def test_published_configuration_needs_an_api_key_and_is_the_coordinators(start_service) -> None:  # noqa: ANN001
    service = start_service(extra=SECURE_RELEASE)
    with service.client() as admin:
        org = admin.post(f"{PREFIX}/organizations", json=hospital("Hospital A")).json()
        deactivated = admin.post(f"{PREFIX}/organizations", json=hospital("Hospital B", seed=3)).json()
        assert admin.post(f"{PREFIX}/organizations/{deactivated['organization_id']}/deactivate").status_code == 200
    for token, status in ((None, 401), ("sk_live_not-a-key", 401), (deactivated["api_key"], 403)):
        with service.client(token=token) as anonymous:
            refused = anonymous.get(f"{PREFIX}/config")
        assert refused.status_code == status and refused.headers["content-type"].startswith("application/problem+json")
        assert "aggregation_config" not in refused.text
    with service.client(token=org["api_key"]) as client:
        response = client.get(f"{PREFIX}/config")
        policy = client.get(f"{PREFIX}/privacy/policy").json()
        key = client.get(f"{PREFIX}/coordinator-key").json()
    assert response.status_code == 200, response.text
    body = response.json()
    # round timing, method and the secure-sum parameters a hospital needs
    assert body["aggregation_config"] == {"aggregation_method": "secure_sum", "min_participants": 3,
                                          "timeout_minutes": 2.5, "max_rounds": 7}  # fmt: skip
    assert body["secure_sum"]["max_participants"] == 6 and body["secure_sum"]["clip_norm"] == 1.0
    groups = ("federation", "dataset", "model", "training", "aggregation_config", "secure_sum", "privacy_budget",
              "validation")  # fmt: skip
    rebuilt = ExperimentConfig.from_dict({g: body[g] for g in groups})  # the hospital's side rebuilds it
    spec = ring_for(rebuilt)
    assert body["ring"] == {"bits": spec.bits, "frac_bits": spec.frac_bits, "clip_bound": 1.0,
                            "weight_bound": float(spec.weight_bound), "max_participants": 6}  # fmt: skip
    # the privacy policy is GET /privacy/policy's, the budget the coordinator's
    assert body["privacy_policy"] == policy and policy["mode"] == "release" and policy["noise-multiplier"] == 4.0
    assert body["privacy_budget"]["epsilon"] == 3.0 and body["privacy_budget"]["delta"] == 1e-6
    # model, feature schema, validation bounds, sealing key
    assert body["model"] == {"name": "mlp", "hidden_sizes": [16]}
    assert body["feature_schema"] == {"label_column": "target", "num_classes": 2,
                                      "feature_columns": list(load_breast_cancer().feature_names)}  # fmt: skip
    assert body["validation"]["max_update_norm"] == 5000.0
    assert body["coordinator_key_fingerprint"] == key["fingerprint"]
    assert rebuilt.privacy_budget.noise_multiplier == 4.0 and rebuilt.model.hidden_sizes == (16,)
    assert body["federation_name"] == rebuilt.federation_name
    with service.client() as admin:  # the operator reads the same document
        assert admin.get(f"{PREFIX}/config").json() == body


def test_published_configuration_in_the_openapi_and_without_privacy(start_service) -> None:  # noqa: ANN001
    service = start_service(extra=["aggregation_config.aggregation_method=fedavg", "strategy=fedavg", "privacy_budget=none",
                                   "dataset.csv_path=/srv/operator/tables/all-sites.csv"])  # fmt: skip
    with service.client() as admin:
        org = admin.post(f"{PREFIX}/organizations", json=hospital("Hospital A")).json()
        document = admin.get("/openapi.json").json()
        assert admin.get(f"{PREFIX}/config").json()["dataset"]["csv_path"] is None  # the operator's path stays home
    operation = document["paths"][f"{PREFIX}/config"]["get"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/FederationConfigOut"}
    published = document["components"]["schemas"]["FederationConfigOut"]
    assert {"model", "feature_schema", "aggregation_config", "secure_sum", "ring", "privacy_budget", "privacy_policy",
            "validation", "coordinator_key_fingerprint"} <= set(published["required"])  # fmt: skip
    assert operation["security"] == [{"HTTPBearer": []}]
    with service.client(token=org["api_key"]) as client:
        body = client.get(f"{PREFIX}/config").json()
        assert client.get(f"{PREFIX}/privacy/policy").status_code == 404
    assert body["privacy_policy"] is None and body["ring"] is None and body["privacy_budget"]["mode"] == "none"
    assert body["aggregation_config"]["aggregation_method"] == "fedavg"


@pytest.fixture(params=["sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path) -> str:  # noqa: ANN001
    """One database kind is enough: the route reads only the configuration and the sealing key."""
    return f"sqlite:///{tmp_path / 'coordinator.db'}"
