"""The hospital decides its own privacy: attacks by a coordinator that lies in its instructions.

Each ``test_finding_...`` failed on the code before the fix (issue 8).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

from oneliac_flwr.config import BREAST_CANCER_FEATURE_BOUNDS, ExperimentConfig
from oneliac_flwr.flower.client_privacy import hospital_policy, instruction_refusal, privatize_update
from oneliac_flwr.flower.clientapp import build_client_app
from oneliac_flwr.flower.components import new_model
from oneliac_flwr.flower.records import ARRAYS, CONFIG, INFO, PRIVACY, parse_train_reply
from oneliac_flwr.flower.serverapp import run_federation
from oneliac_flwr.privacy.entropy import os_generator, os_torch_generator
from oneliac_flwr.privacy.hospital import HospitalPolicy, HospitalPrivacyState
from oneliac_flwr.results import Rejection
from oneliac_flwr.training import get_weights

from conftest import NODES, RUN_ID, AppGrid

DELTA = 1e-5


def _config(**privacy: object) -> ExperimentConfig:
    return ExperimentConfig.from_dict(
        {
            "federation": {"num_organizations": len(NODES)},
            "aggregation_config": {"max_rounds": 3, "min_participants": 2},
            "training": {"learning_rate": 0.05},
            "privacy_budget": {"delta": DELTA, **privacy},
        }
    )


def _train_message(config: ExperimentConfig, instruction: dict | None, server_round: int = 1) -> Message:
    content = RecordDict(
        {
            ARRAYS: ArrayRecord(numpy_ndarrays=get_weights(new_model(config))),
            CONFIG: ConfigRecord({"server-round": server_round}),
        }
    )
    if instruction is not None:
        content[PRIVACY] = ConfigRecord(instruction)
    return Message(content=content, dst_node_id=NODES[0], message_type=MessageType.TRAIN)


def _context(node_config: dict) -> Context:
    return Context(run_id=RUN_ID, node_id=NODES[0], node_config=node_config, state=RecordDict(), run_config={})


def _deployment_node(tmp_path: Path, csv: Path, **policy: object) -> dict:
    return {"organization-id": "h1", "data-path": str(csv), "state-dir": str(tmp_path / "h1-state"), **policy}


@pytest.fixture
def hospital_csv(tmp_path: Path) -> Path:
    from oneliac_flwr.data import load_breast_cancer

    table = load_breast_cancer()
    rows = np.column_stack([table.features[:150], table.labels[:150]])
    path = tmp_path / "h1.csv"
    header = ",".join([*(f"f{i}" for i in range(table.features.shape[1])), "diagnosis"])
    np.savetxt(path, rows, delimiter=",", header=header, comments="")
    return path


def _csv_config(**privacy: object) -> ExperimentConfig:
    return ExperimentConfig.from_dict(
        {
            "dataset": {
                "name": "csv",
                "label_column": "diagnosis",
                "feature_columns": [f"f{i}" for i in range(30)],
                "feature_bounds": list(BREAST_CANCER_FEATURE_BOUNDS),  # DP needs public bounds
            },
            "aggregation_config": {"min_participants": 1},
            "privacy_budget": {"delta": DELTA, **privacy},
        }
    )


def _status(reply: Message) -> tuple[str, str]:
    info = reply.content[INFO]
    return str(info["status"]), str(info["check"])


ORGANIZATION = {"mode": "organization", "clip-norm": 1.0, "noise-multiplier": 2.0, "mechanism": "gaussian", "delta": DELTA}


def test_finding_a_hospital_refuses_less_noise_than_its_policy(tmp_path: Path, hospital_csv: Path) -> None:
    config = _csv_config(mode="organization")
    node = _deployment_node(
        tmp_path, hospital_csv, **{"privacy-unit": "organization", "privacy-epsilon": 8.0, "privacy-delta": DELTA,
                                   "privacy-min-noise-multiplier": 1.0}  # fmt: skip
    )
    app = build_client_app(config)
    weak = app(_train_message(config, {**ORGANIZATION, "noise-multiplier": 0.01}), _context(node))
    assert _status(weak) == ("rejected", "privacy_check") and ARRAYS not in weak.content
    fine = app(_train_message(config, ORGANIZATION), _context(node))
    assert _status(fine) == ("ok", "") and ARRAYS in fine.content


def test_finding_a_hospital_refuses_a_larger_delta_or_another_unit(tmp_path: Path, hospital_csv: Path) -> None:
    config = _csv_config(mode="organization")
    node = _deployment_node(tmp_path, hospital_csv, **{"privacy-unit": "organization", "privacy-epsilon": 8.0, "privacy-delta": DELTA})
    app = build_client_app(config)
    assert _status(app(_train_message(config, {**ORGANIZATION, "delta": 0.1}), _context(node)))[1] == "privacy_check"
    release = {"mode": "release", "clip-norm": 1.0, "release-epsilon": 50.0, "delta": DELTA, "mechanism": "gaussian"}
    assert _status(app(_train_message(config, release), _context(node)))[1] == "privacy_check"
    # and a coordinator that simply asks for no DP gets nothing from a hospital that requires it
    assert _status(app(_train_message(config, None), _context(node)))[1] == "privacy_check"


def test_a_deployed_hospital_without_a_policy_refuses_dp_instructions_it_cannot_account(
    tmp_path: Path, hospital_csv: Path
) -> None:
    config = _csv_config(mode="organization")
    node = {"organization-id": "h1", "data-path": str(hospital_csv)}
    reply = build_client_app(config)(_train_message(config, ORGANIZATION), _context(node))
    assert _status(reply) == ("rejected", "privacy_check")


def _cap_between_two_and_three_releases() -> float:
    """A cap that affords exactly two analytic-Gaussian releases of epsilon 1 (PLD-composed)."""
    from oneliac_flwr.privacy import DifferentialPrivacy, PrivacyLedger

    ledger = PrivacyLedger(epsilon_budget=100.0, delta=DELTA)
    event = DifferentialPrivacy(1.0, DELTA, "gaussian").release_event()
    ledger.record([event, event], round_number=1)
    two = ledger.get_current_epsilon()
    return (two + ledger.epsilon_if([event])) / 2


def test_finding_a_hospital_caps_its_own_spending_whatever_the_coordinator_says(tmp_path: Path, hospital_csv: Path) -> None:
    """The coordinator keeps asking; the hospital's own ledger stops at its own cap."""
    config = _csv_config(mode="release")
    cap = _cap_between_two_and_three_releases()
    node = _deployment_node(tmp_path, hospital_csv, **{"privacy-unit": "release", "privacy-epsilon": cap, "privacy-delta": DELTA})
    instruction = {"mode": "release", "clip-norm": 1.0, "release-epsilon": 1.0, "delta": DELTA, "mechanism": "gaussian"}
    app = build_client_app(config)
    statuses = [_status(app(_train_message(config, instruction, r), _context(node)))[0] for r in range(1, 5)]
    assert statuses == ["ok", "ok", "rejected", "rejected"]


