"""Typed settings of a run.

One :class:`ExperimentConfig` describes a run. It is built either from a nested
mapping (Hydra's composed config, see ``conf/``) with :meth:`ExperimentConfig.from_dict`
or from Flower's flat ``run_config`` (dotted keys such as
``aggregation_config.max_rounds``) with :meth:`ExperimentConfig.from_run_config`, so a
setting means the same thing on both paths.

Validation happens on load: an unknown key, a value of the wrong type or a value out of
range raises :class:`~oneliac_flwr.errors.ConfigError` naming the dotted field and what
was expected.
"""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from oneliac_flwr.errors import ConfigError

__all__ = [
    "BREAST_CANCER_FEATURE_BOUNDS",
    "AggregationConfig",
    "CoordinatorConfig",
    "DatasetConfig",
    "ExperimentConfig",
    "FaultsConfig",
    "FederationConfig",
    "ModelConfig",
    "PrivacyBudgetConfig",
    "SecureSumConfig",
    "StrategyConfig",
    "TrainingConfig",
    "ValidationConfig",
]

StrategyName = Literal["fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi", "fedadagrad"]


def _require(condition: bool, field_path: str, message: str) -> None:
    if not condition:
        raise ConfigError(field_path, message)


# Public schema of scikit-learn's breast-cancer table: the Min and Max columns of the
# "Summary Statistics" in ``sklearn.datasets.load_breast_cancer().DESCR`` (published with
# the dataset, copied verbatim; never computed from rows at run time), in column order.
# The size features (radius, perimeter, area: positive, right-skewed) are log1p-scaled.
BREAST_CANCER_FEATURE_BOUNDS: tuple[str, ...] = (
    "6.981:28.11:log1p",   # mean radius
    "9.71:39.28",          # mean texture
    "43.79:188.5:log1p",   # mean perimeter
    "143.5:2501.0:log1p",  # mean area
    "0.053:0.163",         # mean smoothness
    "0.019:0.345",         # mean compactness
    "0.0:0.427",           # mean concavity
    "0.0:0.201",           # mean concave points
    "0.106:0.304",         # mean symmetry
    "0.05:0.097",          # mean fractal dimension
    "0.112:2.873:log1p",   # radius error
    "0.36:4.885",          # texture error
    "0.757:21.98:log1p",   # perimeter error
    "6.802:542.2:log1p",   # area error
    "0.002:0.031",         # smoothness error
    "0.002:0.135",         # compactness error
    "0.0:0.396",           # concavity error
    "0.0:0.053",           # concave points error
    "0.008:0.079",         # symmetry error
    "0.001:0.03",          # fractal dimension error
    "7.93:36.04:log1p",    # worst radius
    "12.02:49.54",         # worst texture
    "50.41:251.2:log1p",   # worst perimeter
    "185.2:4254.0:log1p",  # worst area
    "0.071:0.223",         # worst smoothness
    "0.027:1.058",         # worst compactness
    "0.0:1.252",           # worst concavity
    "0.0:0.291",           # worst concave points
    "0.156:0.664",         # worst symmetry
    "0.055:0.208",         # worst fractal dimension
)


