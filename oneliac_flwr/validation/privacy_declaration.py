"""``privacy_check``: the declared DP parameters and sample count match the policy."""

from __future__ import annotations

import math

from oneliac_flwr.validation._values import as_count, as_real, json_float, type_name
from oneliac_flwr.validation.policy import ValidationPolicy
from oneliac_flwr.validation.registry import register_check
from oneliac_flwr.validation.result import CheckResult, Details
from oneliac_flwr.validation.submission import DeclaredPrivacy, Submission

__all__ = ["privacy_check"]

NAME = "privacy_check"


@register_check(NAME)
def privacy_check(submission: Submission, policy: ValidationPolicy) -> CheckResult:
    """Check the declared privacy parameters and the reported sample count.

    - ``num_examples`` is an integer > 0, and <= ``policy.max_num_examples`` when set;
    - when the policy sets any of ``clip_norm``, ``noise_multiplier``,
      ``mechanism`` or ``epsilon_budget``, a declaration is required, and each of
      those fields must be declared: ``clip_norm`` and ``noise_multiplier`` equal
      the policy's within ``policy.privacy_rel_tol`` (relative), ``mechanism``
      equal ignoring case and surrounding spaces, ``epsilon_spent`` a number in
      ``[0, epsilon_budget]``.

    Declared fields the policy does not set are not checked. These are the
    client's claims: the coordinator can verify that they match the policy, not
    that the client really clipped or added noise.

    Parameters
    ----------
    submission : Submission
        The submission to check.
    policy : ValidationPolicy
        The expectations.

    Returns
    -------
    CheckResult
        ``details`` holds ``num_examples`` and, per mismatching field, the
        declared and expected values (``declared_<field>``, ``expected_<field>``).
    """
    problems: list[str] = []
    details: Details = {}
    _check_num_examples(submission.num_examples, policy, problems, details)
    if policy.requires_dp:
        declared = submission.declared
        if declared is None:
            problems.append("no privacy declaration; the policy requires one")
        elif not isinstance(declared, DeclaredPrivacy):
            problems.append(f"declared: expected DeclaredPrivacy, got {type_name(declared)}")
        else:
            _check_declaration(declared, policy, problems, details)
    what = "declared privacy parameters match the policy" if policy.requires_dp else "no privacy declaration required"
    return CheckResult.from_problems(
        check=NAME, problems=problems, details=details, ok_reason=f"num_examples plausible; {what}"
    )


def _check_num_examples(value: object, policy: ValidationPolicy, problems: list[str], details: Details) -> None:
    count = as_count(value)
    details["num_examples"] = count if count is not None else repr(value)
    if count is None:
        problems.append(f"num_examples: expected an integer, got {value!r}")
    elif count <= 0:
        problems.append(f"num_examples: expected > 0, got {count}")
    elif policy.max_num_examples is not None and count > policy.max_num_examples:
        details["max_num_examples"] = policy.max_num_examples
        problems.append(f"num_examples: {count} exceeds max_num_examples {policy.max_num_examples}")


def _check_declaration(
    declared: DeclaredPrivacy, policy: ValidationPolicy, problems: list[str], details: Details
) -> None:
    for name, expected in (("clip_norm", policy.clip_norm), ("noise_multiplier", policy.noise_multiplier)):
        if expected is None:
            continue
        raw = getattr(declared, name)
        value = as_real(raw)
        if value is None or not math.isclose(value, expected, rel_tol=policy.privacy_rel_tol, abs_tol=0.0):
            details[f"declared_{name}"] = json_float(value) if value is not None else repr(raw)
            details[f"expected_{name}"] = expected
            shown = raw if value is None else value
            problems.append(f"declared {name} {shown!r} does not match the policy's {expected!r}")
    if policy.mechanism is not None:
        mechanism = declared.mechanism
        if not isinstance(mechanism, str) or mechanism.strip().lower() != policy.mechanism:
            details["declared_mechanism"] = mechanism if isinstance(mechanism, str) else repr(mechanism)
            details["expected_mechanism"] = policy.mechanism
            problems.append(f"declared mechanism {mechanism!r} does not match the policy's {policy.mechanism!r}")
    if policy.epsilon_budget is not None:
        raw = declared.epsilon_spent
        spent = as_real(raw)
        if spent is None or not 0.0 <= spent <= policy.epsilon_budget:  # NaN fails too
            details["declared_epsilon_spent"] = json_float(spent) if spent is not None else repr(raw)
            details["epsilon_budget"] = policy.epsilon_budget
            shown = raw if spent is None else spent
            problems.append(f"declared epsilon_spent {shown!r} is not in [0, epsilon_budget {policy.epsilon_budget:g}]")
