"""Organization-level DP (``privacy_budget.mode: organization``) with secure-sum rounds over
REST, against a real uvicorn process: central noise on the unmasked mean and distributed
noise shares, each checked against the Flower path's guard on the same configuration."""

from __future__ import annotations

import concurrent.futures
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from oneliac_flwr.api.participant import NoiseShare, take_part_in_secure_round
from oneliac_flwr.errors import ProtocolViolation
from oneliac_flwr.privacy import clip_l2
from oneliac_flwr.privacy.hospital import HospitalPolicy, locked_state
from oneliac_flwr.privacy.update_release import privatize_update

from conftest import PREFIX
from flower_reference import dp_secure_federation, flower_epsilons, flower_guard
from test_rest_secure_rounds import Hospital, model, register, status, wait_until

Z = 1.0
DELTA = 1e-5
CLIP = 1.0
HOSPITALS = 3


def dp_federation(start_service, placement: str, *, max_rounds: int, afforded: int) -> tuple[Any, list[Hospital]]:  # noqa: ANN001
    """Register the organizations before any round can open, then serve the DP federation with
    a budget that affords ``afforded`` rounds of it and not one more (from the Flower path's guard
    on the same configuration)."""
    service, hospitals = dp_secure_federation(start_service, lambda setup: register(setup, HOSPITALS), placement=placement,
                                              participants=HOSPITALS, max_rounds=max_rounds, afforded=afforded, z=Z,
                                              delta=DELTA, clip=CLIP)  # fmt: skip
    for h in hospitals:
        h.join(service)
    return service, hospitals


def hospital_update(base: list[np.ndarray], index: int, round_: int) -> list[np.ndarray]:
    """A deterministic update whose norm is far above the clip norm (clipping matters)."""
    rng = np.random.default_rng(1000 * round_ + index)
    return [0.5 * rng.standard_normal(a.shape) for a in base]


def take_part(service, h: Hospital, state_dir: Path, policy: dict, update: list[np.ndarray], version: str, round_: int,  # noqa: ANN001, ANN201
              on_upload=None):  # noqa: ANN001
    """A hospital's side with the core: clip (and add its noise share), record, mask, upload, unmask
    (``on_upload`` may alter the upload, as a malicious hospital would)."""
    own = HospitalPolicy(unit="organization", epsilon=1000.0, delta=DELTA)
    threshold = int(policy["min-contributors"]) if "frac-bits" in policy else None
    share = None if threshold is None else NoiseShare(min_contributors=threshold, frac_bits=int(policy["frac-bits"]))
    with locked_state(state_dir, organization=h.id, policy=own) as state:
        release = privatize_update(update, policy, state=state, server_round=round_, threshold=threshold)
    assert not isinstance(release, str), release
    declared = {"clip_norm": release.declared.clip_norm, "mechanism": release.declared.mechanism}
    with h.http(service) as http:
        return take_part_in_secure_round(http, organization_id=h.id, secure_client=h.client, update=release.update,
                                         weight=1.0, model_version=version, privacy=declared, wait_seconds=5,
                                         give_up_after=180, noise_share=share, on_upload=on_upload)  # fmt: skip


def run_dp_round(service, hospitals: list[Hospital], dirs: list[Path], round_: int) -> tuple[list[np.ndarray], list[np.ndarray]]:  # noqa: ANN001
    """One round: every hospital takes part; the base model and the exact clipped mean."""
    with hospitals[0].http(service) as http:
        wait_until(lambda: (s := status(http))["round"] == round_ and s["status"] == "open")
        base, meta = model(http)
        policy = http.get(f"{PREFIX}/privacy/policy").json()
    updates = [hospital_update(base, i, round_) for i in range(len(hospitals))]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(hospitals)) as pool:
        futures = [pool.submit(take_part, service, h, dirs[i], policy, updates[i], meta["model_version"], round_)
                   for i, h in enumerate(hospitals)]  # fmt: skip
        receipts = [f.result() for f in futures]
    assert all(r.status == "ok" and r.contributors == len(hospitals) for r in receipts)
    clipped = [clip_l2([np.asarray(u, np.float64) for u in update], CLIP)[0] for update in updates]
    mean = [sum(c[k] for c in clipped) / len(clipped) for k in range(len(base))]
    return base, mean