def test_finding_a_restarted_supernode_resumes_its_history(tmp_path: Path, hospital_csv: Path) -> None:
    """A fresh Context (SuperNode restart, new run) no longer resets the hospital's epsilon."""
    config = _csv_config(mode="release")
    cap = _cap_between_two_and_three_releases()
    node = _deployment_node(tmp_path, hospital_csv, **{"privacy-unit": "release", "privacy-epsilon": cap, "privacy-delta": DELTA})
    instruction = {"mode": "release", "clip-norm": 1.0, "release-epsilon": 1.0, "delta": DELTA, "mechanism": "gaussian"}
    for run in range(2):  # two runs, each with a new app and context, one round each
        reply = build_client_app(config)(_train_message(config, instruction, 1), _context(node))
        assert _status(reply)[0] == "ok", run
    third = build_client_app(config)(_train_message(config, instruction, 1), _context(node))
    assert _status(third) == ("rejected", "privacy_check")


def test_finding_sample_level_history_survives_a_second_run_in_the_same_federation(tmp_path: Path) -> None:
    """Before: each run started from an empty context.state and reported epsilon <= budget."""
    config = ExperimentConfig.from_dict(
        {
            "federation": {"num_organizations": len(NODES)},
            "aggregation_config": {"max_rounds": 2, "min_participants": 2},
            "privacy_budget": {"mode": "sample", "epsilon": 3.0, "delta": DELTA},
        }
    )
    first = run_federation(AppGrid(config), config, output_dir=tmp_path / "a", run_id=RUN_ID)
    assert first.rounds_completed == 2  # calibrated: the budget lasts exactly max_rounds
    second = run_federation(AppGrid(config), config, output_dir=tmp_path / "b", run_id=RUN_ID)
    assert second.rounds_completed == 0  # every hospital's own history says the budget is spent
    assert second.stopped_reason == "privacy_budget_exhausted"
    state = HospitalPrivacyState(
        Path(config.state_dir) / config.federation_name / "organizations" / "org-0",
        organization="org-0",
        policy=HospitalPolicy(unit="sample", epsilon=3.0, delta=DELTA),
    )
    assert 2.5 < state.epsilon() <= 3.0