@dataclass(frozen=True, kw_only=True)
class DatasetConfig:
    """Where each organization's data comes from.

    ``name="breast_cancer"`` uses scikit-learn's Wisconsin diagnosis table (offline).
    ``name="csv"`` reads a hospital's own table from ``csv_path`` (in deployment the
    SuperNode's ``data-path`` node config takes precedence).

    ``feature_bounds`` is the public schema used for scaling: one ``"low:high"`` (or
    ``"low:high:log1p"``) entry per feature column, in order; values are clipped to the
    bounds, optionally ``log1p``-transformed (bounds too), and mapped to ``[-3, 3]``. For
    ``breast_cancer`` it defaults to :data:`BREAST_CANCER_FEATURE_BOUNDS`; for ``csv``
    without bounds, each site standardizes with its own statistics, which is refused
    under differential privacy. ``record_id_column`` names a CSV column keying each
    record (one patient) for the local split; without it a row is keyed by its bytes.
    """

    name: Literal["breast_cancer", "csv"] = "breast_cancer"
    csv_path: str | None = None
    label_column: str | None = None
    feature_columns: tuple[str, ...] | None = None
    site_column: str | None = None
    num_classes: int = 2
    test_fraction: float = 0.2
    local_validation_fraction: float = 0.2
    feature_bounds: tuple[str, ...] | None = None
    record_id_column: str | None = None

    def __post_init__(self) -> None:
        if self.name == "breast_cancer" and self.feature_bounds is None:
            object.__setattr__(self, "feature_bounds", BREAST_CANCER_FEATURE_BOUNDS)

    def bounds(self) -> tuple[tuple[float, float, str], ...] | None:
        """``feature_bounds`` parsed as ``(low, high, transform)``, or ``None`` if not set.

        ``transform`` is ``"none"`` or ``"log1p"``.

        Raises
        ------
        ConfigError
            If an entry is not ``"low:high"`` or ``"low:high:log1p"`` with finite numbers,
            ``low < high`` (and ``low > -1`` for ``log1p``).
        """
        if self.feature_bounds is None:
            return None
        entries = []
        for i, text in enumerate(self.feature_bounds):
            parts = text.split(":")
            try:
                low, high = float(parts[0]), float(parts[1])
            except (ValueError, IndexError):
                low = high = float("nan")
            transform = parts[2] if len(parts) == 3 else "none"
            _require(
                len(parts) in (2, 3)
                and transform in ("none", "log1p")
                and math.isfinite(low)
                and math.isfinite(high)
                and low < high
                and (transform == "none" or low > -1.0),
                f"dataset.feature_bounds[{i}]",
                f"expected 'low:high' or 'low:high:log1p' with finite low < high (low > -1 for log1p), got {text!r}",
            )
            entries.append((low, high, transform))
        return tuple(entries)

    def _check(self, path: str) -> None:
        _require(0.0 < self.test_fraction < 1.0, f"{path}.test_fraction", f"must be in (0, 1), got {self.test_fraction}")
        _require(
            0.0 <= self.local_validation_fraction < 1.0,
            f"{path}.local_validation_fraction",
            f"must be in [0, 1), got {self.local_validation_fraction}",
        )
        _require(self.num_classes >= 2, f"{path}.num_classes", f"must be >= 2, got {self.num_classes}")
        pairs = self.bounds()
        if self.name == "csv":
            _require(self.label_column is not None, f"{path}.label_column", "is required when dataset.name is 'csv'")
            _require(
                bool(self.feature_columns),
                f"{path}.feature_columns",
                "is required when dataset.name is 'csv' (the coordinator builds the model from it)",
            )
            _require(
                pairs is None or len(pairs) == len(self.feature_columns or ()),
                f"{path}.feature_bounds",
                f"expected one 'low:high' pair per feature column ({len(self.feature_columns or ())}), "
                f"got {len(pairs or ())}",
            )


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Which torch model to train: ``logistic`` regression or a small ``mlp``."""

    name: Literal["logistic", "mlp"] = "logistic"
    hidden_sizes: tuple[int, ...] = (32,)

    def _check(self, path: str) -> None:
        _require(
            all(h > 0 for h in self.hidden_sizes),
            f"{path}.hidden_sizes",
            f"every size must be > 0, got {list(self.hidden_sizes)}",
        )


@dataclass(frozen=True, kw_only=True)
class TrainingConfig:
    """Local training inside each organization."""

    local_epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.005
    optimizer: Literal["sgd", "adam"] = "adam"
    momentum: float = 0.0

    def _check(self, path: str) -> None:
        _require(self.local_epochs >= 1, f"{path}.local_epochs", f"must be >= 1, got {self.local_epochs}")
        _require(self.batch_size >= 1, f"{path}.batch_size", f"must be >= 1, got {self.batch_size}")
        _require(self.learning_rate > 0, f"{path}.learning_rate", f"must be > 0, got {self.learning_rate}")
        _require(0.0 <= self.momentum < 1.0, f"{path}.momentum", f"must be in [0, 1), got {self.momentum}")


@dataclass(frozen=True, kw_only=True)
class StrategyConfig:
    """The weighted-mean Flower strategy that aggregates (wrapped by ours)."""

    name: StrategyName = "fedavg"
    fraction_train: float = 1.0
    fraction_evaluate: float | None = None
    proximal_mu: float = 0.01
    server_learning_rate: float = 1.0
    server_momentum: float = 0.0
    eta: float = 0.1
    eta_l: float = 0.1
    tau: float = 1e-3

    def _check(self, path: str) -> None:
        _require(0.0 < self.fraction_train <= 1.0, f"{path}.fraction_train", f"must be in (0, 1], got {self.fraction_train}")
        _require(
            self.fraction_evaluate is None or 0.0 <= self.fraction_evaluate <= 1.0,
            f"{path}.fraction_evaluate",
            f"must be in [0, 1] or null, got {self.fraction_evaluate}",
        )
        _require(self.proximal_mu >= 0, f"{path}.proximal_mu", f"must be >= 0, got {self.proximal_mu}")
        _require(self.eta > 0, f"{path}.eta", f"must be > 0, got {self.eta}")
        _require(self.tau > 0, f"{path}.tau", f"must be > 0, got {self.tau}")


@dataclass(frozen=True, kw_only=True)
class FederationConfig:
    """Which federation this is, how many organizations take part and how data is split
    among them (simulation).

    ``name`` identifies the federation whose privacy ledger lives in ``state_dir``: runs
    of the same federation spend one budget. ``None`` derives it from what defines the
    simulated organizations' data (dataset, partition, size, seed).
    """

    name: str | None = None
    num_organizations: int = 3
    partition: Literal["iid", "dirichlet", "site"] = "iid"
    dirichlet_alpha: float = 0.5
    min_partition_size: int = 10

    def _check(self, path: str) -> None:
        _require(
            self.name is None or (self.name.strip() != "" and all(c.isalnum() or c in "-_." for c in self.name)),
            f"{path}.name",
            f"must be letters, digits, '-', '_' or '.', got {self.name!r}",
        )
        _require(
            self.num_organizations >= 1,
            f"{path}.num_organizations",
            f"must be >= 1, got {self.num_organizations}",
        )
        _require(self.dirichlet_alpha > 0, f"{path}.dirichlet_alpha", f"must be > 0, got {self.dirichlet_alpha}")
        _require(
            self.min_partition_size >= 1,
            f"{path}.min_partition_size",
            f"must be >= 1, got {self.min_partition_size}",
        )


@dataclass(frozen=True, kw_only=True)
class AggregationConfig:
    """The ``aggregation_config`` settings.

    The field defaults are light (plain aggregation, 2 organizations, 10 rounds) for the
    Python API, the REST service and tests; the documented settings of a run,
    :meth:`documented` (3 organizations, secure sum, 30 minutes, 100 rounds), are the
    defaults of the Hydra config (``conf/aggregation_config/default.yaml``) and of
    ``flwr run`` (``[tool.flwr.app.config]`` in ``pyproject.toml``).
    """

    min_participants: int = 2
    aggregation_method: Literal["fedavg", "secure_sum"] = "fedavg"
    timeout_minutes: float = 10.0
    max_rounds: int = 10

    @classmethod
    def documented(cls) -> AggregationConfig:
        """The documented settings: secure sum over at least 3 organizations, 30 minutes
        per exchange, 100 rounds."""
        return cls(min_participants=3, aggregation_method="secure_sum", timeout_minutes=30.0, max_rounds=100)

    def _check(self, path: str) -> None:
        _require(self.min_participants >= 1, f"{path}.min_participants", f"must be >= 1, got {self.min_participants}")
        _require(self.timeout_minutes > 0, f"{path}.timeout_minutes", f"must be > 0, got {self.timeout_minutes}")
        _require(self.max_rounds >= 1, f"{path}.max_rounds", f"must be >= 1, got {self.max_rounds}")


@dataclass(frozen=True, kw_only=True)
class SecureSumConfig:
    """Parameters of the secure-sum protocol (used when aggregation_method is secure_sum).

    ``clip_norm`` bounds the L2 norm of each organization's model update (clipped by the
    client before encoding); ``weight_bound`` caps the weight (sample count) one
    organization contributes; ``max_participants`` bounds the organizations in one sum
    (``None``: sized from the federation, ``federation.num_organizations``; see
    :meth:`ExperimentConfig.secure_sum_participants`). ``mode`` is ``semi-honest`` or
    ``malicious`` (adds the consistency check: one more exchange per round,
    ``docs/secure-sum.md`` section 10). ``bits``/``frac_bits`` fix the ring; ``None`` lets
    the bit budget choose (the defaults fit a 32-bit ring with 16 fractional bits: 4 bytes
    per parameter). Identities, pins and a hospital's minimum threshold are its own choice,
    so they are set in its node config (``secure-identity``, ``secure-pins``,
    ``secure-min-threshold``), not in the run config the coordinator controls.

    ``graph`` chooses who masks against and shares with whom (``docs/secure-sum.md``
    section 12): ``auto`` (default) uses a sparse random ``k``-regular graph where its
    neighbourhood is at most half the round (from about 30 organizations with the default
    fractions), else the complete graph; ``complete`` and ``sparse`` force one. The sparse
    graph is sized so that it fails with probability at most ``2^-40`` when up to
    ``colluding_fraction`` of a round's organizations collude with the coordinator and up
    to ``dropout_fraction`` drop out (hospitals check it with their own fractions, node
    config ``secure-colluding-fraction`` / ``secure-dropout-fraction``). Malicious mode
    always uses the complete graph.
    """

    clip_norm: float = 1.0
    weight_bound: int = 1000
    bits: int | None = None
    frac_bits: int | None = None
    max_participants: int | None = None
    mode: Literal["semi-honest", "malicious"] = "semi-honest"
    graph: Literal["auto", "complete", "sparse"] = "auto"
    colluding_fraction: float = 0.1
    dropout_fraction: float = 0.1

    def _check(self, path: str) -> None:
        _require(
            self.graph in ("auto", "complete", "sparse"),
            f"{path}.graph",
            f"must be 'auto', 'complete' or 'sparse', got {self.graph!r}",
        )
        for name in ("colluding_fraction", "dropout_fraction"):
            value = getattr(self, name)
            _require(0.0 <= value < 0.5, f"{path}.{name}", f"must be in [0, 0.5), got {value}")
        _require(
            self.mode in ("semi-honest", "malicious"),
            f"{path}.mode",
            f"must be 'semi-honest' or 'malicious', got {self.mode!r}",
        )
        _require(self.clip_norm > 0, f"{path}.clip_norm", f"must be > 0, got {self.clip_norm}")
        _require(self.weight_bound >= 1, f"{path}.weight_bound", f"must be >= 1, got {self.weight_bound}")
        _require(self.bits in (None, 32, 64), f"{path}.bits", f"must be 32, 64 or null, got {self.bits}")
        _require(
            self.max_participants is None or self.max_participants >= 2,
            f"{path}.max_participants",
            f"must be >= 2 or null, got {self.max_participants}",
        )


@dataclass(frozen=True, kw_only=True)
class PrivacyBudgetConfig:
    """The documented ``privacy_budget`` settings, plus the DP unit (``mode``).

    ``mode="none"`` disables differential privacy. ``noise_multiplier=None`` calibrates
    the noise so that the budget lasts exactly ``aggregation_config.max_rounds``.
    """

    epsilon: float = 8.0
    delta: float = 1e-5
    mechanism: Literal["gaussian", "laplace"] = "gaussian"
    mode: Literal["none", "sample", "organization", "release"] = "none"
    noise_placement: Literal["central", "distributed"] = "central"
    clip_norm: float = 1.0
    noise_multiplier: float | None = None

    def _check(self, path: str) -> None:
        _require(self.epsilon > 0, f"{path}.epsilon", f"must be > 0, got {self.epsilon}")
        _require(0.0 < self.delta < 1.0, f"{path}.delta", f"must be in (0, 1), got {self.delta}")
        _require(self.clip_norm > 0, f"{path}.clip_norm", f"must be > 0, got {self.clip_norm}")
        _require(
            self.noise_multiplier is None or self.noise_multiplier > 0,
            f"{path}.noise_multiplier",
            f"must be > 0 or null, got {self.noise_multiplier}",
        )
        # Laplace is pure epsilon-DP for one L1-bounded release; DP-SGD (sample) and
        # DP-FedAvg (organization) compose Gaussian noise and are accounted as such.
        _require(
            self.mechanism == "gaussian" or self.mode in ("release", "none"),
            f"{path}.mechanism",
            f"{self.mechanism!r} is only valid in 'release' mode; mode {self.mode!r} needs 'gaussian'",
        )


@dataclass(frozen=True, kw_only=True)
class ValidationConfig:
    """Validation checks run by clients before sending and by the coordinator."""

    checks: tuple[str, ...] = ("nan_check", "bounds_check", "privacy_check")
    max_update_norm: float = 100.0
    norm_tolerance: float = 0.01
    value_range: float = 1e4
    max_num_examples: int = 1_000_000

    def _check(self, path: str) -> None:
        _require(self.max_update_norm > 0, f"{path}.max_update_norm", f"must be > 0, got {self.max_update_norm}")
        _require(self.norm_tolerance >= 0, f"{path}.norm_tolerance", f"must be >= 0, got {self.norm_tolerance}")
        _require(self.value_range > 0, f"{path}.value_range", f"must be > 0, got {self.value_range}")
        _require(
            self.max_num_examples >= 1,
            f"{path}.max_num_examples",
            f"must be >= 1, got {self.max_num_examples}",
        )


@dataclass(frozen=True, kw_only=True)
class FaultsConfig:
    """Fault injection for simulations: which organizations misbehave, from which round.

    Each field lists partition ids (organizations) that send the named fault. With
    ``bypass_client_checks`` (default) the fault is injected after the client's own checks,
    as a modified or malicious client would send it, so the coordinator's checks meet it;
    otherwise it is injected before them, as a buggy pipeline would produce it, and the
    client refuses to send it.
    """

    nan: tuple[int, ...] = ()
    huge_norm: tuple[int, ...] = ()
    wrong_shape: tuple[int, ...] = ()
    sign_flip: tuple[int, ...] = ()
    crash: tuple[int, ...] = ()
    from_round: int = 1
    sign_flip_scale: float = 10.0
    huge_norm_scale: float = 1e6
    bypass_client_checks: bool = True

    def _check(self, path: str) -> None:
        _require(self.from_round >= 1, f"{path}.from_round", f"must be >= 1, got {self.from_round}")

    def fault_for(self, partition_id: int, server_round: int) -> str | None:
        """Return the fault this organization injects in this round, if any."""
        if server_round < self.from_round:
            return None
        for kind in ("nan", "huge_norm", "wrong_shape", "sign_flip", "crash"):
            if partition_id in getattr(self, kind):
                return kind
        return None


@dataclass(frozen=True, kw_only=True)
class CoordinatorConfig:
    """The REST coordinator service (``coordinator.*``, Hydra group ``conf/coordinator``).

    Parameters
    ----------
    host : str
        Address uvicorn listens on (``127.0.0.1``; ``0.0.0.0`` for a real site, behind TLS).
    port : int
        TCP port (0 to 65535).
    database_url : str
        SQLAlchemy URL: ``sqlite:///fl.db`` (default kind) or
        ``postgresql+psycopg://user@host/db``.
    ssl_certfile, ssl_keyfile : str or None
        PEM certificate chain and private key; both or neither (then plain HTTP: loopback
        or behind a TLS-terminating proxy only).
    max_body_bytes : int
        Largest request body accepted (413 above it).
    keep_sealed_updates : bool
        Keep each organization's sealed update (``fedavg`` mode) after its round closes,
        e.g. to investigate a suspicious round. The coordinator can open them, so by
        default (``false``) they are erased in the transaction that closes the round;
        digests and receipts are kept either way; at start-up, updates of rounds closed
        earlier (before an upgrade, or while this was ``true``) are erased too. Secure-sum
        masked vectors are kept only until their stage closes (each is masked: alone it
        reveals nothing).
    """

    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str = "sqlite:///oneliac-coordinator.db"
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    max_body_bytes: int = 64 * 1024 * 1024
    keep_sealed_updates: bool = False

    def _check(self, path: str) -> None:
        _require(0 <= self.port <= 65535, f"{path}.port", f"must be in 0..65535, got {self.port}")
        _require(bool(self.host), f"{path}.host", "must not be empty")
        _require(
            self.database_url.startswith(("sqlite://", "postgresql")),
            f"{path}.database_url",
            f"expected sqlite:///FILE or postgresql+psycopg://..., got {self.database_url!r}",
        )
        _require(
            (self.ssl_certfile is None) == (self.ssl_keyfile is None),
            f"{path}.ssl_keyfile" if self.ssl_keyfile is None else f"{path}.ssl_certfile",
            "ssl_certfile and ssl_keyfile go together",
        )
        _require(self.max_body_bytes >= 1024, f"{path}.max_body_bytes", f"must be >= 1024, got {self.max_body_bytes}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CoordinatorConfig:
        """Build and validate from the ``coordinator`` group (fields named ``coordinator.*``).

        Raises
        ------
        ConfigError
            On an unknown key, a wrong type or an out-of-range value.
        """
        return _build(cls, data, "coordinator")


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """Everything that defines a run."""

    seed: int = 0
    output_dir: str | None = None
    state_dir: str = "oneliac-state"
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    aggregation_config: AggregationConfig = field(default_factory=AggregationConfig)
    secure_sum: SecureSumConfig = field(default_factory=SecureSumConfig)
    privacy_budget: PrivacyBudgetConfig = field(default_factory=PrivacyBudgetConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)

    @property
    def federation_name(self) -> str:
        """``federation.name``, or a name derived from what defines the organizations' data."""
        if self.federation.name is not None:
            return self.federation.name
        fed = self.federation
        source = self.dataset.name if self.dataset.name == "breast_cancer" else "csv"
        return f"{source}-{fed.partition}-{fed.num_organizations}orgs-seed{self.seed}"

    @property
    def evaluation_fraction(self) -> float:
        """Share of organizations asked for a separate federated-evaluation exchange.

        ``strategy.fraction_evaluate: null`` means 1 without differential privacy and
        plain aggregation, and 0 otherwise: under DP an organization's metrics would be a
        release outside the ledger, and under secure sum they would leave in the clear
        (secure sum carries the evaluation inside the masked training vector instead).
        """
        if self.strategy.fraction_evaluate is not None:
            return self.strategy.fraction_evaluate
        private = self.privacy_budget.mode != "none" or self.aggregation_config.aggregation_method == "secure_sum"
        return 0.0 if private else 1.0

    def _check(self, path: str) -> None:
        agg = self.aggregation_config
        fraction = self.strategy.fraction_evaluate
        if fraction is not None and fraction > 0:
            _require(
                self.privacy_budget.mode == "none",
                "strategy.fraction_evaluate",
                f"must be 0 or null under differential privacy (privacy_budget.mode={self.privacy_budget.mode!r}): "
                "each organization's evaluation metrics would be a release the ledger does not account; got "
                f"{fraction}",
            )
            _require(
                agg.aggregation_method != "secure_sum",
                "strategy.fraction_evaluate",
                "must be 0 or null under secure_sum: a separate evaluation exchange would send each "
                "organization's metrics in the clear (secure sum carries them inside the masked training "
                f"vector); got {fraction}",
            )
        if self.dataset.name == "breast_cancer" or self.federation.partition != "site":
            _require(
                agg.min_participants <= self.federation.num_organizations,
                "aggregation_config.min_participants",
                f"must be <= federation.num_organizations ({self.federation.num_organizations}), "
                f"got {agg.min_participants}",
            )
        if self.federation.partition == "site":
            _require(
                self.dataset.site_column is not None,
                "dataset.site_column",
                "is required when federation.partition is 'site'",
            )
        if agg.aggregation_method == "secure_sum" and self.secure_sum.max_participants is not None:
            sampled = self.sampled_per_round()
            _require(
                self.secure_sum.max_participants >= sampled,
                "secure_sum.max_participants",
                f"is {self.secure_sum.max_participants}, but each round samples up to {sampled} of the "
                f"federation's {self.federation.num_organizations} organizations (federation.num_organizations, "
                f"strategy.fraction_train, aggregation_config.min_participants); set it to >= {sampled}, "
                "or to null to size the ring from the federation",
            )

    def sampled_per_round(self) -> int:
        """Organizations the inner strategy samples for training in one round.

        Flower's ``FedAvg`` family samples ``max(int(N * fraction_train), min_train_nodes)``
        of the ``N`` connected nodes; here ``N = federation.num_organizations``.
        """
        n = self.federation.num_organizations
        return min(n, max(int(n * self.strategy.fraction_train), self.aggregation_config.min_participants))

    def secure_sum_participants(self) -> int:
        """Largest number of organizations in one secure sum: the bound the ring is sized for.

        ``secure_sum.max_participants`` when set, else the federation's size
        (``federation.num_organizations``), and never below 2. A round never has more
        participants than the organizations sampled (:meth:`sampled_per_round`).
        """
        explicit = self.secure_sum.max_participants
        return explicit if explicit is not None else max(2, self.federation.num_organizations)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExperimentConfig:
        """Build and validate a config from a nested mapping (e.g. Hydra's).

        Raises
        ------
        ConfigError
            On an unknown key, a wrong type or an out-of-range value; the message names
            the dotted field.
        """
        return _build(cls, data, "")

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> ExperimentConfig:
        """Build and validate a config from Flower's flat, dotted ``run_config``."""
        nested: dict[str, Any] = {}
        for dotted, value in run_config.items():
            parts = str(dotted).split(".")
            node = nested
            for i, part in enumerate(parts[:-1]):
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise ConfigError(".".join(parts[: i + 1]), "is a value, not a group")
                node = child
            node[parts[-1]] = value
        return cls.from_dict(nested)

    def to_dict(self) -> dict[str, Any]:
        """Return the resolved config as plain JSON-compatible data."""
        return _to_plain(self)

    def to_run_config(self) -> dict[str, int | float | str | bool]:
        """Flatten to Flower's scalar run-config form (inverse of ``from_run_config``)."""
        flat: dict[str, int | float | str | bool] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for key, sub in value.items():
                    walk(f"{prefix}.{key}" if prefix else key, sub)
            elif isinstance(value, list):
                flat[prefix] = ",".join(str(v) for v in value)
            elif value is None:
                flat[prefix] = ""
            else:
                flat[prefix] = value

        walk("", self.to_dict())
        return flat


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_to_plain(v) for v in value]
    return value


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(path or "<root>", f"expected a group of settings, got {data!r}")
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, data)) - known)
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise ConfigError(where, f"unknown setting; expected one of {sorted(known)}")
    kwargs: dict[str, Any] = {}
    for name, raw in data.items():
        field_path = f"{path}.{name}" if path else str(name)
        kwargs[str(name)] = _coerce(hints[str(name)], raw, field_path)
    instance = cls(**kwargs)
    for f in dataclasses.fields(cls):
        child = getattr(instance, f.name)
        if dataclasses.is_dataclass(child):
            child._check(f"{path}.{f.name}" if path else f.name)
    instance._check(path)
    return instance