def noise_of_round(service, base: list[np.ndarray], mean: list[np.ndarray]) -> np.ndarray:  # noqa: ANN001
    """What the served model adds to ``base + clipped mean``: the round's noise (flattened)."""
    with service.client() as admin:
        served, _ = model(admin)
    return np.concatenate([(s.astype(np.float64) - b.astype(np.float64) - m).ravel()
                           for s, b, m in zip(served, base, mean, strict=True)])  # fmt: skip


def expected_noise_std(guard) -> float:  # noqa: ANN001 - the Flower path's LedgerGuard
    """Std per coordinate of the noise on the mean of 3 clipped updates, from the core guard."""
    if guard.distributed:  # three shares of std client_std each, averaged
        return guard.client_std * math.sqrt(HOSPITALS) / HOSPITALS
    return guard.z * guard.sensitivity / HOSPITALS  # central: z times the quantized sensitivity, on the mean


@pytest.mark.parametrize("placement", ["central", "distributed"])
def test_organization_dp_over_secure_sum_matches_the_flower_guard(start_service, tmp_path: Path, placement: str) -> None:  # noqa: ANN001
    service, hospitals = dp_federation(start_service, placement, max_rounds=3, afforded=2)
    with service.client() as admin:
        published = admin.get(f"{PREFIX}/config").json()
    policy = published["privacy_policy"]
    guard = flower_guard(published)
    assert policy["noise-placement"] == placement and policy["noise-multiplier"] == pytest.approx(guard.z, rel=1e-12)
    if placement == "distributed":  # what a hospital needs to add its own share: the core's instruction
        assert policy["frac-bits"] == published["ring"]["frac_bits"] == guard.frac_bits
        assert policy["min-contributors"] == guard.min_contributors
        assert policy["share-std"] == pytest.approx(guard.client_std, rel=1e-12)
        assert published["ring"]["clip_bound"] > CLIP  # the ring holds a noisy share
    else:
        assert "frac-bits" not in policy and "share-std" not in policy
    expected = flower_epsilons(published, 2, participants=HOSPITALS)
    dirs = [tmp_path / f"hospital-{i}" for i in range(HOSPITALS)]
    noise = []
    for round_ in (1, 2):
        base, mean = run_dp_round(service, hospitals, dirs, round_)
        noise.append(noise_of_round(service, base, mean))
        with service.client() as admin:
            spent = admin.get(f"{PREFIX}/privacy/epsilon").json()
            (row,) = admin.get(f"{PREFIX}/privacy/report", params={"round": round_}).json()
        assert spent["epsilon_spent"] == pytest.approx(expected[round_ - 1], rel=1e-9)
        assert row["participants"] == HOSPITALS
        assert row["recorded"] == ("when unmasked" if placement == "distributed" else "when noised")
    # the served models differ from base + clipped mean by noise of the core's std (not zero, not more)
    samples = np.concatenate(noise)
    assert samples.size >= 100
    assert float(np.std(samples)) == pytest.approx(expected_noise_std(guard), rel=0.25)
    assert abs(float(np.mean(samples))) < 4 * expected_noise_std(guard) / math.sqrt(samples.size)
    # the budget affords two rounds: the third does not open, and the last model stays downloadable
    with service.client() as admin:
        final = wait_until(lambda: (s := status(admin))["status"] == "budget_exhausted" and s)
        assert final["round"] == 3 and final["next_action"] == "finished"
        epsilon_now = admin.get(f"{PREFIX}/privacy/epsilon").json()
        assert epsilon_now["budget_exhausted"] is True and epsilon_now["epsilon_spent"] == pytest.approx(expected[1], rel=1e-9)
        _, meta = model(admin)
        assert meta["model_version"] == "1.0.2" and meta["epsilon_spent"] == pytest.approx(expected[1], rel=1e-9)
    # each hospital recorded its own release per round (central: GaussianRelease(z); distributed: its share)
    with locked_state(dirs[0], organization=hospitals[0].id,
                      policy=HospitalPolicy(unit="organization", epsilon=1000.0, delta=DELTA)) as state:  # fmt: skip
        assert [e.round_number for e in state.ledger.entries] == [1, 2]


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return []


