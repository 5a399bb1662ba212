"""Differential privacy for oneliac-flwr: mechanisms, accounting, budget.

Pure numpy / dp-accounting; no Flower imports. Sample-level DP-SGD helpers
(torch, Opacus) live in :mod:`oneliac_flwr.privacy.dpsgd`, which is not
imported here.

See ``docs/privacy.md`` for the units of privacy and what is claimed.
"""

from __future__ import annotations

from oneliac_flwr.privacy._validation import PrivacyConfigError
from oneliac_flwr.privacy.accountant import (
    ACCOUNTANTS,
    Accountant,
    GdpAccountant,
    PldAccountant,
    RdpAccountant,
    make_accountant,
)
from oneliac_flwr.privacy.calibration import (
    calibrate_noise_multiplier,
    rounds_affordable,
    rounds_epsilon,
)
from oneliac_flwr.privacy.clipping import clip_l2, l2_norm
from oneliac_flwr.privacy.distributed import (
    central_secure_sum_release,
    client_noise_std,
    distributed_noise_share,
    distributed_release,
    effective_sensitivity,
    quantize,
    quantized_sensitivity,
    share_bound,
    share_bound_failure_probability,
    share_failure_release,
)
from oneliac_flwr.privacy.events import (
    DpSgdSteps,
    ExactRelease,
    GaussianRelease,
    LaplaceRelease,
    PoissonSampling,
    PrivacyEvent,
    event_from_dict,
)
from oneliac_flwr.privacy.gdp import (
    gaussian_delta,
    gaussian_full_participation_epsilon,
    gdp_epsilon,
    gdp_mu,
)
from oneliac_flwr.privacy.ledger import (
    LedgerEntry,
    LedgerIntegrityError,
    PrivacyLedger,
    load_or_create_ledger_key,
)
from oneliac_flwr.privacy.plan import BudgetPlan, budget_plan
from oneliac_flwr.privacy.mechanisms import (
    DEFAULT_DELTA,
    MECHANISMS,
    DifferentialPrivacy,
    calibrate_analytic_gaussian,
    laplace_scale,
)

__all__ = [
    "ACCOUNTANTS",
    "DEFAULT_DELTA",
    "MECHANISMS",
    "Accountant",
    "BudgetPlan",
    "DifferentialPrivacy",
    "DpSgdSteps",
    "ExactRelease",
    "GaussianRelease",
    "GdpAccountant",
    "LaplaceRelease",
    "LedgerEntry",
    "LedgerIntegrityError",
    "PldAccountant",
    "PoissonSampling",
    "PrivacyConfigError",
    "PrivacyEvent",
    "PrivacyLedger",
    "RdpAccountant",
    "budget_plan",
    "calibrate_analytic_gaussian",
    "central_secure_sum_release",
    "calibrate_noise_multiplier",
    "client_noise_std",
    "clip_l2",
    "distributed_noise_share",
    "distributed_release",
    "effective_sensitivity",
    "event_from_dict",
    "gaussian_delta",
    "gaussian_full_participation_epsilon",
    "gdp_epsilon",
    "gdp_mu",
    "l2_norm",
    "laplace_scale",
    "load_or_create_ledger_key",
    "make_accountant",
    "quantize",
    "quantized_sensitivity",
    "rounds_affordable",
    "rounds_epsilon",
    "share_bound",
    "share_bound_failure_probability",
    "share_failure_release",
]