def test_finding_distributed_shares_are_sized_by_the_hospital_not_the_coordinator(tmp_path: Path) -> None:
    """The old client added whatever client-noise-std the coordinator sent (0: none)."""
    policy = HospitalPolicy(unit="organization", epsilon=1e6, delta=DELTA, min_noise_multiplier=1.0)
    state = HospitalPrivacyState(tmp_path / "s", organization="h1", policy=policy)
    instruction = ConfigRecord(
        {"mode": "organization", "clip-norm": 1.0, "noise-multiplier": 0.5, "client-noise-std": 0.0, "delta": DELTA, "frac-bits": 16}
    )
    zeros = [np.zeros(200_000)]
    release = privatize_update(zeros, instruction, state=state, server_round=1, threshold=4)
    assert not isinstance(release, str)
    share = release.update[0]
    # z = max(0.5, policy 1.0) = 1, t = 4: std = z * C / sqrt(t) = 0.5
    assert abs(share.std() / 0.5 - 1) < 0.01
    assert share.dtype == np.float64 and np.array_equal(share * 2**16, np.rint(share * 2**16))  # on the grid


def test_finding_dp_noise_and_batches_differ_between_identical_runs() -> None:
    """Same seed, same config: OS-seeded generators draw different batches and noise."""
    first, second = os_torch_generator(), os_torch_generator()
    import torch

    assert not torch.equal(torch.randperm(500, generator=first), torch.randperm(500, generator=second))
    assert not np.array_equal(os_generator().normal(size=8), os_generator().normal(size=8))


def test_finding_sample_mode_updates_differ_for_the_same_seed_and_data(tmp_path: Path) -> None:
    config = _config(mode="sample", epsilon=50.0)
    instruction = {"mode": "sample", "clip-norm": 1.0, "epsilon-budget": 50.0, "delta": DELTA, "max-rounds": 3}
    node = {"partition-id": 0, "num-partitions": len(NODES)}
    app = build_client_app(config)
    replies = [app(_train_message(config, instruction), _context(node)) for _ in range(2)]
    first, second = (r.content[ARRAYS].to_numpy_ndarrays()[0] for r in replies)
    assert not np.array_equal(first, second)


def test_instruction_refusal_names_what_breaks_the_policy() -> None:
    policy = HospitalPolicy(unit="organization", epsilon=1.0, delta=DELTA, min_noise_multiplier=2.0)
    assert "requires at least 2" in instruction_refusal(policy, ConfigRecord({**ORGANIZATION, "noise-multiplier": 1.0}))
    assert "delta" in instruction_refusal(policy, ConfigRecord({**ORGANIZATION, "delta": 1e-3}))
    assert instruction_refusal(policy, ConfigRecord(ORGANIZATION)) is None
    simulated = hospital_policy(_config(mode="sample", epsilon=2.0), {"partition-id": 0})
    assert (simulated.unit, simulated.epsilon) == ("sample", 2.0)


def test_finding_coordinator_set_bounds_are_no_oracle_under_dp(tmp_path: Path, hospital_csv: Path) -> None:
    """Review: binary search on refusals against coordinator-set bounds gave the row count.

    Under DP the hospital's own checks are structural only: absurd bounds change nothing.
    """
    strict = ExperimentConfig.from_dict(
        {
            **{k: v for k, v in _csv_config(mode="release").to_dict().items() if k in ("dataset",)},
            "aggregation_config": {"min_participants": 1},
            "privacy_budget": {"mode": "release", "delta": DELTA},
            "validation": {"max_num_examples": 1, "max_update_norm": 1e-9, "value_range": 1e-9},
        }
    )
    node = _deployment_node(tmp_path, hospital_csv, **{"privacy-unit": "release", "privacy-epsilon": 50.0, "privacy-delta": DELTA})
    instruction = {"mode": "release", "clip-norm": 1.0, "release-epsilon": 1.0, "delta": DELTA, "mechanism": "gaussian"}
    reply = build_client_app(strict)(_train_message(strict, instruction), _context(node))
    assert _status(reply) == ("ok", "")


