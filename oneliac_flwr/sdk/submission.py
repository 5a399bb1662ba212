"""Sending an update for a round and waiting for the round to aggregate.

``fedavg`` rounds: the hospital's local model (base weights + update) is sealed to the
coordinator's published X25519 key (:func:`oneliac_flwr.secure.sealed.seal`, bound to
organization, round and base version) and posted once; the exact body is kept in the
state directory before it is sent, so a retry, even after a crash, resends the same bytes
and the coordinator answers the same receipt (submissions are idempotent per
organization and round).

``secure_sum`` rounds go through :func:`submit_secure_sum`: the REST secure-sum driver
(:mod:`oneliac_flwr.api.participant`) with the hospital's own secure-sum client.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors.numpy import save as safetensors_save

from oneliac_flwr.errors import CoordinatorError, ProtocolViolation, RoundClosed, RoundFailed, RoundNotAggregated
from oneliac_flwr.masked_statistics import MaskedStatistics
from oneliac_flwr.sdk.state import StateDirectory
from oneliac_flwr.sdk.transport import CoordinatorClient
from oneliac_flwr.sdk.update import ModelUpdate
from oneliac_flwr.secure.client import Mode
from oneliac_flwr.secure.sealed import seal, sealing_context

if TYPE_CHECKING:
    from oneliac_flwr.api.participant import NoiseShare, SecureRoundReceipt

__all__ = ["Progress", "Receipt", "RoundStatus", "resume_secure_round", "submit_fedavg", "submit_secure_sum", "wait_for_round"]

Progress = Callable[[str], None]
LONG_POLL_SECONDS = 25.0


@dataclass(frozen=True)
class RoundStatus:
    """``GET /rounds/current`` for this organization."""

    round: int | None
    status: str
    model_version: str | None
    next_action: str
    roster_size: int | None
    in_roster: bool | None
    deadline: str | None
    reason: str | None
    contributors: int | None
    stage: str | None = None
    aggregation_method: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RoundStatus:
        """From the coordinator's JSON answer."""
        return cls(**{name: data.get(name) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Receipt:
    """An accepted submission and the round it went into.

    Attributes
    ----------
    receipt : str
        The coordinator's receipt (the same for a replayed body).
    round : int
        The round.
    organization_id : str
        This organization.
    status : str
        The round's outcome: ``ok`` (aggregated) or ``submitted`` (not waited for).
    model_version : str or None
        The model version the round produced.
    organizations_contributed : int or None
        Contributors to that version.
    """

    receipt: str
    round: int
    organization_id: str
    status: str
    model_version: str | None = None
    organizations_contributed: int | None = None


def sealed_body(
    update: ModelUpdate,
    *,
    organization_id: str,
    round: int,
    model_version: str,
    base: Mapping[str, np.ndarray],
    coordinator_key: bytes,
    sample_count: int,
    privacy: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``POST /gradients`` body of a fedavg round: ``base + update``, sealed."""
    names = sorted(base)
    local = {n: np.ascontiguousarray((base[n] + update[n]).astype(base[n].dtype)) for n in names} if sorted(update) == names \
        else {n: np.ascontiguousarray(update[n]) for n in update}  # fmt: skip  (the coordinator names the mismatch)
    context = sealing_context(organization_id=organization_id, round=round, model_version=model_version)
    sealed = seal(safetensors_save(local), coordinator_key, context=context)
    body = {"organization_id": organization_id, "round": int(round), "gradients_encrypted": "0x" + sealed.hex(),
            "model_version": model_version, "sample_count": int(sample_count)}  # fmt: skip
    if privacy is not None:
        body["privacy"] = dict(privacy)
    return body


def submit_fedavg(
    client: CoordinatorClient,
    state: StateDirectory,
    update: ModelUpdate,
    *,
    organization_id: str,
    round: int,
    model_version: str,
    base: Mapping[str, np.ndarray],
    sample_count: int,
    privacy: Mapping[str, Any] | None = None,
) -> str:
    """Seal and post the update (the same bytes on every retry), with its privacy
    declaration under DP; the receipt.

    Raises
    ------
    CoordinatorError
        The coordinator's typed refusal (stale version, closed round, a failed check, ...).
    ProtocolViolation
        If the coordinator's sealing key differs from the one pinned on first use.
    """
    digest = f"{update.digest()}|{model_version}|{sample_count}"
    body = state.submission(round, digest)
    if body is None:
        published = client.get_json("/coordinator-key")
        key = bytes.fromhex(str(published["public_key"])[2:])
        state.pin_coordinator_key(client.base_url, key)
        body = sealed_body(update, organization_id=organization_id, round=round, model_version=model_version,
                           base=base, coordinator_key=key, sample_count=sample_count, privacy=privacy)  # fmt: skip
        state.save_submission(round, digest, body)
    return str(client.post_json("/gradients", body)["receipt"])


def submit_secure_sum(
    client: CoordinatorClient,
    state: StateDirectory,
    update: ModelUpdate,
    *,
    organization_id: str,
    model_version: str,
    weight: float,
    statistics: MaskedStatistics | None,
    privacy: Mapping[str, Any] | None,
    timeout: float,
    progress: Progress | None,
    noise_share: NoiseShare | None = None,
    mode: Mode = "semi-honest",
) -> SecureRoundReceipt:
    """One secure-sum round over REST for this organization (keys, masked upload, the
    consistency check in malicious mode, unmasking).

    The REST driver :func:`oneliac_flwr.api.participant.take_part_in_secure_round` runs
    the stages with this hospital's :class:`~oneliac_flwr.secure.SecureSumClient`, built
    from the state directory's identity and saved there (0600) after every step, so its
    mask keys carry over to the next round.

    Parameters
    ----------
    client : CoordinatorClient
        The authenticated coordinator client.
    state : StateDirectory
        The hospital's state directory (identity, secure-sum state).
    update : ModelUpdate
        The update (noised under DP); its arrays go in the model's sorted tensor order.
    organization_id, model_version : str
        This organization; the round's base model.
    weight : float
        The update's weight: 1 under differential privacy, else the training rows.
    statistics : MaskedStatistics or None
        Masked statistics (only without DP, when the coordinator expects them).
    privacy : mapping or None
        The release's declaration (``privacy`` field), under DP.
    timeout : float
        Seconds after which the round is given up.
    progress : callable or None
        Receives one line per step.
    noise_share : NoiseShare or None
        For an update carrying a distributed noise share: what the share was made for (not
        clipped again; a round setup that would not carry it as accounted is refused before
        anything is masked).
    mode : {"semi-honest", "malicious"}
        The federation's published ``secure_sum.mode`` (the client's mode,
        :meth:`StateDirectory.secure_client`).

    Returns
    -------
    SecureRoundReceipt
        The round's outcome once it closed ``ok``.

    Raises
    ------
    CoordinatorError
        The typed refusal (authentication, stale version, closed stage, failed check) or
        the round's failure (:class:`~oneliac_flwr.errors.RoundFailed`).
    """
    from oneliac_flwr.api.participant import secure_node, take_part_in_secure_round

    node = secure_node(client.http)
    secure_client = state.secure_client(organization=organization_id, node_id=node.node_id, run_id=node.run_id,
                                        mode=mode)  # fmt: skip
    arrays = [np.asarray(update[name]) for name in sorted(update)]

    def keep(body: Mapping[str, Any]) -> None:  # before the masked upload leaves: a restart resends these bytes
        state.save_pending_round(organization=organization_id, run_id=node.run_id, node_id=node.node_id, upload=body)

    return _until_closed(state, lambda: take_part_in_secure_round(
        client.http, organization_id=organization_id, secure_client=secure_client, update=arrays, weight=float(weight),
        model_version=model_version, statistics=statistics, privacy=privacy, wait_seconds=min(LONG_POLL_SECONDS, 10.0),
        give_up_after=timeout, progress=progress, on_step=state.save_secure_client, on_upload=keep,
        noise_share=noise_share,
    ))  # fmt: skip


def _until_closed(state: StateDirectory, take_part: Callable[[], SecureRoundReceipt]) -> SecureRoundReceipt:
    """Run ``take_part`` and forget the pending round once it closed (aggregated, failed, or
    its stage closed); it is kept on any other failure (the coordinator unreachable, the
    process stopped): the round may still be open, and a restart resumes it."""
    try:
        outcome = take_part()
    except (RoundFailed, RoundClosed, RoundNotAggregated):
        pending = state.pending_round()
        if pending is not None:
            state.clear_pending_round(pending["round"])
        raise
    state.clear_pending_round(outcome.round)
    return outcome


def resume_secure_round(
    client: CoordinatorClient,
    state: StateDirectory,
    *,
    organization_id: str,
    timeout: float,
    progress: Progress | None,
    mode: Mode = "semi-honest",
) -> tuple[str, SecureRoundReceipt] | None:
    """Finish the secure-sum round this hospital uploaded to before its process stopped.

    The masked upload kept in the state directory is sent again, byte for byte (the
    coordinator answers the receipt of the first one; a different vector is never made
    for the round), then the round's remaining requests are answered with the secure-sum
    client saved after the upload (its unmask request above all), until the round closes.

    Parameters
    ----------
    mode : {"semi-honest", "malicious"}
        The federation's published ``secure_sum.mode``.

    Returns
    -------
    (str, SecureRoundReceipt) or None
        The masked upload's receipt and the round's outcome; ``None`` when no round is
        pending.

    Raises
    ------
    RoundNotAggregated
        If the round closed without a new model while the hospital was away.
    RoundFailed, CoordinatorError
        As :func:`submit_secure_sum`.
    """
    from oneliac_flwr.api.participant import SecureRoundReceipt, secure_node, take_part_in_secure_round

    pending = state.pending_round()
    if pending is None:
        return None
    number = int(pending["round"])
    if pending["organization"] != organization_id:
        raise ProtocolViolation(f"round_check: the pending secure-sum round in {state.path} is "
                                f"{pending['organization']}'s, not {organization_id}'s")  # fmt: skip
    node = secure_node(client.http)
    if (node.node_id, node.run_id) != (pending["node_id"], pending["run_id"]):  # another run: the round is gone
        state.clear_pending_round(number)
        return None
    status = current_status(client)
    if status.round != number or status.status != "open":  # it closed while this hospital was away
        state.clear_pending_round(number)
        rounds = {r["round"]: RoundStatus.from_json(r) for r in client.get_json("/rounds")}
        final = rounds.get(number)
        if final is None or final.status != "ok":
            raise RoundNotAggregated(f"round {number} ended {final.status if final else 'unknown'} while this hospital "
                                     f"was away: {final.reason if final else 'not known to the coordinator'}",
                                     problem=f"round_{final.status if final else 'unknown'}")  # fmt: skip
        outcome = SecureRoundReceipt(round=number, model_version=pending["model_version"], stages=(), status="ok",
                                     contributors=final.contributors, dropouts=())  # fmt: skip
        return "", outcome
    if progress is not None:
        progress(f"round {number}: resuming after a restart (masked upload kept in {state.path})")
    try:
        receipt = str(client.post_json("/gradients", pending["upload"])["receipt"])
    except RoundClosed:  # the upload never arrived and its stage closed: this hospital is a dropout of the round
        receipt = ""
    secure_client = state.secure_client(organization=organization_id, node_id=node.node_id, run_id=node.run_id,
                                        mode=mode)  # fmt: skip
    outcome = _until_closed(state, lambda: take_part_in_secure_round(
        client.http, organization_id=organization_id, secure_client=secure_client, update=[], weight=1.0,
        model_version=pending["model_version"], wait_seconds=min(LONG_POLL_SECONDS, 10.0), give_up_after=timeout,
        progress=progress, on_step=state.save_secure_client, round=number,
    ))  # fmt: skip
    return receipt, outcome


def current_status(client: CoordinatorClient, *, wait: float = 0.0, after: RoundStatus | None = None) -> RoundStatus:
    """The current round for this organization (long poll for a change of ``after``)."""
    params: dict[str, Any] = {}
    if wait > 0:
        params["wait_seconds"] = wait
        if after is not None:
            params.update(after_round=after.round if after.round is not None else 0, after_status=after.status)
    return RoundStatus.from_json(client.get_json("/rounds/current", params=params or None, wait=wait))


def wait_for_round(
    client: CoordinatorClient, round: int, *, timeout: float, progress: Progress | None
) -> RoundStatus:
    """Wait (long poll) until ``round`` has closed; its final status.

    Raises
    ------
    RoundNotAggregated
        If the round closed without a new model (the coordinator's reason).
    CoordinatorUnavailable
        If it has not closed after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    status = current_status(client)
    while status.round == round and status.status == "open":
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CoordinatorError(f"round {round} still open after {timeout:.0f} s (deadline {status.deadline})",
                                   problem="wait_timeout")  # fmt: skip
        if progress is not None:
            progress(f"round {round}: submitted; waiting for the other organizations "
                     f"(roster {status.roster_size}, deadline {status.deadline})")  # fmt: skip
        status = current_status(client, wait=min(LONG_POLL_SECONDS, remaining), after=status)
    if status.round != round:  # a later round already opened: look the outcome up
        rounds = [RoundStatus.from_json(r) for r in client.get_json("/rounds")]
        status = next((r for r in rounds if r.round == round), status)
    if status.status != "ok":
        raise RoundNotAggregated(f"round {round} ended {status.status}: {status.reason or 'no reason given'}",
                                 problem=f"round_{status.status}")  # fmt: skip
    if progress is not None:
        progress(f"round {round}: aggregated ({status.contributors} contributor(s))")
    return status


def wait_for_open_round(
    client: CoordinatorClient, *, after_round: int | None, timeout: float, progress: Progress | None
) -> RoundStatus:
    """Wait (long poll) until a round after ``after_round`` asks this organization to act
    (``submit``, or ``advertise_keys``: the first stage of a secure-sum round).

    Raises
    ------
    RoundNotAggregated
        If the federation has finished (``max_rounds`` reached) or is unavailable.
    CoordinatorError
        If no round opens within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    status = current_status(client)
    while not (status.next_action in ("submit", "advertise_keys") and (after_round is None or (status.round or 0) > after_round)):
        if status.next_action in ("finished", "none"):
            raise RoundNotAggregated(f"no further round: {status.status} ({status.reason or 'max_rounds reached'})",
                                     problem=f"federation_{status.next_action}")  # fmt: skip
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CoordinatorError(f"no round opened for this organization within {timeout:.0f} s", problem="wait_timeout")
        if progress is not None:
            progress(f"waiting for a round to open (now: round {status.round}, {status.status})")
        status = current_status(client, wait=min(LONG_POLL_SECONDS, remaining), after=status)
    return status
