"""The coordinator's named checks, run by the hospital on its own update before sending.

The checks and the policy are the coordinator's own (:mod:`oneliac_flwr.validation`
through :mod:`oneliac_flwr.coordinator.checks`), with the federation's validation
bounds, against the round's base model: an update that passes here passes there.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from oneliac_flwr.config import ExperimentConfig
from oneliac_flwr.coordinator.checks import check_update, submission_policy
from oneliac_flwr.errors import ValidationFailed
from oneliac_flwr.validation import CheckResult, DeclaredPrivacy, ValidationReport, get_check
from oneliac_flwr.sdk.update import ModelUpdate

__all__ = ["ValidationResults", "expected_privacy", "run_checks"]


def expected_privacy(config: ExperimentConfig) -> DeclaredPrivacy:
    """The declaration the federation's privacy policy requires (nothing without DP).

    Under ``organization`` and ``release`` policies every update declares the policy's
    clip bound and mechanism (and its noise multiplier when the policy fixes one), and its
    epsilon spent must stay within the policy's epsilon.
    """
    budget = config.privacy_budget
    if budget.mode in ("none", "sample"):
        return DeclaredPrivacy()
    return DeclaredPrivacy(clip_norm=budget.clip_norm, noise_multiplier=budget.noise_multiplier,
                           mechanism=budget.mechanism, epsilon_spent=budget.epsilon)  # fmt: skip


@dataclass(frozen=True)
class ValidationResults(Mapping[str, CheckResult]):
    """One result per named check, with its reason: ``results["nan_check"].reason``.

    Attributes
    ----------
    report : ValidationReport
        The core report, in the order the checks ran.
    """

    report: ValidationReport

    def __getitem__(self, check: str) -> CheckResult:
        for result in self.report.results:
            if result.check == check:
                return result
        raise KeyError(check)

    def __iter__(self) -> Iterator[str]:
        return iter(result.check for result in self.report.results)

    def __len__(self) -> int:
        return len(self.report.results)

    @property
    def passed(self) -> bool:
        """Whether every check passed."""
        return self.report.passed

    @property
    def failed_checks(self) -> list[str]:
        """Names of the checks that failed, in order."""
        return [result.check for result in self.report.failures]

    def raise_for_failure(self) -> None:
        """Raise :class:`~oneliac_flwr.errors.ValidationFailed` naming the first failed check."""
        if not self.passed:
            raise ValidationFailed("; ".join(self.report.reasons()), check=self.failed_checks[0])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report."""
        return self.report.to_dict()

    def __str__(self) -> str:
        return "\n".join(f"{r.check}: {'pass' if r.passed else 'FAIL'} - {r.reason}" for r in self.report.results)


def run_checks(
    update: ModelUpdate,
    *,
    checks: Sequence[str] | None,
    config: ExperimentConfig,
    global_arrays: Mapping[str, np.ndarray],
    sample_count: int,
    epsilon_spent: float | None,
    round: int | None = None,
) -> ValidationResults:
    """Run the named checks on ``update`` as the coordinator would.

    Parameters
    ----------
    update : ModelUpdate
        The update to send.
    checks : sequence of str or None
        Check names (``bounds_check``, ``nan_check``, ``privacy_check``, ...); ``None``:
        the federation's ``validation.checks``.
    config : ExperimentConfig
        ``validation`` bounds and ``privacy_budget`` policy.
    global_arrays : mapping of str to numpy.ndarray
        The base model, by tensor name (shapes and dtypes the update must have).
    sample_count : int
        The sample count that will be declared.
    epsilon_spent : float or None
        The hospital's epsilon after this release (declared under a DP policy).
    round : int, optional
        The round it answers.

    Raises
    ------
    ConfigError
        If a check name is unknown (the message lists the available ones).
    """
    names = sorted(global_arrays)
    reference = [global_arrays[n] for n in names]
    arrays = [update[n] for n in names] if sorted(update) == names else update.arrays()
    chosen = tuple(config.validation.checks if checks is None else checks)
    for name in chosen:  # an unknown name fails here, with the list of known checks
        get_check(name)
    report = check_update(
        arrays,
        num_examples=sample_count,
        policy=submission_policy(config, reference, expected=expected_privacy(config)),
        checks=chosen,
        declared=update.declared(epsilon_spent=epsilon_spent),
        server_round=round,
    )
    return ValidationResults(report)
