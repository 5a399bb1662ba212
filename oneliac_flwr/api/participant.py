"""Hospital side of a secure-sum round over REST: drives every stage with the core client.

The hospital keeps its :class:`~oneliac_flwr.secure.SecureSumClient` (its keys never
leave it); this module only moves the client's messages over HTTP, through the one
record codec (:mod:`oneliac_flwr.api.records`), and turns problem answers into the
:class:`~oneliac_flwr.errors.CoordinatorError` family.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

from oneliac_flwr.api.records import record_from_json, record_to_json
from oneliac_flwr.api.uploads import OCTET_STREAM, encode_upload
from oneliac_flwr.errors import (
    CoordinatorError,
    CoordinatorUnavailable,
    ProtocolViolation,
    RoundClosed,
    RoundFailed,
    StaleModelVersion,
)
from oneliac_flwr.sdk.transport import problem_error
from oneliac_flwr.masked_statistics import MaskedStatistics, pack_statistics
from oneliac_flwr.secure import ConsistencyRequest, RoundSetup, SecureSumClient, UnmaskRequest

__all__ = ["NoiseShare", "SecureRoundReceipt", "SecureNode", "secure_node", "take_part_in_secure_round"]

PREFIX = "/api/v1/federated"
#: next_action -> (stage name in the receipt, endpoint stem, progress text, the core client's answer to the record)
_ANSWERS: dict[str, tuple[str, str, str, Callable[[SecureSumClient, dict[str, Any]], Any]]] = {
    "confirm_survivors": ("consistency", "consistency", "signing the survivor set",
                          lambda client, record: client.confirm_survivors(ConsistencyRequest.from_record(record))),
    "unmask": ("unmask", "unmask", "unmasking", lambda client, record: client.unmask(UnmaskRequest.from_record(record))),
}  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class SecureNode:
    """This organization's secure-sum identity in the federation (what ``SecureSumClient`` needs).

    Parameters
    ----------
    organization_id : str
        ``org_...``.
    node_id, run_id : int
        Stable node id of the organization and run id of the federation.
    """

    organization_id: str
    node_id: int
    run_id: int


@dataclass(frozen=True, kw_only=True)
class NoiseShare:
    """What an update carrying this hospital's distributed noise share was made for.

    The share was sized so that ``min_contributors`` of them give the accounted noise, and
    rounded to the ``2**-frac_bits`` grid its release was accounted on. A round setup that
    would sum fewer shares (threshold ``t`` below ``min_contributors``), encode on another
    grid, or scale the share down (weight bound below 1) would release it under other terms
    than the hospital's ledger records: :meth:`refusal` says why.

    Parameters
    ----------
    min_contributors : int
        The published ``min-contributors`` the share is sized for.
    frac_bits : int
        The published ``frac-bits``.
    """

    min_contributors: int
    frac_bits: int

    def refusal(self, setup: RoundSetup) -> str | None:
        """Why ``setup`` does not carry this share as accounted, or ``None``."""
        if setup.threshold < self.min_contributors:
            return (f"threshold_check: round {setup.round} has threshold t = {setup.threshold}, below the "
                    f"{self.min_contributors} contributors this hospital's noise share is sized for")  # fmt: skip
        if setup.frac_bits != self.frac_bits:
            return (f"threshold_check: round {setup.round} encodes with {setup.frac_bits} fractional bits, not the "
                    f"{self.frac_bits} this hospital's noise share was accounted on")  # fmt: skip
        if setup.weight_bound < 1.0:
            return (f"threshold_check: round {setup.round} caps the weight at {setup.weight_bound:g} < 1, which would "
                    "scale this hospital's noise share down")  # fmt: skip
        return None


@dataclass(frozen=True, kw_only=True)
class SecureRoundReceipt:
    """The outcome of a round this organization took part in.

    Parameters
    ----------
    round : int
        The round.
    model_version : str
        The model the update was computed from.
    stages : tuple of str
        The stages this organization acted in (``keys``, ``masked``, ``consistency``, ``unmask``).
    status : str
        The round's outcome (``ok``).
    contributors : int or None
        Organizations whose updates are in the sum.
    dropouts : tuple of str
        Organizations that dropped out.
    receipt : str or None
        The coordinator's receipt of the masked upload (``None`` if this organization's
        masked upload was not needed in this call, e.g. a resumed round).
    """

    round: int
    model_version: str
    stages: tuple[str, ...]
    status: str
    contributors: int | None
    dropouts: tuple[str, ...]
    receipt: str | None = None


def _raise_for(response: httpx.Response) -> None:
    if response.status_code >= 400:
        raise problem_error(response)


def _call(http: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    try:
        response = http.request(method, PREFIX + path, **kwargs)
    except httpx.HTTPError as exc:
        raise CoordinatorUnavailable(f"{method} {path}: {exc}") from exc
    _raise_for(response)
    return response.json()


def _round_status(answer: Any, number: int) -> dict[str, Any] | None:
    """Round ``number`` as a stage message's answer left it (``round_status``), or ``None``
    when the answer carries no well-formed view of that round (a coordinator that does not
    wait, or a malformed answer): the next status is then asked for."""
    status = answer.get("round_status") if isinstance(answer, dict) else None
    if not isinstance(status, dict) or status.get("round") != number:
        return None
    shaped = (isinstance(status.get("status"), str) and isinstance(status.get("next_action"), str)
              and isinstance(status.get("in_roster"), bool) and isinstance(status.get("record"), (dict, type(None))))  # fmt: skip
    return status if shaped else None


def _waiting(http: httpx.Client, wait_seconds: float) -> httpx.Timeout:
    """The client's timeout with ``wait_seconds`` more to read the answer (a long poll, or a
    stage message that waits for its stage to move)."""
    base = http.timeout
    return httpx.Timeout(connect=base.connect, read=None if base.read is None else base.read + wait_seconds,
                         write=base.write, pool=base.pool)  # fmt: skip


def _published(http: httpx.Client, status: Mapping[str, Any], path: str) -> Any:
    """The record the status answer carries for its next action, else the stage's download."""
    record = status.get("record")
    return record if record is not None else _call(http, "GET", path)["record"]


