"""Privacy endpoints of the REST coordinator: the policy hospitals follow, the current ε,
and the per-round report, all read from the federation's ledger in the database."""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from oneliac_flwr.api.problems import ApiProblem, problem_response
from oneliac_flwr.api.rounds import BUDGET_EXHAUSTED, RoundEngine
from oneliac_flwr.api.schemas import EpsilonOut, PrivacyDeclarationIn, PrivacyReportOut
from oneliac_flwr.api.store import Database, ModelVersion, Round, Submission
from oneliac_flwr.privacy.integrity import StateIntegrityError
from oneliac_flwr.validation import DeclaredPrivacy

__all__ = ["declared_privacy", "install_privacy_routes", "privacy_refusal"]


def declared_privacy(body: PrivacyDeclarationIn | None) -> DeclaredPrivacy | None:
    """The core's declaration from the request's ``privacy`` object."""
    if body is None:
        return None
    return DeclaredPrivacy(
        clip_norm=body.clip_norm, noise_multiplier=body.noise_multiplier, mechanism=body.mechanism,
        epsilon_spent=body.epsilon_spent,
    )  # fmt: skip


def privacy_refusal(reason: str, session: Session) -> ApiProblem:
    """The 409 answered to a submission once the privacy budget stopped the federation."""
    last = session.scalar(select(ModelVersion.version).order_by(ModelVersion.training_round.desc()).limit(1))
    return ApiProblem(
        409, "privacy_budget_exhausted", "Privacy budget exhausted",
        f"the federation's privacy budget is exhausted, no round accepts updates any more: {reason}. "
        f"The last model ({last}) stays downloadable at GET /model", field="round",
    )  # fmt: skip


def _exhausted_reason(session: Session) -> str | None:
    last = session.scalar(select(Round).order_by(Round.number.desc()).limit(1))
    return last.reason if last is not None and last.status == BUDGET_EXHAUSTED else None


def install_privacy_routes(
    app: FastAPI,
    *,
    prefix: str,
    database: Database,
    engine: RoundEngine,
    caller: Callable[..., str],
    errors: dict[int | str, dict[str, Any]],
) -> None:
    """Add ``GET {prefix}/privacy/policy``, ``/privacy/epsilon`` and ``/privacy/report``."""

    @app.exception_handler(StateIntegrityError)
    async def _ledger_refused(_: Request, exc: StateIntegrityError) -> JSONResponse:
        return problem_response(503, f"the privacy ledger failed its integrity check; the coordinator "
                                     f"refuses to go on: {exc}", slug="privacy_ledger_integrity",
                                title="Privacy ledger refused")  # fmt: skip

    def privacy_on() -> None:
        if engine.privacy is None:
            raise ApiProblem(404, "privacy_off", "Not found", "differential privacy is off (privacy_budget.mode=none)")

    @app.get(f"{prefix}/privacy/policy", responses=errors)
    def privacy_policy(_: Annotated[str, Depends(caller)]) -> dict[str, int | float | str | bool]:
        """What a hospital needs to privatize its update: mode, clip norm, mechanism, noise
        multiplier, delta and (``release``) the per-release epsilon to give
        ``DifferentialPrivacy``; its ``privacy`` declaration must match."""
        privacy_on()
        return engine.privacy.client_settings()  # type: ignore[union-attr]

    @app.get(f"{prefix}/privacy/epsilon", response_model=EpsilonOut, responses=errors)
    def current_epsilon(_: Annotated[str, Depends(caller)]) -> EpsilonOut:
        """The federation's epsilon spent so far (PLD accountant) against its budget."""
        with database.transaction() as session:
            reason = _exhausted_reason(session)
            if engine.privacy is None:
                return EpsilonOut(mode="none", epsilon_spent=None, epsilon_budget=None, epsilon_remaining=None,
                                  delta=None, mechanism=None, accountant=None, budget_exhausted=False, reason=None,
                                  rounds_recorded=0)  # fmt: skip
            report = engine.privacy.guard(session).ledger.report()
        return EpsilonOut(
            mode=engine.privacy.mode, epsilon_spent=report["epsilon_spent"], epsilon_budget=report["epsilon_budget"],
            epsilon_remaining=report["epsilon_remaining"], delta=report["delta"],
            mechanism=engine.privacy.expected.mechanism, accountant=report["accountant"],
            budget_exhausted=reason is not None or bool(report["budget_exhausted"]), reason=reason,
            rounds_recorded=len(report["rounds"]),
        )  # fmt: skip

    @app.get(f"{prefix}/privacy/report", response_model=list[PrivacyReportOut], responses=errors)
    def privacy_report(
        _: Annotated[str, Depends(caller)], round: Annotated[int | None, Query(ge=1, le=10**6)] = None
    ) -> list[PrivacyReportOut]:
        """Per round: its own epsilon, the cumulative epsilon, delta, mechanism and
        participants (every round that released, or only ``round``)."""
        privacy_on()
        with database.transaction() as session:
            ledger = engine.privacy.guard(session).ledger  # type: ignore[union-attr]
            rows = [r for r in ledger.report()["rounds"] if round is None or r["round"] == round]
            if round is not None and not rows:
                raise ApiProblem(404, "no_release", "Not found", f"round {round} released nothing (no ledger entry)",
                                 field="round")  # fmt: skip
            accepted = dict(session.execute(select(Submission.round, func.count()).group_by(Submission.round)).all())
        # fedavg release mode: the accepted updates (each one a release); secure sum: the organizations
        # counted in the unmasked sum (what the ledger recorded on reveal)
        release = engine.privacy.mode == "release" and engine.secure is None  # type: ignore[union-attr]
        central = engine.privacy.noises_centrally  # type: ignore[union-attr]
        recorded = "on receipt" if release else "when noised" if central or engine.secure is None else "when unmasked"
        return [
            PrivacyReportOut(
                round=r["round"], epsilon_round=r["epsilon_round"], epsilon_cumulative=r["epsilon_cumulative"],
                epsilon_cumulative_cross_check=r["epsilon_cumulative_cross_check"], delta=r["delta"],
                mechanism=r["mechanism"], noise_multiplier=r["noise_multiplier"], clip_norm=r["clip_norm"],
                participants=int(accepted.get(r["round"], 0)) if release else int(r["participants"] or 0),
                mode=engine.privacy.mode,  # type: ignore[union-attr]
                recorded=recorded,
            )  # fmt: skip
            for r in rows
        ]
