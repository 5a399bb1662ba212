"""Named checks: register a check under a name, look it up by name."""

from __future__ import annotations

from collections.abc import Callable

from oneliac_flwr.errors import ConfigError
from oneliac_flwr.validation.policy import ValidationPolicy
from oneliac_flwr.validation.result import CheckResult
from oneliac_flwr.validation.submission import Submission

__all__ = ["Check", "available_checks", "get_check", "register_check"]

Check = Callable[[Submission, ValidationPolicy], CheckResult]
"""A check: ``(submission, policy) -> CheckResult``; reports bad data, never raises on it."""

_CHECKS: dict[str, Check] = {}


def register_check(name: str, *, replace: bool = False) -> Callable[[Check], Check]:
    """Return a decorator that registers a check under ``name``.

    Parameters
    ----------
    name : str
        Name the check is looked up by (e.g. in ``validate_submission(checks=...)``).
    replace : bool, default False
        Allow replacing a different check already registered under ``name``.

    Returns
    -------
    callable
        The decorator; it returns the check unchanged.

    Raises
    ------
    ConfigError
        If ``name`` is empty, the decorated object is not callable, or ``name`` is
        taken by another check and ``replace`` is false.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("check", f"expected a non-empty check name, got {name!r}")

    def decorator(check: Check) -> Check:
        if not callable(check):
            raise ConfigError(f"check.{name}", f"expected a callable (submission, policy) -> result, got {check!r}")
        existing = _CHECKS.get(name)
        if existing is not None and existing is not check and not replace:
            raise ConfigError(f"check.{name}", "already registered; pass replace=True to replace it")
        _CHECKS[name] = check
        return check

    return decorator


def get_check(name: str) -> Check:
    """Return the check registered under ``name``.

    Raises
    ------
    ConfigError
        If no check has that name; the message lists the available ones.
    """
    check = _CHECKS.get(name)
    if check is None:
        raise ConfigError("check", f"unknown check {name!r}; available checks: {', '.join(available_checks())}")
    return check


def available_checks() -> tuple[str, ...]:
    """Return the names of all registered checks, sorted."""
    return tuple(sorted(_CHECKS))
