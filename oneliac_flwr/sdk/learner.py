"""``FederatedLearner``: a hospital's side of the federation, as the product documents it.

A small surface over the coordinator's REST API and the project's core: local training
(:mod:`oneliac_flwr.training`), the named checks (:mod:`oneliac_flwr.validation`), the
hospital's own privacy state (:mod:`oneliac_flwr.privacy.hospital`) and sealed
submissions (:mod:`oneliac_flwr.secure.sealed`). Every coordinator problem becomes a
typed error of :mod:`oneliac_flwr.errors`; nothing of httpx leaks out.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.data.analysis import analyze_local_data
from oneliac_flwr.errors import ConfigError, PrivacyBudgetExhausted, PrivacyError, PrivacyPolicyRefused, RoundClosed
from oneliac_flwr.masked_statistics import MaskedStatistics
from oneliac_flwr.privacy.hospital import HospitalPolicy
from oneliac_flwr.privacy.update_release import privatize_update
from oneliac_flwr.sdk.checks import ValidationResults, run_checks
from oneliac_flwr.sdk.data import LocalData, columns, prepare, raw_columns
from oneliac_flwr.sdk.dp import DifferentialPrivacy
from oneliac_flwr.sdk.local_training import LocalModel, masked_statistics, train_from_global
from oneliac_flwr.sdk.model import GlobalModel, fetch_model
from oneliac_flwr.sdk.reports import DataStatistics, PrivacyReport, fetch_privacy_report
from oneliac_flwr.sdk.settings import FederationSettings, LocalConfig, check_privacy, load_settings
from oneliac_flwr.sdk.state import StateDirectory
from oneliac_flwr.sdk.submission import (
    Progress,
    Receipt,
    RoundStatus,
    current_status,
    resume_secure_round,
    submit_fedavg,
    submit_secure_sum,
    wait_for_open_round,
    wait_for_round,
)
from oneliac_flwr.sdk.transport import CoordinatorClient
from oneliac_flwr.sdk.update import ModelUpdate, as_update
from oneliac_flwr.validation import DeclaredPrivacy

if TYPE_CHECKING:
    from oneliac_flwr.api.participant import NoiseShare, SecureRoundReceipt

__all__ = ["API_KEY_ENV", "CONFIG_ENV", "STATE_DIR_ENV", "URL_ENV", "FederatedLearner", "config_from_file"]

URL_ENV = "ONELIAC_URL"
API_KEY_ENV = "ONELIAC_API_KEY"
STATE_DIR_ENV = "ONELIAC_STATE_DIR"
CONFIG_ENV = "ONELIAC_CONFIG"
_RELEASE_LABEL = "release:"


def config_from_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A local override of the federation's settings: a JSON file of config groups.

    Only the groups and fields the file sets are compared with (and, for ``training`` and
    the local data split, override) the coordinator's published configuration
    (:mod:`oneliac_flwr.sdk.settings`).

    Raises
    ------
    ConfigError
        If the file cannot be read or is not a valid configuration (names the field).
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError("config", f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError("config", f"{path}: expected a JSON object of config groups")
    ExperimentConfig.from_dict(data)  # names a bad field now, not at the first request
    return data


def _stderr_progress(message: str) -> None:
    print(f"[oneliac] {message}", file=sys.stderr, flush=True)


class FederatedLearner:
    """A hospital taking part in a federation through the REST coordinator.

    Parameters
    ----------
    organization_id : str
        The id the operator registered (``org_...``).
    api_key : str, optional
        The organization's API key (``sk_live_...``); default ``$ONELIAC_API_KEY``.
    base_url : str, optional
        The coordinator (``https://...``); default ``$ONELIAC_URL``.
    state_dir : path-like, optional
        The hospital's owner-only state directory (identity, keys, privacy ledger, DP-SGD
        history); default ``$ONELIAC_STATE_DIR``, else ``~/.oneliac/<organization_id>``.
    config : ExperimentConfig or mapping of config groups, optional
        A local override of the coordinator's published configuration
        (``GET /config``, used by default): its ``training`` group and local data split
        replace the published ones, and any other field that contradicts the published
        value is a :class:`ConfigError` naming it (see :mod:`oneliac_flwr.sdk.settings`).
        Default: the JSON file named by ``$ONELIAC_CONFIG``, else none.
    privacy_policy : HospitalPolicy, optional
        The hospital's own requirement and cap (unit, epsilon, delta, minimum noise).
        Default: the one saved in ``state_dir``, else the federation's published
        ``privacy_budget`` (saved on first use). A published policy weaker than it is
        refused (:class:`~oneliac_flwr.errors.PrivacyPolicyRefused`).
    verify : bool or str
        TLS verification (``True`` or a CA bundle path).
    timeout : float
        Seconds per request.
    retries : int
        Extra attempts after a transient failure.
    round_timeout : float, optional
        Seconds to wait for a round to open or aggregate; default the federation's
        ``aggregation_config.timeout_minutes`` plus a minute.
    progress : callable or None
        Receives one line per step while waiting; default prints to stderr, ``None``
        is silent.

    Raises
    ------
    ConfigError
        If no coordinator URL or API key is given (argument or environment), or the
        state directory is not owner-only; at the first use of the settings, if the
        local configuration contradicts the published one (names the field).
    PrivacyPolicyRefused
        At the first use of the settings, if the coordinator's published privacy policy
        is weaker than the hospital's own.
    """

    def __init__(
        self,
        organization_id: str,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        config: LocalConfig | None = None,
        privacy_policy: HospitalPolicy | None = None,
        verify: bool | str = True,
        timeout: float = 30.0,
        retries: int = 4,
        round_timeout: float | None = None,
        progress: Progress | None = _stderr_progress,
    ) -> None:
        if not isinstance(organization_id, str) or not organization_id.strip():
            raise ConfigError("organization_id", f"expected the registered id (org_...), got {organization_id!r}")
        self.organization_id = organization_id
        url = base_url or os.environ.get(URL_ENV)
        key = api_key or os.environ.get(API_KEY_ENV)
        if not url:
            raise ConfigError("base_url", f"give the coordinator's URL, or set {URL_ENV}")
        if not key:
            raise ConfigError("api_key", f"give the organization's API key (sk_live_...), or set {API_KEY_ENV}")
        folder = state_dir or os.environ.get(STATE_DIR_ENV) or Path.home() / ".oneliac" / organization_id
        self.state = StateDirectory(folder)
        self._progress = progress
        self._client = CoordinatorClient(url, key, timeout=timeout, retries=retries, verify=verify, on_retry=progress)
        if config is None and os.environ.get(CONFIG_ENV):
            config = config_from_file(os.environ[CONFIG_ENV])
        self._local_config = config
        self._policy_override = privacy_policy
        self._round_timeout = round_timeout
        self._settings: FederationSettings | None = None
        self._models: dict[str, GlobalModel] = {}
        self._data: LocalData | None = None
        self._statistics: dict[str, MaskedStatistics] = {}

    # ------------------------------------------------------------------ plumbing
    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    def __enter__(self) -> FederatedLearner:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def base_url(self) -> str:
        """The coordinator's address."""
        return self._client.base_url

    @property
    def settings(self) -> FederationSettings:
        """The federation's configuration (published by the coordinator, or the local copy)."""
        if self._settings is None:
            settings = load_settings(self._client, self._local_config)
            own = self._policy_override or self.state.saved_policy()
            if own is not None:  # fail closed: the coordinator never lowers the hospital's own requirement
                check_privacy(own, settings)
            self._settings = settings
        return self._settings

    @property
    def config(self) -> ExperimentConfig:
        """Shorthand for ``settings.config``."""
        return self.settings.config

    @property
    def policy(self) -> HospitalPolicy:
        """The hospital's own privacy policy (saved in the state directory)."""
        if self._policy_override is not None:
            self.state.save_policy(self._policy_override)
            return self._policy_override
        budget = self.config.privacy_budget
        return self.state.policy(HospitalPolicy(unit=budget.mode, epsilon=budget.epsilon, delta=budget.delta))

    def _timeout(self) -> float:
        if self._round_timeout is not None:
            return self._round_timeout
        return 60.0 * self.config.aggregation_config.timeout_minutes + 60.0

    def round_status(self) -> RoundStatus:
        """The current round and what this organization must do next."""
        return current_status(self._client)

    # ------------------------------------------------------------------ model
    def download_model(self, version: str = "latest") -> GlobalModel:
        """A global model version, checksum verified, as a ready torch module.

        Parameters
        ----------
        version : str
            ``"latest"`` or a kept version (``"1.0.3"``).

        Returns
        -------
        GlobalModel
            With ``model_version``, ``accuracy``, ``organizations_contributed``,
            ``training_round`` (and ``epsilon_spent``, ``checksum_sha256``).
        """
        if version != "latest" and version in self._models:
            return self._models[version]
        model = fetch_model(self._client, self.config, version=version)
        self._models[model.model_version] = model
        return model

    # ------------------------------------------------------------------ training
    def train_local(self, data: LocalData | None = None, epochs: int | None = None, batch_size: int | None = None) -> LocalModel:
        """Train from the current global model on the hospital's data.

        Parameters
        ----------
        data : DataFrame, CSV path or (X, y)
            The hospital's rows (see :mod:`oneliac_flwr.sdk.data`); default: the data of
            the previous call.
        epochs, batch_size : int, optional
            Default: the federation's ``training`` settings.

        Returns
        -------
        LocalModel
            ``.gradients`` (the update, same structure as the weights), ``.metrics``,
            ``.num_examples``, ``.model_version``.

        Raises
        ------
        PrivacyBudgetExhausted
            Under a sample-level policy, if this round's DP-SGD would exceed the cap.
        DataError, ConfigError
            If the data or the settings do not fit the federation's model.
        """
        if data is None:
            if self._data is None:
                raise ConfigError("data", "pass the hospital's data (a DataFrame, a CSV path or an (X, y) pair)")
            data = self._data
        self._data = data
        config = self.config
        epochs = config.training.local_epochs if epochs is None else int(epochs)
        batch_size = config.training.batch_size if batch_size is None else int(batch_size)
        if batch_size < 1:
            raise ConfigError("batch_size", f"must be >= 1, got {batch_size}")
        status = self.round_status()
        base = self.download_model(status.model_version if status.status == "open" and status.model_version else "latest")
        salt = int.from_bytes(self.organization_id.encode()[:8].ljust(8, b"\0"), "little") % (2**31)
        prepared = prepare(data, config, salt=salt)
        policy = self.policy
        if policy.unit == "sample":
            with self.state.privacy(organization=self.organization_id, policy=policy) as state:
                return train_from_global(base, prepared, config, epochs=epochs, batch_size=batch_size, state=state)
        local = train_from_global(base, prepared, config, epochs=epochs, batch_size=batch_size, state=None)
        if policy.unit == "none":  # secure sum without DP: these travel inside the masked vector only
            self._statistics[local.gradients.digest()] = masked_statistics(local, base, prepared, config)
        return local

    # ------------------------------------------------------------------ checks
    def _sample_count(self, update: ModelUpdate) -> int:
        """What is declared as the update's weight: 1 under DP (the count is data), else the rows."""
        if update.release is not None or self.policy.unit != "none":
            return 1
        if update.num_examples is None:
            raise ConfigError("gradients.num_examples", "unknown: submit LocalModel.gradients, or a noised copy of it")
        return int(update.num_examples)

    def _epsilon_after(self, update: ModelUpdate) -> float | None:
        """The hospital's epsilon once ``update`` is released (``None`` without DP)."""
        policy = self.policy
        with self.state.privacy(organization=self.organization_id, policy=policy) as state:
            if update.release is None:
                return state.epsilon() if policy.unit != "none" else None
            if self._recorded(state, update):
                return state.epsilon()
            return state.ledger.epsilon_if([update.release.event()])

    @staticmethod
    def _recorded(state: Any, update: ModelUpdate) -> bool:
        label = _RELEASE_LABEL + update.release.release_id if update.release else ""
        return any(entry.label == label for entry in state.ledger.entries)

    def _base_version(self, update: ModelUpdate) -> str:
        if update.model_version is not None:
            return update.model_version
        status = self.round_status()
        return status.model_version or self.download_model().model_version

    def validate_submission(self, gradients: ModelUpdate | Any, checks: list[str] | None = None) -> ValidationResults:
        """Run the coordinator's named checks locally, with the federation's bounds.

        Parameters
        ----------
        gradients : ModelUpdate or mapping of str to numpy.ndarray
            The update to send.
        checks : list of str, optional
            e.g. ``["bounds_check", "nan_check", "privacy_check"]``; default the
            federation's ``validation.checks``.

        Returns
        -------
        ValidationResults
            One result per check with its reason (``results["nan_check"].reason``).
        """
        update = as_update(gradients)
        base = self.download_model(self._base_version(update))
        return run_checks(update, checks=checks, config=self.config, global_arrays=base.arrays(),
                          sample_count=self._sample_count(update), epsilon_spent=self._epsilon_after(update))  # fmt: skip

    # ------------------------------------------------------------------ submission
    def submit_gradients(self, gradients: ModelUpdate | Any, round: int, *, wait: bool = True) -> Receipt:
        """Record the release in the hospital's ledger, then submit the update for ``round``.

        Parameters
        ----------
        gradients : ModelUpdate
            ``LocalModel.gradients``, or its noised copy from
            :meth:`DifferentialPrivacy.add_noise_to_gradients` (``release`` policy). Under
            an ``organization`` policy, ``LocalModel.gradients`` as they are: the SDK clips
            them to the published ``clip-norm`` and, under distributed noise, adds this
            hospital's noise share (:meth:`_organization_release`), recording the release
            before anything is sent.
        round : int
            The open round.
        wait : bool
            Wait (with progress) until the round aggregates (a secure-sum round always waits:
            this organization takes part in every stage until the sum is unmasked).

        Returns
        -------
        Receipt
            The coordinator's receipt; with ``wait``, the round's new model version.

        Raises
        ------
        ValidationFailed
            A named check failed locally (``.check``); nothing was sent or recorded.
        PrivacyBudgetExhausted
            The release would exceed the hospital's own cap; nothing was sent or recorded.
        PrivacyError
            The hospital's policy requires a noised update and this one is not (``release``),
            or an un-noised one and this one is noised (``organization``).
        PrivacyPolicyRefused
            The federation's privacy is weaker than the hospital's policy (e.g. central noise
            for a hospital that requires distributed noise); nothing was sent.
        AuthenticationFailed, RoundClosed, StaleModelVersion, SubmissionRejected
            The coordinator refused it.
        RoundNotAggregated
            The round closed without a new model.
        RoundFailed
            A secure-sum round failed (too few organizations left to unmask).
        CoordinatorUnavailable
            The coordinator cannot be reached.
        """
        update = as_update(gradients)
        round = int(round)
        resumed = self.resume()
        if resumed is not None and resumed.round == round:  # uploaded before a restart: never a second vector
            return resumed
        status = self.round_status()
        published = self.settings.aggregation_method
        if status.aggregation_method is not None and status.aggregation_method != published:
            # e.g. 'fedavg' in the status of a federation published as secure_sum: the update would
            # go sealed to the coordinator's own key instead of masked
            raise ConfigError("aggregation_config.aggregation_method",
                              f"the round status says {status.aggregation_method!r} but the coordinator's "
                              f"configuration says {published!r}; nothing was sent")  # fmt: skip
        secure = published == "secure_sum"
        if secure and not wait:  # before anything is recorded
            raise ConfigError("wait", "a secure-sum round needs this organization until it is unmasked: use wait=True")
        if secure and status.status == "open" and status.round is not None and status.round != round:
            raise RoundClosed(f"round {round} is not open (open round: {status.round})", status=409,
                              problem="round_not_open", field="round")  # fmt: skip
        policy = self.policy
        if policy.unit == "organization" and update.release is not None:
            raise PrivacyError(
                "this hospital's policy is organization-level DP: submit the training update (LocalModel.gradients); "
                "the SDK clips it and adds the federation's noise share, or the coordinator adds central noise"
            )
        if policy.unit == "release" and update.release is None:
            raise PrivacyError(
                f"this hospital's policy is {policy.unit}-level DP: add noise first "
                "(DifferentialPrivacy(...).add_noise_to_gradients(model.gradients, sensitivity=...))"
            )
        if policy.unit == "sample" and update.training_privacy is None and update.release is None:
            raise PrivacyError("this hospital's policy is sample-level DP: submit the gradients of train_local (DP-SGD)")
        version = self._base_version(update)
        checks = None
        if policy.unit == "organization":  # its declaration is made below, from the published instruction
            checks = [c for c in self.config.validation.checks if c != "privacy_check"]
        self.validate_submission(update, checks).raise_for_failure()
        if update.release is not None:
            event = update.release.event()
            with self.state.privacy(organization=self.organization_id, policy=policy) as state:
                if not self._recorded(state, update):  # the same noisy bytes again are not a new release
                    if state.ledger.would_exceed([event]):
                        raise PrivacyBudgetExhausted(
                            f"this release would raise this hospital's epsilon from {state.epsilon():.4f} to "
                            f"{state.ledger.epsilon_if([event]):.4f}, above its cap {policy.epsilon:g}; nothing was sent"
                        )
                    state.record_release([event], round_number=round, label=_RELEASE_LABEL + update.release.release_id)
        share: NoiseShare | None = None
        if policy.unit == "organization":  # clipped (and noised with this hospital's share) and recorded here
            update, declared, share = self._organization_release(update, round)
        else:
            declared = update.declared()
        privacy = None if declared is None else {k: v for k, v in asdict(declared).items() if v is not None}
        if secure:
            return self._submit_secure(update, version, privacy=privacy, noise_share=share)
        base = self.download_model(version)
        receipt = submit_fedavg(self._client, self.state, update, organization_id=self.organization_id, round=round,
                                model_version=version, base=base.arrays(), sample_count=self._sample_count(update),
                                privacy=privacy)  # fmt: skip
        if self._progress is not None:
            self._progress(f"round {round}: submission accepted ({receipt})")
        if not wait:
            return Receipt(receipt=receipt, round=round, organization_id=self.organization_id, status="submitted")
        final = wait_for_round(self._client, round, timeout=self._timeout(), progress=self._progress)
        latest = self.download_model()
        produced = latest.model_version if latest.training_round == round else None
        return Receipt(receipt=receipt, round=round, organization_id=self.organization_id, status=final.status,
                       model_version=produced, organizations_contributed=final.contributors)  # fmt: skip

    def _organization_release(self, update: ModelUpdate, round: int) -> tuple[ModelUpdate, DeclaredPrivacy, NoiseShare | None]:
        """Organization-level DP, as the Flower client does (the core's
        :func:`~oneliac_flwr.privacy.update_release.privatize_update`): clip the update to the
        published ``clip-norm``; under distributed noise add this hospital's Gaussian share
        (std from ``noise-multiplier``, ``clip-norm`` and ``min-contributors``, on the ring's
        ``frac-bits`` grid); record the release in the hospital's own ledger before it leaves.

        Returns
        -------
        (ModelUpdate, DeclaredPrivacy, NoiseShare or None)
            The update to mask, its declaration, and under distributed noise what its share
            was made for (a round must carry it as accounted); ``None`` under central noise,
            where the ring's L2 clip still applies.

        Raises
        ------
        PrivacyError
            If the coordinator publishes no organization-level instruction.
        PrivacyPolicyRefused
            Central noise for a hospital that requires distributed noise, or a noise share
            outside a secure sum (it would travel alone); nothing was sent or recorded.
        PrivacyBudgetExhausted
            If the release would exceed the hospital's own cap; nothing was sent or recorded.
        """
        instruction = self.settings.privacy_policy
        if instruction is None or instruction.get("mode") != "organization":
            raise PrivacyError("privacy_policy: the coordinator publishes no organization-level instruction; nothing was sent")
        distributed = "frac-bits" in instruction  # what this hospital does follows the published instruction
        if self.policy.require_distributed_noise and not distributed:
            raise PrivacyPolicyRefused("privacy_policy: the coordinator's instruction is central noise; this hospital's "
                                       "policy requires distributed noise; nothing was sent")  # fmt: skip
        if distributed and self.config.aggregation_config.aggregation_method != "secure_sum":
            raise PrivacyPolicyRefused("privacy_policy: a distributed noise share outside secure_sum would travel alone "
                                       "(sized for a sum of several); nothing was sent")  # fmt: skip
        threshold = int(instruction["min-contributors"]) if distributed else None
        with self.state.privacy(organization=self.organization_id, policy=self.policy) as state:
            release = privatize_update(update.arrays(), instruction, state=state, server_round=round, threshold=threshold)
        if isinstance(release, str):
            raise PrivacyBudgetExhausted(f"{release}; nothing was sent")
        from oneliac_flwr.api.participant import NoiseShare  # the REST driver (no FastAPI import at SDK import)

        share = None if threshold is None else NoiseShare(min_contributors=threshold, frac_bits=int(instruction["frac-bits"]))
        return update.replaced(release.update, release=None), release.declared, share

    def _submit_secure(self, update: ModelUpdate, version: str, *, privacy: dict[str, Any] | None,
                       noise_share: NoiseShare | None = None) -> Receipt:  # fmt: skip
        """A secure-sum round: the whole protocol, then the round's new model version.

        ``noise_share``: the update carries a distributed noise share made for it; a round
        setup that would not carry it as accounted is refused before masking, and the ring's
        L2 clip does not apply (its bound is per coordinate for a share).

        Under differential privacy (a release, or a DP policy) the weight is 1 and no
        statistics are added: nothing data-dependent travels beside the released update.
        """
        private = update.release is not None or update.training_privacy is not None or self.policy.unit != "none"
        statistics = None if private else self._statistics.get(update.digest())
        outcome = submit_secure_sum(self._client, self.state, update, organization_id=self.organization_id,
                                    model_version=version, weight=self._sample_count(update), statistics=statistics,
                                    privacy=privacy, timeout=self._timeout(), progress=self._progress,
                                    noise_share=noise_share, mode=self.config.secure_sum.mode)  # fmt: skip
        return self._secure_receipt(outcome.receipt, outcome)

    def _secure_receipt(self, receipt: str | None, outcome: SecureRoundReceipt) -> Receipt:
        latest = self.download_model()
        produced = latest.model_version if latest.training_round == outcome.round else None
        return Receipt(receipt=receipt or f"round-{outcome.round}", round=outcome.round,
                       organization_id=self.organization_id, status=outcome.status, model_version=produced,
                       organizations_contributed=outcome.contributors)  # fmt: skip

    def resume(self) -> Receipt | None:
        """Finish the secure-sum round this hospital's process was taking part in when it stopped.

        After its masked upload a hospital must still answer the round's unmask request.
        The upload is kept in ``state_dir`` (``secure-round.json``, 0600) until the round
        closes, with the secure-sum client saved after each step; a process restarted with
        the same ``state_dir`` calls this (:meth:`submit_gradients` and :meth:`run` do it
        first): the same masked upload is sent again (the coordinator answers its first
        receipt), the unmask request is answered, and the round's receipt returned.

        Returns
        -------
        Receipt or None
            The resumed round's receipt once it aggregated; ``None`` when no round is pending.

        Raises
        ------
        RoundNotAggregated
            If the round closed without a new model while the hospital was away.
        RoundFailed, CoordinatorError
            As :meth:`submit_gradients`.
        """
        resumed = resume_secure_round(self._client, self.state, organization_id=self.organization_id,
                                      timeout=self._timeout(), progress=self._progress,
                                      mode=self.config.secure_sum.mode)  # fmt: skip
        if resumed is None:
            return None
        receipt, outcome = resumed
        return self._secure_receipt(receipt, outcome)

    # ------------------------------------------------------------------ privacy
    def get_current_epsilon(self) -> float:
        """This hospital's cumulative epsilon, from its persisted ledger (or DP-SGD history)."""
        with self.state.privacy(organization=self.organization_id, policy=self.policy) as state:
            return float(state.epsilon())

    def get_privacy_report(self, round: int) -> PrivacyReport:
        """The coordinator's privacy report up to ``round`` (``total_epsilon``, ``participants``, ...).

        Raises
        ------
        FeatureUnavailable
            While the coordinator publishes no privacy report.
        """
        return fetch_privacy_report(self._client, round)

    # ------------------------------------------------------------------ data
    def analyze_local_data(self, data: LocalData | None = None) -> DataStatistics:
        """Label distribution, counts, missing values and feature ranges; local only, nothing is sent.

        Parameters
        ----------
        data : DataFrame, CSV path or (X, y), optional
            Default: the data of the last :meth:`train_local`.
        """
        data = self._data if data is None else data
        if data is None:
            raise ConfigError("data", "pass the hospital's data (a DataFrame, a CSV path or an (X, y) pair)")
        features, labels, names = raw_columns(data, self.config.dataset)
        summary = analyze_local_data(features, labels, feature_names=names)
        return DataStatistics.from_summary(summary, label_column=columns(self.config.dataset)[0])

    # ------------------------------------------------------------------ loop
    def run(
        self,
        data: LocalData,
        rounds: int,
        *,
        epochs: int | None = None,
        batch_size: int | None = None,
        dp: DifferentialPrivacy | None = None,
        sensitivity: float = 1.0,
    ) -> list[Receipt]:
        """Take part in ``rounds`` rounds: wait for a round, train, (noise,) submit, download.

        Parameters
        ----------
        data : DataFrame, CSV path or (X, y)
            The hospital's rows.
        rounds : int
            Rounds to take part in; a secure-sum round resumed after a restart
            (:meth:`resume`) is the first of them.
        epochs, batch_size : int, optional
            Local training settings (default: the federation's).
        dp : DifferentialPrivacy, optional
            Noise each update with this release before sending.
        sensitivity : float
            Clip bound of each release.

        Returns
        -------
        list of Receipt
            One per round, in order.
        """
        if int(rounds) < 1:
            raise ConfigError("rounds", f"must be >= 1, got {rounds}")
        receipts: list[Receipt] = []
        last: int | None = None
        resumed = self.resume()  # a round this hospital uploaded to before a restart counts as one of them
        if resumed is not None:
            receipts.append(resumed)
            last = resumed.round
        for _ in range(int(rounds) - len(receipts)):
            status = wait_for_open_round(self._client, after_round=last, timeout=self._timeout(), progress=self._progress)
            local = self.train_local(data, epochs, batch_size)
            update = local.gradients if dp is None else dp.add_noise_to_gradients(local.gradients, sensitivity)
            number = int(status.round or 0)  # next_action "submit" always names a round
            receipts.append(self.submit_gradients(update, number))
            last = number
        return receipts