def test_attack_central_noise_never_publishes_the_unnoised_sum(start_service, tmp_path: Path) -> None:  # noqa: ANN001
    """The coordinator unmasks the exact sum of clipped updates before it noises it. Nothing it
    serves or stores (model versions, rounds, audit, privacy report, configuration, the database's
    protocol snapshot) may be that sum, its mean, or a number computed from it such as its norm."""
    service, hospitals = dp_federation(start_service, "central", max_rounds=1, afforded=1)
    dirs = [tmp_path / f"hospital-{i}" for i in range(HOSPITALS)]
    base, mean = run_dp_round(service, hospitals, dirs, 1)
    flat_mean = np.concatenate([m.ravel() for m in mean])
    secrets_of_the_sum = [float(np.linalg.norm(flat_mean)), float(np.linalg.norm(flat_mean * HOSPITALS))]
    with service.client() as admin:
        versions = ["1.0.0", "1.0.1"]
        served = {v: model(admin, v)[0] for v in versions}
        documents = {
            "rounds": admin.get(f"{PREFIX}/rounds").json(),
            "audit": admin.get(f"{PREFIX}/audit", params={"limit": 1000}).json(),
            "report": admin.get(f"{PREFIX}/privacy/report").json(),
            "epsilon": admin.get(f"{PREFIX}/privacy/epsilon").json(),
            "config": admin.get(f"{PREFIX}/config").json(),
            "models": [model(admin, v)[1] for v in versions],
            "current": status(admin),
        }
    # no version of the model is base + the un-noised mean (up to float32 and quantization)
    for version, arrays in served.items():
        gap = max(float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64) - m)))
                  for a, b, m in zip(arrays, base, mean, strict=True))  # fmt: skip
        assert gap > 1e-3, f"model {version} is the un-noised mean"
    # no published number is the norm of the un-noised sum or mean
    for name, document in documents.items():
        for number in _numbers(document):
            for secret in secrets_of_the_sum:
                assert not math.isclose(number, secret, rel_tol=1e-6), f"{name} publishes {number} (the un-noised sum's norm)"
    text = json.dumps(documents)
    assert "mean_l2_norm" not in text
    # the database keeps no running total (masked or not) once the round closed
    from sqlalchemy import create_engine
    from sqlalchemy import text as sql

    engine = create_engine(service_database(service))
    try:
        with engine.connect() as connection:
            totals = connection.execute(sql("SELECT total FROM secure_snapshots")).scalars().all()
            masked = connection.execute(sql("SELECT count(*) FROM secure_messages WHERE masked IS NOT NULL")).scalar_one()
            reports = connection.execute(sql("SELECT report FROM rounds")).scalars().all()
    finally:
        engine.dispose()
    assert all(not t for t in totals) and masked == 0
    for report in reports:
        for number in _numbers(json.loads(report) if report else None):
            for secret in secrets_of_the_sum:
                assert not math.isclose(number, secret, rel_tol=1e-6), "a round report stores the un-noised sum's norm"


def service_database(service) -> str:  # noqa: ANN001
    """The database URL the service was started with."""
    for argument in service.process.args:
        if str(argument).startswith("coordinator.database_url="):
            return str(argument).split("=", 1)[1]
    raise AssertionError("no database URL in the service's command line")


def test_attack_a_share_sized_for_more_contributors_than_the_round_needs_is_never_sent(start_service, tmp_path: Path) -> None:  # noqa: ANN001
    """A coordinator that publishes a larger ``min-contributors`` than its rounds' threshold
    would get smaller noise shares, and a sum of fewer of them than the ledger accounts: the
    hospital refuses the round setup before anything is masked or sent."""
    service, hospitals = dp_federation(start_service, "distributed", max_rounds=2, afforded=2)
    with hospitals[0].http(service) as http:
        wait_until(lambda: (s := status(http))["round"] == 1 and s["status"] == "open")
        base, meta = model(http)
        policy = http.get(f"{PREFIX}/privacy/policy").json()
    inflated = {**policy, "min-contributors": HOSPITALS + 7}  # what a lying coordinator would publish
    dirs = [tmp_path / f"hospital-{i}" for i in range(HOSPITALS)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=HOSPITALS) as pool:
        futures = [pool.submit(take_part, service, h, dirs[i], inflated if i == 0 else policy,
                               hospital_update(base, i, 1), meta["model_version"], 1)
                   for i, h in enumerate(hospitals)]  # fmt: skip
        with pytest.raises(ProtocolViolation, match="threshold_check"):
            futures[0].result()
        for f in futures[1:]:  # the others go on; whatever the round's outcome, hospital 0 sent no update
            f.exception()
    with service.client() as admin:
        events = admin.get(f"{PREFIX}/audit", params={"limit": 1000}).json()
    def actions(org: str) -> set[str]:
        return {e["action"] for e in events if org in (e["organization_id"], e["actor"])}

    uploads = {"secure_sum.masked", "submission.accepted"}
    assert "secure_sum.keys" in actions(hospitals[0].id) and not actions(hospitals[0].id) & uploads
    assert actions(hospitals[1].id) & uploads  # an upload would show here