def test_finding_concurrent_requests_never_spend_past_the_cap(tmp_path: Path, hospital_csv: Path) -> None:
    """Review: four concurrent requests each checked a stale copy; 4 releases were sent, 1 recorded."""
    from concurrent.futures import ThreadPoolExecutor

    config = _csv_config(mode="release")
    cap = _cap_between_two_and_three_releases()
    node = _deployment_node(tmp_path, hospital_csv, **{"privacy-unit": "release", "privacy-epsilon": cap, "privacy-delta": DELTA})
    instruction = {"mode": "release", "clip-norm": 1.0, "release-epsilon": 1.0, "delta": DELTA, "mechanism": "gaussian"}
    app = build_client_app(config)
    with ThreadPoolExecutor(max_workers=4) as pool:
        replies = list(pool.map(lambda r: app(_train_message(config, instruction, r), _context(node)), range(1, 5)))
    sent = sum(_status(r)[0] == "ok" for r in replies)
    state = HospitalPrivacyState(Path(node["state-dir"]), organization="h1", policy=HospitalPolicy(unit="release", epsilon=cap, delta=DELTA))
    assert sent == 2 and len(state.ledger.events) == 2


def test_finding_no_exception_text_reaches_the_coordinator(tmp_path: Path, hospital_csv: Path) -> None:
    """Review: an out-of-range label made torch raise 'Target 4 is out of bounds', sent as error text."""
    text = hospital_csv.read_text().splitlines()
    text[1] = ",".join([*text[1].split(",")[:-1], "4"])  # one patient with diagnosis code 4
    hospital_csv.write_text("\n".join(text) + "\n")
    config = _csv_config(mode="release")
    node = _deployment_node(tmp_path, hospital_csv, **{"privacy-unit": "release", "privacy-epsilon": 50.0, "privacy-delta": DELTA})
    instruction = {"mode": "release", "clip-norm": 1.0, "release-epsilon": 1.0, "delta": DELTA, "mechanism": "gaussian"}
    reply = build_client_app(config)(_train_message(config, instruction), _context(node))
    assert not reply.has_error()
    assert _status(reply) == ("rejected", "data_check") and reply.content[INFO]["reason"] == ""


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda frame: frame.drop(columns=["f3"]), "feature column not found"),
        (lambda frame: frame.assign(f3=frame["f3"].where(frame.index % 7 != 0)), "feature column has missing values (NaN)"),
        (lambda frame: frame.assign(f3="x"), "feature column is not numeric"),
    ],
)
def test_bad_data_is_refused_under_the_organization_id_naming_file_and_column_only(
    tmp_path: Path, hospital_csv: Path, damage, problem: str
) -> None:
    import pandas as pd

    damage(pd.read_csv(hospital_csv)).to_csv(hospital_csv, index=False)
    config = _csv_config(mode="release")
    node = _deployment_node(tmp_path, hospital_csv, **{"privacy-unit": "release", "privacy-epsilon": 50.0, "privacy-delta": DELTA})
    instruction = {"mode": "release", "clip-norm": 1.0, "release-epsilon": 1.0, "delta": DELTA, "mechanism": "gaussian"}
    reply = build_client_app(config)(_train_message(config, instruction), _context(node))
    assert _status(reply) == ("rejected", "data_check")
    assert reply.content[INFO]["organization-id"] == "h1"
    assert reply.content[INFO]["reason"] == f"{hospital_csv}: column 'f3': {problem}"  # no count, no value
    parsed = parse_train_reply(reply)
    assert isinstance(parsed, Rejection) and parsed.organization == "h1"
    assert parsed.reason == f"refused by the client: {hospital_csv}: column 'f3': {problem}"


def test_finding_a_hospital_can_refuse_central_noise_it_cannot_verify() -> None:
    policy = HospitalPolicy(unit="organization", epsilon=8.0, delta=DELTA, require_distributed_noise=True)
    assert "central noise" in instruction_refusal(policy, ConfigRecord(ORGANIZATION))
    assert instruction_refusal(policy, ConfigRecord({**ORGANIZATION, "frac-bits": 16})) is None
    node = {"organization-id": "h1", "data-path": "x.csv", "privacy-unit": "organization", "privacy-epsilon": 8.0,
            "privacy-delta": DELTA, "privacy-require-distributed-noise": "true"}  # fmt: skip
    assert hospital_policy(_config(), node).require_distributed_noise is True