def _coerce(tp: Any, raw: Any, path: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, raw, path)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if raw is None or (raw == "" and type(None) in options):
            if type(None) in options:
                return None
            raise ConfigError(path, f"must not be null; expected {_type_name(tp)}")
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, raw, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(path, f"expected {' or '.join(_type_name(o) for o in options)}, got {raw!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if raw not in allowed:
            raise ConfigError(path, f"expected one of {list(allowed)}, got {raw!r}")
        return raw
    if origin is tuple:
        (item_type, _ellipsis) = get_args(tp)
        if isinstance(raw, str):
            items: list[Any] = [s.strip() for s in raw.split(",") if s.strip()]
        elif isinstance(raw, (list, tuple)):
            items = list(raw)
        else:
            raise ConfigError(path, f"expected a list of {_type_name(item_type)}, got {raw!r}")
        return tuple(_coerce(item_type, item, f"{path}[{i}]") for i, item in enumerate(items))
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        raise ConfigError(path, f"expected true or false, got {raw!r}")
    if tp is int:
        if isinstance(raw, bool):
            raise ConfigError(path, f"expected an integer, got {raw!r}")
        if isinstance(raw, int):
            return raw
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        if isinstance(raw, str):
            try:
                return int(raw)
            except ValueError:
                pass
        raise ConfigError(path, f"expected an integer, got {raw!r}")
    if tp is float:
        if isinstance(raw, bool):
            raise ConfigError(path, f"expected a number, got {raw!r}")
        if isinstance(raw, (int, float)):
            return float(raw)
        if isinstance(raw, str):
            try:
                return float(raw)
            except ValueError:
                pass
        raise ConfigError(path, f"expected a number, got {raw!r}")
    if tp is str:
        if isinstance(raw, str):
            return raw
        raise ConfigError(path, f"expected a string, got {raw!r}")
    raise ConfigError(path, f"unsupported setting type {tp!r}")  # pragma: no cover

