"""What a client submits in a round: the update and what it declares about it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DeclaredPrivacy", "Submission"]


@dataclass(frozen=True, kw_only=True)
class DeclaredPrivacy:
    """The differential-privacy parameters a client declares for its update.

    Every field is optional: ``None`` means "not declared". Nothing is checked at
    construction; :func:`~oneliac_flwr.validation.privacy_check` compares the
    declaration with the policy.

    Parameters
    ----------
    clip_norm : float or None
        Clipping norm the client applied.
    noise_multiplier : float or None
        Noise multiplier (noise standard deviation divided by the clipping norm).
    mechanism : str or None
        Noise mechanism, e.g. ``"gaussian"`` or ``"laplace"``.
    epsilon_spent : float or None
        Privacy budget ε the client has spent so far, this round included.
    """

    clip_norm: float | None = None
    noise_multiplier: float | None = None
    mechanism: str | None = None
    epsilon_spent: float | None = None


@dataclass(frozen=True, kw_only=True)
class Submission:
    """One client's update for one round, as received (untrusted).

    Construction never validates: a malformed submission must reach the checks,
    which report it as a failed check instead of raising.

    Parameters
    ----------
    arrays : list of numpy.ndarray
        The update (model delta or full weights). Checks operate on exactly these
        arrays; which of the two is sent is the caller's choice.
    num_examples : int
        Number of local training examples the client reports.
    declared : DeclaredPrivacy or None
        The client's privacy declaration, ``None`` if it made none.
    round : int or None
        Server round the update answers.
    model_version : str or None
        Version of the global model the update was computed from.
    """

    arrays: list[np.ndarray]
    num_examples: int
    declared: DeclaredPrivacy | None = None
    round: int | None = None
    model_version: str | None = None