def test_a_noise_share_is_refused_by_a_setup_that_would_not_carry_it_as_accounted() -> None:
    """The share is sized for ``min-contributors`` and accounted on the ``frac-bits`` grid at
    weight 1: a setup with a lower threshold, another grid or a weight cap below 1 (all set
    by the coordinator) would release it under other terms than the hospital's ledger."""
    from types import SimpleNamespace

    share = NoiseShare(min_contributors=3, frac_bits=16)
    fine = SimpleNamespace(round=4, threshold=3, frac_bits=16, weight_bound=1.0)
    assert share.refusal(fine) is None
    assert share.refusal(SimpleNamespace(**{**vars(fine), "threshold": 5})) is None  # more shares: more noise
    for field, value, said in (("threshold", 2, "below the 3 contributors"), ("frac_bits", 12, "12 fractional bits"),
                               ("weight_bound", 0.5, "caps the weight")):  # fmt: skip
        reason = share.refusal(SimpleNamespace(**{**vars(fine), field: value}))
        assert reason is not None and reason.startswith("threshold_check") and said in reason, (field, reason)


def test_attack_under_central_noise_an_over_bound_masked_input_is_projected_not_a_failed_round(start_service, tmp_path: Path) -> None:  # noqa: ANN001
    """A hospital shifts its masked vector (nobody can verify it before unmasking) so that the
    un-noised sum is far outside the aggregate bound. A failed round would tell it one bit about
    the others' un-noised updates, outside the ledger: the round completes instead, the mean is
    projected onto the bound before the noise, and the served model moves by at most the bound
    plus the noise."""
    service, hospitals = dp_federation(start_service, "central", max_rounds=1, afforded=1)
    with service.client() as admin:
        published = admin.get(f"{PREFIX}/config").json()
    guard = flower_guard(published)
    ring = published["ring"]
    dtype = np.dtype("<u4" if ring["bits"] <= 32 else "<u8")

    def shift(body: dict) -> None:  # every ring element up by 2^(bits-3): far beyond any clipped update
        masked = np.frombuffer(bytes.fromhex(body["gradients_encrypted"][2:]), dtype=dtype).copy()
        masked += dtype.type(1 << (ring["bits"] - 3))
        body["gradients_encrypted"] = "0x" + masked.tobytes().hex()

    with hospitals[0].http(service) as http:
        wait_until(lambda: (s := status(http))["round"] == 1 and s["status"] == "open")
        base, meta = model(http)
        policy = http.get(f"{PREFIX}/privacy/policy").json()
    dirs = [tmp_path / f"hospital-{i}" for i in range(HOSPITALS)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=HOSPITALS) as pool:
        futures = [pool.submit(take_part, service, h, dirs[i], policy, hospital_update(base, i, 1), meta["model_version"], 1,
                               shift if i == 0 else None)
                   for i, h in enumerate(hospitals)]  # fmt: skip
        receipts = [f.result() for f in futures]
    assert all(r.status == "ok" and r.contributors == HOSPITALS for r in receipts), receipts
    from sqlalchemy import create_engine
    from sqlalchemy import text as sql

    engine = create_engine(service_database(service))
    try:
        with engine.connect() as connection:
            (report,) = connection.execute(sql("SELECT report FROM rounds WHERE number = 1")).scalars().all()
    finally:
        engine.dispose()
    check = json.loads(report)["aggregate_check"]
    assert check["passed"] is True and check["details"]["enforced_by"] == "projection"
    bound = check["details"]["bound"]
    with service.client() as admin:
        served, _ = model(admin)
    moved = np.concatenate([(s.astype(np.float64) - b.astype(np.float64)).ravel() for s, b in zip(served, base, strict=True)])
    sigma_mean, d = guard.z * guard.sensitivity / HOSPITALS, moved.size
    # ||projected mean + noise|| <= bound + sigma (sqrt d + sqrt(2 ln 1e9)), except with probability 1e-9
    assert np.linalg.norm(moved) <= bound + sigma_mean * (math.sqrt(d) + math.sqrt(2 * math.log(1e9)))
    # the shift dominates the un-noised mean, which is projected onto the bound: along (1, ..., 1)
    # the model moved by the bound, give or take the noise (6 sigma) and the honest updates' share
    along = float(np.mean(moved)) * math.sqrt(d)
    assert abs(along - bound) < 6 * sigma_mean + 0.01
