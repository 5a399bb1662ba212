"""The product's documented SDK example, as a runnable script.

Against a live coordinator (the documented form; the hospital's own credentials)::

    export ONELIAC_URL=https://coordinator.example.org ONELIAC_API_KEY=sk_live_...
    export ONELIAC_ORGANIZATION_ID=org_... ONELIAC_CSV=/data/patients.csv
    python examples/documented_example.py

Self-contained demo (starts a local coordinator on loopback with a temporary SQLite file,
registers three hospitals made from the built-in breast-cancer table; two of them train
without DP in the background, the third runs the documented calls)::

    python examples/documented_example.py --demo

Status: the same calls work against ``fedavg`` (the update sealed to the coordinator's key)
and ``secure_sum`` federations (the whole secure-sum protocol, with the release declared to
the coordinator under ``privacy_budget.mode: release``; ``tests/sdk/test_secure_sum.py``
runs them in three hospital processes). The demo federation is a fedavg one without DP,
so ``get_privacy_report`` answers ``FeatureUnavailable`` there. With the documented epsilon of 0.1 per release the noise
(standard deviation about 30.7 per weight at sensitivity 1) is far larger than any
update: the demo coordinator's update-norm bound is raised to 1000 so the release is
accepted, and the printed accuracy (on the whole built-in table) shows what one such
release among three contributions does to the averaged model.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pandas as pd

from oneliac.encryption import DifferentialPrivacy
from oneliac.federated import FederatedLearner
from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.data.federated import feature_schema
from oneliac_flwr.errors import FeatureUnavailable
from oneliac_flwr.sdk import GlobalModel
from oneliac_flwr.sdk.data import local_table

ROOT = Path(__file__).resolve().parents[1]


def load_patient_data(confidential: bool = True) -> pd.DataFrame:
    """The hospital's own data: ``$ONELIAC_CSV``, or (demo) a third of the built-in table."""
    if os.environ.get("ONELIAC_CSV"):
        return pd.read_csv(os.environ["ONELIAC_CSV"])
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer(as_frame=True).frame.iloc[2::3].reset_index(drop=True)


def documented_example(organization_id: str, api_key: str) -> GlobalModel:
    """The documented calls, in order (the round is the one the coordinator has open)."""
    learner = FederatedLearner(organization_id=organization_id, api_key=api_key)
    local_data = load_patient_data(confidential=True)
    model = learner.train_local(data=local_data, epochs=10, batch_size=32)
    dp = DifferentialPrivacy(epsilon=0.1)
    encrypted_gradients = dp.add_noise_to_gradients(model.gradients, sensitivity=1.0)
    round_number = learner.round_status().round or 1
    learner.submit_gradients(gradients=encrypted_gradients, round=round_number)
    global_model = learner.download_model(version="latest")
    print("global model", global_model.model_version, "round", global_model.training_round,
          "contributors", global_model.organizations_contributed, "accuracy", global_model.accuracy)

    validation_results = learner.validate_submission(
        gradients=encrypted_gradients, checks=["bounds_check", "nan_check", "privacy_check"])
    print(validation_results)
    try:
        privacy_report = learner.get_privacy_report(round=round_number)
        print(privacy_report.total_epsilon, privacy_report.participants)
    except FeatureUnavailable as exc:
        print("privacy report:", exc)
    current_epsilon = learner.get_current_epsilon()
    print("this hospital's epsilon:", current_epsilon)
    data_stats = learner.analyze_local_data()
    print(data_stats.label_distribution)
    learner.close()
    return global_model


def demo() -> None:
    """Start a local fedavg coordinator, register three hospitals, run the example as the third."""
    from sklearn.datasets import load_breast_cancer

    from oneliac_flwr.sdk.state import StateDirectory

    work = Path(tempfile.mkdtemp(prefix="oneliac-demo-"))
    admin = secrets.token_urlsafe(32)
    with socket_port() as port:
        url = f"http://127.0.0.1:{port}"
    overrides = ["aggregation_config.aggregation_method=fedavg", "privacy_budget=none", "strategy=fedavg",
                 "aggregation_config.min_participants=3", "aggregation_config.max_rounds=1",
                 "validation.max_update_norm=1000"]
    env = {**os.environ, "ONELIAC_ADMIN_TOKEN": admin, "PYTHONPATH": str(ROOT)}
    log = (work / "coordinator.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "oneliac_flwr.api", "serve", f"coordinator.port={port}",
                               f"coordinator.database_url=sqlite:///{work / 'fl.db'}", *overrides],
                              cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(url)
        frame = load_breast_cancer(as_frame=True).frame
        orgs = []
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}, trust_env=False) as client:
            for i in range(3):
                keys = StateDirectory(work / f"hospital-{i}").registration()
                body = {"organization_name": f"Hospital {'ABC'[i]}", "endpoint": f"https://h{i}.example.org/federated",
                        "encryption_key": keys["encryption_key"], "identity_key": keys["identity_key"]}
                orgs.append(client.post("/api/v1/federated/organizations", json=body).raise_for_status().json())
        os.environ["ONELIAC_URL"] = url  # the settings come from the coordinator (GET /config)
        others = [threading.Thread(target=plain_hospital, args=(org, work / f"hospital-{i}", frame.iloc[i::3]))
                  for i, org in enumerate(orgs[:2])]
        for thread in others:
            thread.start()
        os.environ["ONELIAC_STATE_DIR"] = str(work / "hospital-2")
        global_model = documented_example(orgs[2]["organization_id"], orgs[2]["api_key"])
        for thread in others:
            thread.join()
        config = ExperimentConfig()
        table = local_table(frame, config.dataset)
        scaled = feature_schema(config, table).scale(table)
        accuracy = float((global_model.predict(scaled.features) == scaled.labels).mean())
        print(f"demo: accuracy of model {global_model.model_version} on the whole built-in table: {accuracy:.3f}")
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def plain_hospital(org: dict, state_dir: Path, frame: pd.DataFrame) -> None:
    learner = FederatedLearner(org["organization_id"], org["api_key"], state_dir=state_dir, progress=None)
    learner.run(frame.reset_index(drop=True), rounds=1, epochs=10, batch_size=32)
    learner.close()


class socket_port:  # noqa: N801 - a tiny context manager
    def __enter__(self) -> int:
        import socket

        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        return int(self._socket.getsockname()[1])

    def __exit__(self, *_: object) -> None:
        self._socket.close()


def wait_ready(url: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", trust_env=False, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the coordinator at {url} did not start in {timeout:.0f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", action="store_true", help="start a local coordinator and three hospitals")
    if parser.parse_args().demo:
        demo()
    else:
        documented_example(os.environ["ONELIAC_ORGANIZATION_ID"], os.environ["ONELIAC_API_KEY"])