def secure_node(http: httpx.Client) -> SecureNode:
    """This organization's node id and the run id (to build its ``SecureSumClient``).

    Parameters
    ----------
    http : httpx.Client
        Client with the coordinator's base URL and ``Authorization: Bearer sk_live_...``.
    """
    body = _call(http, "GET", "/secure-sum/node")
    return SecureNode(organization_id=body["organization_id"], node_id=int(body["node_id"]), run_id=int(body["run_id"]))


def masked_vector(update: Sequence[np.ndarray], *, setup: RoundSetup, statistics: MaskedStatistics | None,
                  clip: bool = True) -> np.ndarray:  # fmt: skip
    """The flat vector a hospital masks: the update clipped to the ring's bound (unless it
    carries a distributed noise share, whose ring bound is per coordinate), then the masked
    statistics (:mod:`oneliac_flwr.masked_statistics`), as the Flower client does."""
    flat = np.concatenate([np.asarray(u, np.float64).ravel() for u in update])
    norm = float(np.linalg.norm(flat))
    if clip and norm > setup.clip_bound:
        flat = flat * (setup.clip_bound / norm)
    if statistics is not None:
        flat = np.concatenate([flat, pack_statistics(statistics, bound=setup.clip_bound)])
    return flat


def take_part_in_secure_round(
    http: httpx.Client,
    *,
    organization_id: str,
    secure_client: SecureSumClient,
    update: Sequence[np.ndarray],
    weight: float,
    model_version: str,
    statistics: MaskedStatistics | None = None,
    wait_seconds: float = 10.0,
    give_up_after: float = 3600.0,
    progress: Callable[[str], None] | None = None,
    privacy: Mapping[str, Any] | None = None,
    on_step: Callable[[SecureSumClient], None] | None = None,
    on_upload: Callable[[Mapping[str, Any]], None] | None = None,
    round: int | None = None,
    noise_share: NoiseShare | None = None,
) -> SecureRoundReceipt:
    """Take part in the open secure-sum round: keys, masked upload, the consistency check
    (``secure_sum.mode: malicious``) and unmasking, over HTTP.

    Every protocol decision is the core client's: in particular a client built with
    ``mode="malicious"`` reveals nothing unless it signed this round's survivor set and the
    unmask request carries ``t`` valid signatures of it, whatever the coordinator asks.

    Parameters
    ----------
    http : httpx.Client
        Client with the coordinator's base URL and ``Authorization: Bearer sk_live_...``.
    organization_id : str
        This hospital's ``org_...``.
    secure_client : SecureSumClient
        This hospital's secure-sum client, built with :func:`secure_node`'s node and run
        ids; it keeps its keys across rounds (save it with ``state_dict()``).
    update : sequence of numpy.ndarray
        The model update (local model minus ``model_version``'s weights), clipped here to
        the ring's bound.
    weight : float
        The update's weight (its sample count), capped at the ring's weight bound; it
        travels inside the masked vector.
    model_version : str
        The model the update was computed from; it must be the round's base model.
    statistics : MaskedStatistics, optional
        Training and evaluation statistics appended to the masked vector (without DP).
        Required when the coordinator expects statistics slots (the round setup's length
        is the update's size plus the slots).
    wait_seconds : float
        Long-poll wait of each status request.
    give_up_after : float
        Seconds after which the round is given up (:class:`CoordinatorUnavailable`).
    progress : callable, optional
        Called with a short text at each step.
    privacy : mapping, optional
        The release's declaration sent with the masked upload (``privacy`` field:
        ``clip_norm``, ``noise_multiplier``, ``mechanism``), required by a federation
        under differential privacy (``privacy_check``). Under DP pass ``weight=1`` and no
        ``statistics``: nothing data-dependent may travel outside the released update.
    on_step : callable, optional
        Called with ``secure_client`` after each step that changed its state (keys,
        masking, survivor-set signature, unmasking), to persist it (``state_dict()``) before the next request.
    on_upload : callable, optional
        Called with the masked upload's exact body before it is sent, to keep it: after a
        restart the same bytes are sent again (the coordinator answers the same receipt),
        never a different masked vector for the round.
    round : int, optional
        Resume this round (this organization already took part in it, e.g. before its
        process restarted): answer what the round still asks of it and wait for its end,
        without the model-version check of a new round. ``secure_client`` must be the one
        saved after its masked upload; ``update`` is then not used (the client refuses to
        mask twice in one round).
    noise_share : NoiseShare, optional
        The update carries this hospital's distributed noise share (already clipped to
        ``clip-norm`` before its noise): it is not clipped again to the ring's L2 bound
        (per coordinate for a share, checked by the encoding), and a round setup that would
        not carry it as accounted (:meth:`NoiseShare.refusal`) is refused
        (:class:`~oneliac_flwr.errors.ProtocolViolation`, ``threshold_check``) before
        anything is masked or sent. ``None`` (default): the update is clipped to the ring's
        bound.

    Returns
    -------
    SecureRoundReceipt
        The round's outcome once it closed ``ok``.

    Raises
    ------
    ProtocolViolation
        This hospital's own checks refused the round (``threshold_check``, or the core
        client's checks of a request); nothing was sent for that step.
    AuthenticationFailed
        401/403: unknown key, or not this organization's.
    StaleModelVersion
        The round trains another model than ``model_version``.
    RoundClosed
        A stage closed before this organization's message arrived.
    SubmissionRejected
        The coordinator refused a message (``check`` names the check or field).
    RoundFailed
        The round failed (the reason the coordinator recorded).
    CoordinatorUnavailable
        No answer, a 5xx, or the round did not end within ``give_up_after``.
    """

    def say(text: str) -> None:
        if progress is not None:
            progress(text)

    started = time.monotonic()
    joined: int | None = round
    stages: list[str] = []
    receipt: str | None = None
    after: dict[str, Any] = {}
    answered: dict[str, Any] | None = None  # the round as a stage message's answer left it
    wait = {"wait_seconds": wait_seconds}
    patient = _waiting(http, wait_seconds)
    while time.monotonic() - started < give_up_after:
        params = {**wait, **after} if after else {}
        if answered is not None:  # the stage message waited for its stage to move: no status request
            status, answered = answered, None
        elif joined is None:  # which round is open, and what this organization must do in it
            status = _call(http, "GET", "/rounds/current", params=params, timeout=patient)
        else:  # the joined round itself (long poll on its status and stage), even once the next one opened
            try:
                status = _call(http, "GET", f"/rounds/{joined}", params=params, timeout=patient)
            except CoordinatorError as exc:
                if exc.status != 404:
                    raise
                raise RoundClosed(f"round {joined} is not known to the coordinator") from None
        number = status.get("round")
        after = {k: v for k, v in (("after_round", number if joined is None else None), ("after_status", status["status"]),
                                     ("after_stage", status.get("stage"))) if v is not None}  # fmt: skip
        if joined is not None and status["status"] != "open":
            if status["status"] == "ok":
                say(f"round {number}: done")
                return SecureRoundReceipt(
                    round=number, model_version=model_version, stages=tuple(stages), status=status["status"],
                    contributors=status.get("contributors"), dropouts=tuple(status.get("dropouts") or ()),
                    receipt=receipt,
                )  # fmt: skip
            raise RoundFailed(f"round {number} {status['status']}: {status.get('reason')}")
        if joined is not None and not status.get("in_roster"):
            raise RoundClosed(f"round {joined} does not have {organization_id} on its roster")
        if status["status"] != "open" or not status.get("in_roster"):
            say(f"waiting for a round (status {status['status']})")
            continue
        if joined is None:
            if status.get("model_version") != model_version:
                raise StaleModelVersion(f"round {number} trains model {status.get('model_version')}, not {model_version}",
                                        status=409, problem="stale_model_version", field="model_version")  # fmt: skip
            joined = number
        action = status["next_action"]
        if action == "advertise_keys":
            say(f"round {number}: advertising keys")
            message = secure_client.advertise_keys(round=number)
            if on_step is not None:
                on_step(secure_client)
            answered = _round_status(_call(http, "POST", f"/rounds/{number}/keys", params=wait, timeout=patient, json={
                "organization_id": organization_id, "record": record_to_json(message.to_record())}), number)  # fmt: skip
            stages.append("keys")
        elif action == "submit":
            say(f"round {number}: masked upload")
            setup = RoundSetup.from_record(record_from_json(_published(http, status, f"/rounds/{number}/setup")))
            refusal = None if noise_share is None else noise_share.refusal(setup)
            if refusal is not None:
                raise ProtocolViolation(f"{refusal}; nothing was masked or sent")
            flat = masked_vector(update, setup=setup, statistics=statistics, clip=noise_share is None)
            masked = secure_client.mask(flat, weight=min(float(weight), float(setup.weight_bound)), setup=setup)
            wire = np.ascontiguousarray(masked.masked, dtype=np.dtype(masked.masked.dtype).newbyteorder("<"))
            if on_step is not None:
                on_step(secure_client)
            fields = {
                "organization_id": organization_id, "round": number, "model_version": model_version, "sample_count": 1,
                "secure_sum": record_to_json(masked.to_record()),
            }  # fmt: skip
            if privacy is not None:
                fields["privacy"] = dict(privacy)
            if on_upload is not None:  # kept in the JSON form (resent as JSON after a restart: the same receipt)
                on_upload({"organization_id": organization_id, "round": number,
                           "gradients_encrypted": "0x" + wire.tobytes().hex(), **fields})  # fmt: skip
            accepted = _call(http, "POST", "/gradients", params=wait, timeout=patient, content=encode_upload(fields, wire),
                             headers={"Content-Type": OCTET_STREAM})  # fmt: skip
            kept = accepted.get("receipt") if isinstance(accepted, dict) else None
            receipt, answered = (str(kept) if kept is not None else None), _round_status(accepted, number)
            stages.append("masked")
            say(f"round {number}: masked upload accepted ({receipt})")
        elif action in _ANSWERS:
            stage, path, what, answer = _ANSWERS[action]
            say(f"round {number}: {what}")
            request = record_from_json(_published(http, status, f"/rounds/{number}/{path}-request"))
            response = answer(secure_client, request)  # the core client's checks: it may refuse (ProtocolViolation)
            if on_step is not None:
                on_step(secure_client)
            answered = _round_status(_call(http, "POST", f"/rounds/{number}/{path}-response", params=wait, timeout=patient,
                                           json={"organization_id": organization_id,
                                                 "record": record_to_json(response.to_record())}), number)  # fmt: skip
            stages.append(stage)
        else:
            say(f"round {number}: waiting ({status.get('stage')})")
        # a stage message's answer is the round once that stage moved on (or its wait ran out:
        # then the next status is a long poll on the position that answer showed)
    raise CoordinatorUnavailable(f"round {joined} did not end within {give_up_after} s")
