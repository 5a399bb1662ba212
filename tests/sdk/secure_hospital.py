"""One hospital PROCESS of the secure-sum SDK tests: the documented example's calls, round by round.

Run as ``python secure_hospital.py <settings.json>``: it imports what it needs, then waits
for the settings file (so its start-up is not inside a stage deadline). It writes what it saw to
``settings["out"]`` (JSON) after every round, so a test can read it even if it is killed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(settings_file: str) -> None:
    from oneliac.encryption import DifferentialPrivacy
    from oneliac.federated import FederatedLearner
    from oneliac_flwr.sdk import local_training  # noqa: F401 - torch and the training stack, before the round

    path = Path(settings_file)
    while not path.exists():  # written (atomically) once the coordinator runs and this hospital is registered
        time.sleep(0.1)
    settings = json.loads(path.read_text())
    out = Path(settings["out"])

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)
        if settings.get("pause_at") and settings["pause_at"] in line:  # the kill test: wait here to be killed
            Path(settings["pause_file"]).write_text(line)
            time.sleep(3600)

    learner = FederatedLearner(organization_id=settings["organization_id"], api_key=settings["api_key"],
                               base_url=settings["url"], state_dir=settings["state_dir"],
                               progress=progress)  # fmt: skip  (the coordinator's published configuration)
    rounds: list[dict] = []
    last = 0
    pending = learner.state.pending_round() if settings.get("resume_by_submitting") else None
    if pending is not None:  # the killed process's round, trained and submitted again as its loop would do:
        fresh = learner.train_local(data=settings["csv"], epochs=1, batch_size=32)  # submit_gradients resumes the
        resumed = learner.submit_gradients(gradients=fresh.gradients, round=int(pending["round"]))  # round, sends no new vector
    else:
        resumed = learner.resume()  # the round this hospital uploaded to before its process was killed, if any
    if resumed is not None:
        rounds.append({"round": resumed.round, "resumed": True, "receipt": resumed.receipt, "status": resumed.status,
                       "model_version": resumed.model_version, "contributors": resumed.organizations_contributed})  # fmt: skip
        out.write_text(json.dumps(rounds))
        last = resumed.round
    for _ in range(int(settings["rounds"]) - len(rounds)):
        while True:  # the next round this organization must act in
            status = learner.round_status()
            if status.next_action in ("advertise_keys", "submit") and (status.round or 0) > last:
                break
            time.sleep(0.2)
        number = int(status.round or 0)
        opened = time.monotonic()
        model = learner.train_local(data=settings["csv"], epochs=10, batch_size=32)
        entry: dict = {"round": number, "base": model.model_version}
        if settings.get("epsilon") is not None:
            dp = DifferentialPrivacy(epsilon=float(settings["epsilon"]))
            gradients = dp.add_noise_to_gradients(model.gradients, sensitivity=1.0)
            entry["noise_multiplier"] = gradients.release.noise_multiplier
            # the test observes every release (it is the one party allowed to) to check the aggregate
            import numpy as np

            np.savez(out.with_name(f"{out.stem}-release-{number}.npz"), **dict(gradients))
        else:
            gradients = model.gradients
        checks = learner.validate_submission(gradients=gradients, checks=["bounds_check", "nan_check", "privacy_check"])
        entry["checks"] = {name: checks[name].passed for name in checks}
        receipt = learner.submit_gradients(gradients=gradients, round=number)
        entry["round_seconds"] = time.monotonic() - opened  # train, noise, check, the protocol, until aggregated
        entry.update(receipt=receipt.receipt, status=receipt.status, model_version=receipt.model_version,
                     contributors=receipt.organizations_contributed)  # fmt: skip
        global_model = learner.download_model(version="latest")
        entry.update(downloaded=global_model.model_version, training_round=global_model.training_round)
        if settings.get("epsilon") is not None:
            report = learner.get_privacy_report(round=number)
            entry.update(report_total_epsilon=report.total_epsilon, report_participants=report.participants)
        entry["current_epsilon"] = learner.get_current_epsilon()
        entry["label_distribution"] = learner.analyze_local_data().label_distribution
        rounds.append(entry)
        out.write_text(json.dumps(rounds))
        last = number
    learner.close()


if __name__ == "__main__":
    main(sys.argv[1])
