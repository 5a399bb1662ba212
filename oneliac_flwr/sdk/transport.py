"""The SDK's HTTP boundary: one httpx client, retries, and problem documents as typed errors.

Every request to the coordinator goes through :class:`CoordinatorClient`. Transient
failures (no connection, a timeout, 502/503/504) are retried with exponential backoff;
every request the SDK sends is safe to repeat (reads, and submissions, which the
coordinator makes idempotent per organization and round). A problem answer becomes one of
the typed errors of :mod:`oneliac_flwr.errors` (:func:`problem_error`); no httpx
exception leaves this module.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from oneliac_flwr.errors import (
    AuthenticationFailed,
    CoordinatorBudgetExhausted,
    CoordinatorError,
    CoordinatorUnavailable,
    FeatureUnavailable,
    RoundClosed,
    StaleModelVersion,
    SubmissionRejected,
)

__all__ = ["API_PREFIX", "CoordinatorClient", "problem_error"]

API_PREFIX = "/api/v1/federated"
_PROBLEM_PREFIX = "urn:oneliac:problem:"
_TRANSIENT_STATUS = frozenset({502, 503, 504})


def _problem_of(response: httpx.Response) -> tuple[str, str, str | None]:
    """``(slug, detail, field)`` of a problem answer (or of any non-JSON error answer)."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        text = response.text.strip()[:300] or response.reason_phrase
        return "", f"HTTP {response.status_code}: {text}", None
    kind = str(body.get("type", ""))
    slug = kind[len(_PROBLEM_PREFIX):] if kind.startswith(_PROBLEM_PREFIX) else kind
    detail = str(body.get("detail") or body.get("title") or f"HTTP {response.status_code}")
    field = body.get("field")
    return slug, detail, field if isinstance(field, str) else None


def problem_error(response: httpx.Response) -> CoordinatorError:
    """The typed error a coordinator's problem answer stands for.

    Parameters
    ----------
    response : httpx.Response
        A 4xx or 5xx answer.

    Returns
    -------
    CoordinatorError
        :class:`~oneliac_flwr.errors.AuthenticationFailed` (401, 403),
        :class:`~oneliac_flwr.errors.StaleModelVersion` / :class:`~oneliac_flwr.errors.RoundClosed`
        (409 about the round), :class:`~oneliac_flwr.errors.CoordinatorBudgetExhausted`
        (a problem about the privacy budget), :class:`~oneliac_flwr.errors.SubmissionRejected`
        (422 ``validation_<check>`` or a sealed update that does not open),
        :class:`~oneliac_flwr.errors.FeatureUnavailable` (501),
        :class:`~oneliac_flwr.errors.CoordinatorUnavailable` (5xx), else
        :class:`~oneliac_flwr.errors.CoordinatorError`.
    """
    status = response.status_code
    slug, detail, field = _problem_of(response)
    common: dict[str, Any] = {"status": status, "problem": slug, "field": field}
    if "budget" in slug:
        return CoordinatorBudgetExhausted(detail, **common)
    if slug == "not_in_roster":  # registered after the round opened: the next round takes it
        return RoundClosed(detail, **common)
    if status in (401, 403):
        return AuthenticationFailed(detail, **common)
    if status == 409 and slug == "stale_model_version":
        # "round N trains model 1.0.K, not 1.0.J"
        current = detail.split(" trains model ", 1)[1].split(",", 1)[0] if " trains model " in detail else None
        return StaleModelVersion(detail, current_version=current, **common)
    if status == 409 and slug in ("round_not_open", "conflicting_resubmission"):
        return RoundClosed(detail, **common)
    if status == 422 and slug.startswith("validation_"):
        return SubmissionRejected(detail, check=slug[len("validation_"):], **common)
    if status == 422 and slug == "sealed_update_invalid":
        return SubmissionRejected(detail, check="sealed_update", **common)
    if status in (413, 422):  # a malformed field or an oversized body: the field is the check
        return SubmissionRejected(detail, check=field or slug, **common)
    if status == 501:
        return FeatureUnavailable(detail, **common)
    if status >= 500:
        return CoordinatorUnavailable(detail, **common)
    return CoordinatorError(detail, **common)


class CoordinatorClient:
    """An authenticated httpx client of one coordinator.

    Parameters
    ----------
    base_url : str
        The coordinator's address (``https://...``; ``http://`` only on loopback).
    api_key : str
        The organization's API key (``sk_live_...``), sent as a bearer token.
    timeout : float
        Seconds per request (a long poll adds its wait to it).
    retries : int
        Extra attempts after a transient failure.
    backoff : float
        Seconds before the first retry; doubled for each further one.
    verify : bool or str
        TLS verification: ``True``, or the path of a CA bundle.
    transport : httpx.BaseTransport, optional
        Test hook: a transport to use instead of the network.
    on_retry : callable, optional
        Called with a one-line message before each retry (progress).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        retries: int = 4,
        backoff: float = 0.5,
        verify: bool | str = True,
        transport: httpx.BaseTransport | None = None,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self._on_retry = on_retry
        self._client = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}", "User-Agent": "oneliac-sdk/1"},
            timeout=self.timeout,
            verify=verify,
            trust_env=False,
            transport=transport,
        )

    @property
    def http(self) -> httpx.Client:
        """The underlying authenticated client (base URL: the coordinator's root), for the
        secure-sum driver :mod:`oneliac_flwr.api.participant`, which sends its own requests."""
        return self._client

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> CoordinatorClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        wait: float = 0.0,
    ) -> httpx.Response:
        """Send one request (retrying transient failures); a 2xx answer, or a typed error.

        Parameters
        ----------
        method, path : str
            HTTP method and the path under :data:`API_PREFIX` (e.g. ``"/model"``).
        params, json, headers
            Query parameters, JSON body, extra headers.
        wait : float
            Seconds the coordinator may hold the request (long poll): added to the timeout.

        Raises
        ------
        CoordinatorError
            The typed error of the coordinator's problem answer (:func:`problem_error`),
            or :class:`~oneliac_flwr.errors.CoordinatorUnavailable` when it cannot be
            reached after the retries.
        """
        url = API_PREFIX + path
        delay = self.backoff
        last = ""
        for attempt in range(self.retries + 1):
            try:
                response = self._client.request(
                    method, url, params=params, json=json, headers=headers, timeout=self.timeout + wait
                )
            except httpx.TransportError as exc:  # connect, read, write, timeout, protocol
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    return response
                if response.status_code not in _TRANSIENT_STATUS:
                    raise problem_error(response)
                last = f"HTTP {response.status_code}"
            if attempt < self.retries:
                if self._on_retry is not None:
                    self._on_retry(f"{method} {path}: {last}; retrying in {delay:.1f} s")
                time.sleep(delay)
                delay *= 2.0
        raise CoordinatorUnavailable(
            f"the coordinator at {self.base_url} did not answer {method} {path} after {self.retries + 1} attempts ({last})"
        )

    def get_json(self, path: str, *, params: Mapping[str, Any] | None = None, wait: float = 0.0) -> Any:
        """GET a JSON document."""
        return self._json(self.request("GET", path, params=params, wait=wait))

    def post_json(self, path: str, body: Any) -> Any:
        """POST a JSON body and return the JSON answer."""
        return self._json(self.request("POST", path, json=body))

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise CoordinatorError(
                f"the coordinator answered {response.request.method} {response.request.url.path} with a body "
                "that is not JSON", status=response.status_code
            ) from None
