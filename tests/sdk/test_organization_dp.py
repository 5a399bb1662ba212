"""Organization-level DP with secure sum through the hospital SDK, against a real coordinator
process: the hospitals clip (and add their own noise shares), record the release in their
own ledgers, and the coordinator's ledger equals the Flower path's guard on the same config."""

from __future__ import annotations

import concurrent.futures
import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from oneliac.federated import FederatedLearner
from oneliac_flwr.errors import PrivacyPolicyRefused, RoundNotAggregated
from oneliac_flwr.privacy import GaussianRelease, PrivacyLedger, distributed_release
from oneliac_flwr.privacy.hospital import HospitalPolicy
from oneliac_flwr.sdk.state import StateDirectory

from sdk_helpers import PREFIX, breast_cancer_frames, register

_spec = importlib.util.spec_from_file_location("flower_reference", Path(__file__).resolve().parents[1] / "api" / "flower_reference.py")
assert _spec is not None and _spec.loader is not None
flower_reference = importlib.util.module_from_spec(_spec)
sys.modules["flower_reference"] = flower_reference
_spec.loader.exec_module(flower_reference)

Z = 1.0
DELTA = 1e-5
CLIP = 1.0
HOSPITALS = 3


def federation(start_service, dirs: list[Path], placement: str, *, max_rounds: int, afforded: int) -> tuple[Any, list[dict]]:  # noqa: ANN001
    """Register the hospitals before any round opens, then serve an organization-DP secure-sum
    federation whose budget affords ``afforded`` rounds (from the Flower path's guard)."""
    return flower_reference.dp_secure_federation(start_service, lambda setup: register(setup, dirs), placement=placement,
                                                 participants=HOSPITALS, max_rounds=max_rounds, afforded=afforded, z=Z,
                                                 delta=DELTA, clip=CLIP)  # fmt: skip


def learner(service, org: dict, folder: Path, policy: HospitalPolicy) -> FederatedLearner:  # noqa: ANN001
    return FederatedLearner(org["organization_id"], org["api_key"], base_url=service.base_url, state_dir=folder,
                            privacy_policy=policy, progress=None)  # fmt: skip


@pytest.mark.parametrize("placement", ["central", "distributed"])
def test_three_hospitals_two_rounds_of_organization_dp_then_the_budget_stops_the_federation(
    start_service, hospital_dirs, placement: str  # noqa: ANN001
) -> None:
    dirs = hospital_dirs(HOSPITALS)
    service, orgs = federation(start_service, dirs, placement, max_rounds=3, afforded=2)
    frames, _ = breast_cancer_frames(HOSPITALS)
    # a hospital that requires distributed noise takes part in a distributed federation
    policy = HospitalPolicy(unit="organization", epsilon=100.0, delta=DELTA, require_distributed_noise=placement == "distributed")

    def take_part(i: int) -> list:
        with learner(service, orgs[i], dirs[i], policy) as hospital:
            return hospital.run(frames[i], rounds=2)

    with concurrent.futures.ThreadPoolExecutor(max_workers=HOSPITALS) as pool:
        receipts = [f.result() for f in [pool.submit(take_part, i) for i in range(HOSPITALS)]]
    assert all([r.status for r in rs] == ["ok", "ok"] and [r.round for r in rs] == [1, 2] for rs in receipts)
    assert all(r.organizations_contributed == HOSPITALS for rs in receipts for r in rs)
    with service.client() as admin:
        published = admin.get(f"{PREFIX}/config").json()
        report = admin.get(f"{PREFIX}/privacy/report").json()
        model = admin.get(f"{PREFIX}/model").json()
    instruction = published["privacy_policy"]
    # the coordinator's ledger, round by round, is the Flower path's for the same configuration
    expected = flower_reference.flower_epsilons(published, 2, participants=HOSPITALS)
    assert [row["round"] for row in report] == [1, 2]
    assert [row["epsilon_cumulative"] for row in report] == pytest.approx(expected, rel=1e-9)
    assert all(row["participants"] == HOSPITALS for row in report)
    assert model["model_version"] == "1.0.2" and model["epsilon_spent"] == pytest.approx(expected[1], rel=1e-9)
    # each hospital recorded, before sending, the release of the core instruction it followed
    if placement == "distributed":
        dimension = sum(int(np.prod(shape)) for shape in _shapes(service, orgs[0]))
        event: Any = distributed_release(noise_std=instruction["share-std"], clip_norm=CLIP, dimension=dimension,
                                         fractional_bits=instruction["frac-bits"],
                                         min_contributors=instruction["min-contributors"])  # fmt: skip
    else:
        event = GaussianRelease(instruction["noise-multiplier"])
    reference = PrivacyLedger(epsilon_budget=policy.epsilon, delta=policy.delta)
    for r in (1, 2):
        reference.record([event], round_number=r, label="organization")
    for i in range(HOSPITALS):
        with StateDirectory(dirs[i]).privacy(organization=orgs[i]["organization_id"], policy=policy) as state:
            assert [e.round_number for e in state.ledger.entries] == [1, 2]
            assert state.epsilon() == pytest.approx(reference.get_current_epsilon(), rel=1e-9)
    # the third round would exceed the budget: the federation stops gracefully, the last model stays
    with learner(service, orgs[0], dirs[0], policy) as hospital:
        with pytest.raises(RoundNotAggregated, match="budget"):
            hospital.run(frames[0], rounds=1)
        assert hospital.download_model().model_version == "1.0.2"


def _shapes(service, org: dict) -> list[tuple[int, ...]]:  # noqa: ANN001
    from safetensors.numpy import load

    with service.client(token=org["api_key"]) as http:
        weights = http.get(f"{PREFIX}/model").json()["weights"]
    return [a.shape for a in load(bytes.fromhex(weights[2:])).values()]


def test_attack_a_hospital_requiring_distributed_noise_refuses_a_central_federation_before_sending_anything(
    start_service, hospital_dirs  # noqa: ANN001
) -> None:
    dirs = hospital_dirs(HOSPITALS)
    service, orgs = federation(start_service, dirs, "central", max_rounds=1, afforded=1)
    frames, _ = breast_cancer_frames(HOSPITALS)
    strict = HospitalPolicy(unit="organization", epsilon=100.0, delta=DELTA, require_distributed_noise=True)
    org = orgs[0]["organization_id"]
    with learner(service, orgs[0], dirs[0], strict) as hospital:
        with pytest.raises(PrivacyPolicyRefused, match="central noise"):
            hospital.run(frames[0], rounds=1)
        with pytest.raises(PrivacyPolicyRefused, match="central noise"):
            hospital.submit_gradients({"w": np.zeros(3, np.float32)}, 1)
    with service.client() as admin:
        audit = admin.get(f"{PREFIX}/audit", params={"limit": 1000}).json()
    assert [e["action"] for e in audit if e.get("organization_id") == org] == ["organization.registered"]
    with service.client(token=orgs[0]["api_key"]) as http:
        current = http.get(f"{PREFIX}/rounds/current").json()
    assert current["round"] == 1 and current["next_action"] == "advertise_keys"  # not even its keys were sent
    with StateDirectory(dirs[0]).privacy(organization=org, policy=strict) as state:
        assert len(state.ledger.entries) == 0  # nothing released, nothing recorded
