"""Settings objects: one frozen dataclass per group of settings, the one home of its defaults.

In the manner of kronfluence's ``FactorArguments``: each group (eq. 6's normalisation,
TiKMiX-D's objective, TiKMiX-M's search, box and gate, tikmix_c's calibration, stage 2's
training, the RegMix and DoReMi baselines, the additivity check; the gradient pass in :mod:`tikmix.core.gradient_pass`) is a frozen dataclass whose field
defaults are *the* defaults. The workflow builds each once from the config (``from_config``) and
hands it to a rule as one param (``as_params``: a plain mapping, so Snakemake's params trigger
sees it); :func:`tikmix.workflow.rule_settings` turns it back into the object; the command line
builds its options from the fields (``help`` in each field's metadata). The schema's defaults
(workflow/schemas/config.schema.yaml) are checked against these by the tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar

#: eq. 6's choices of the row scale ``s_i`` (:func:`tikmix.core.conventions.row_scales`).
NORMALISERS = ("max", "abs_max")


@dataclass(frozen=True)
class Settings:
    """A group of settings read from one section of the workflow config."""

    #: The config keys, from the root, of the section holding the group's fields.
    CONFIG_SECTION: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_config(cls, config: Mapping[str, Any]):  # noqa: ANN206 - the subclass
        """The group's settings in a workflow config (fields the section lacks keep their
        default)."""
        section = config
        for key in cls.CONFIG_SECTION:
            section = section.get(key) or {}
        return cls.from_section(section)

    @classmethod
    def from_section(cls, section: Mapping[str, Any]):  # noqa: ANN206 - the subclass
        """The group from its own section; a field whose default is a group (RegMix's
        ``dirichlet``) is built from its sub-section the same way."""
        values = {}
        for item in fields(cls):
            if item.name in section:
                value = section[item.name]
                if isinstance(item.default, Settings):
                    value = type(item.default).from_section(value or {})
                values[item.name] = value
        return cls(**values)

    def as_params(self) -> dict[str, Any]:
        """A plain mapping (a rule param; :meth:`from_params` inverts it)."""
        return asdict(self)

    @classmethod
    def from_params(cls, params: Settings | Mapping[str, Any]):  # noqa: ANN206 - the subclass
        return params if isinstance(params, cls) else cls.from_section(params)


@dataclass(frozen=True)
class Normalisation(Settings):
    """Eq. 6's normaliser, used wherever ``P̂`` is computed (mixtures, responses, figure 4)."""

    CONFIG_SECTION: ClassVar[tuple[str, ...]] = ("mixing", "tikmix_d")

    eps: float = field(
        default=1e-8,
        metadata={"help": "relative epsilon of eq. 6's normaliser: s_i * (1 + eps)"},
    )
    normaliser: str = field(
        default="max",
        metadata={
            "help": "eq. 6's s_i: max = the paper's max_j B_ij (max_j |B_ij| for a row without "
            "a positive entry); abs_max = max_j |B_ij|",
            "choices": NORMALISERS,
        },
    )


@dataclass(frozen=True)
class TikmixDSettings(Settings):
    """TiKMiX-D's objective (eq. 7): ``α·std(P̂) − β·ΣP̂ − γ·H(w)``."""

    CONFIG_SECTION: ClassVar[tuple[str, ...]] = ("mixing", "tikmix_d")

    alpha: float = field(default=1.0, metadata={"help": "weight of std(P)"})
    beta: float = field(default=1.0, metadata={"help": "weight of sum(P)"})
    gamma: float = field(default=1.0, metadata={"help": "weight of the entropy H(w)"})


@dataclass(frozen=True)
class AvailabilitySettings(Settings):
    """The availability caps of every optimising method (:mod:`tikmix.mixing.availability`):
    stage-1 exposure + ``w_d · stage_tokens`` <= ``max_epochs`` × unique tokens of ``d``."""

    CONFIG_SECTION: ClassVar[tuple[str, ...]] = ("mixing",)

    max_epochs: float | None = field(
        default=4.0,
        metadata={
            "help": "cumulative passes allowed over a domain's unique tokens, stage 1 included "
            "(Muennighoff et al. 2023: up to ~4 are nearly as good as unique data; None: no caps)"
        },
    )
    stage_tokens: int | None = field(
        default=None, metadata={"help": "tokens of the next stage (None: stage2.tokens)"}
    )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AvailabilitySettings:
        """The settings with ``stage_tokens`` resolved: null means ``stage2.tokens`` (the one
        place that default is applied)."""
        settings = super().from_config(config)
        if settings.stage_tokens is None:
            stage2 = config.get("stage2") or {}
            settings = replace(settings, stage_tokens=stage2.get("tokens"))
        return settings


@dataclass(frozen=True)
class TikmixMSearch(Settings):
    """TiKMiX-M's search (Algorithm 1): Dirichlet sampling around the current best."""

    CONFIG_SECTION: ClassVar[tuple[str, ...]] = ("mixing", "tikmix_m", "search")

    iters: int = field(default=20, metadata={"help": "search iterations T"})
    samples: int = field(default=2048, metadata={"help": "candidates per iteration N"})
    top_k: int = field(default=32, metadata={"help": "candidates averaged into the new centre"})
    kappa_min: float = field(default=20.0, metadata={"help": "first Dirichlet concentration"})
    kappa_max: float = field(default=5000.0, metadata={"help": "last Dirichlet concentration"})
    floor: float = field(
        default=0.05, metadata={"help": "Dirichlet concentration of a domain whose weight is 0"}
    )


@dataclass(frozen=True)
class TikmixMBox(Settings):
    """TiKMiX-M's support: the box ``[low·w_D, high·w_D]`` its mixtures are sampled and searched
    in (intersected with the Pareto set)."""

    CONFIG_SECTION: ClassVar[tuple[str, ...]] = ("mixing", "tikmix_m")

    low: float = field(default=0.5, metadata={"help": "lower box bound as a multiple of w_D"})
    high: float = field(default=2.0, metadata={"help": "upper box bound as a multiple of w_D"})


@dataclass(frozen=True)
class TikmixMGate(Settings):
    """When TiKMiX-M may leave w_D, and how often the response confirms it."""

    CONFIG_SECTION: ClassVar[tuple[str, ...]] = ("mixing", "tikmix_m", "gate")

    min_spearman: float = field(
        default=0.5, metadata={"help": "the surrogate's cross-validated Spearman needed"}
    )
    linear_r2: float = field(
        default=0.99,
        metadata={
            "help": "cross-validated R² above which a linear fit replaces the LightGBM surrogate "
            "and the program is solved as a linear program"
        },
    )
    replicates: int = field(
        default=4, metadata={"help": "measurements each of w_D and w_M for a noisy response"}
    )


@dataclass(frozen=True)
class TikmixCSettings(Settings):
    """tikmix_c, the calibrated method (:mod:`tikmix.mixing.tikmix_c`, docs/tikmix_c.md): its
    rollout mixtures around the ``continue`` mixture, the fit quality a task needs to count, and
    how far the solution may leave the rollouts."""

    CONFIG_SECTION: ClassVar[tuple[str, ...]] = ("mixing", "tikmix_c")
    #: Fewest rollouts the fit accepts: two coefficients, and leave-one-out still needs a residual.
    MIN_ROLLOUTS: ClassVar[int] = 4

    kl_min: float = field(
        default=0.02, metadata={"help": "smallest KL(w||p) of the rollout mixtures"}
    )
    kl_max: float = field(
        default=0.5, metadata={"help": "largest KL(w||p) of the rollout mixtures"}
    )
    n_levels: int = field(
        default=3, metadata={"help": "KL levels, log-spaced from kl_min to kl_max"}
    )
    per_level: int = field(default=4, metadata={"help": "rollout mixtures per KL level"})
    seed: int = field(default=0, metadata={"help": "seed of the rollout mixtures' directions"})
    rollout_seed: int = field(
        default=2000,
        metadata={"help": "training seed of every rollout and of continue's reference run"},
    )
    min_loo_r2: float = field(
        default=0.1,
        metadata={
            "help": "a task counts in the objective only when its leave-one-rollout-out R² "
            "(against predicting no change) reaches this"
        },
    )
    max_kl_multiple: float | None = field(
        default=1.0,
        metadata={
            "help": "the solution's KL(w||p) is at most this multiple of kl_max (None: unbounded)"
        },
    )

    def kl_levels(self) -> tuple[float, ...]:
        """The rollouts' KL levels: ``n_levels`` log-spaced values from ``kl_min`` to
        ``kl_max``."""
        if self.n_levels == 1:
            return (float(self.kl_min),)
        ratio = (self.kl_max / self.kl_min) ** (1 / (self.n_levels - 1))
        return tuple(float(self.kl_min * ratio**i) for i in range(self.n_levels))

    @property
    def max_kl(self) -> float | None:
        """The solve's bound on ``KL(w‖p)``."""
        return None if self.max_kl_multiple is None else self.max_kl_multiple * self.kl_max


@dataclass(frozen=True)
class Stage2Settings(Settings):
    """Stage 2's continued training and evaluation, the same for every method (paper table 1);
    the evaluation plan (methods, seeds, checkpoint, random mixtures) is the workflow's."""

    CONFIG_SECTION: ClassVar[tuple[str, ...]] = ("stage2",)

    tokens: int = 500_000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.1
    schedule: str = "cosine"
    warmup_fraction: float = 0.05
    #: resume = AdamW moments from the checkpoint's optimizer.pt when present; fresh = zeros.
    optimizer_policy: str = "resume"
    eval_batch_size: int = 32


@dataclass(frozen=True)
class ProxyModel(Settings):
    """The built-in model shape of the RegMix and DoReMi proxies (vocabulary from the tokenizer,
    context from ``data.seq_len``); a field of both baselines' settings."""

    d_model: int = 32
    n_layers: int = 2
    n_heads: int = 2
    d_ff: int | None = None
    tie_embeddings: bool = True


@dataclass(frozen=True)
class DirichletSettings(Settings):
    """RegMix's mixture generator around the natural token distribution
    (:mod:`tikmix.mixing.regmix`, which checks it); the defaults are RegMix's."""

    temperature: float = 0.5
    min_strength: float = 0.1
    max_strength: float = 5.0
    n_strengths: int = 15
    max_usage: float | None = 15.0
    minimum: float = 2e-4


@dataclass(frozen=True)
class RegmixSettings(Settings):
    """The RegMix baseline: ``n_proxies`` proxies trained from scratch on Dirichlet mixtures, a
    LightGBM regression, the mean of its ``top_k`` best of ``n_simulations`` simulated mixtures."""

    CONFIG_SECTION: ClassVar[tuple[str, ...]] = ("baselines", "regmix")

    n_proxies: int = 16
    tokens: int = 100_000
    batch_size: int = 16
    lr: float = 3e-3
    model: ProxyModel = ProxyModel()
    dirichlet: DirichletSettings = DirichletSettings()
    n_simulations: int = 100_000
    top_k: int = 100


@dataclass(frozen=True)
class DoremiSettings(Settings):
    """The DoReMi-lite baseline: a Group DRO proxy against a reference model (the checkpoint,
    or one of the proxy's shape trained for ``reference_tokens``), step size ``eta``."""

    CONFIG_SECTION: ClassVar[tuple[str, ...]] = ("baselines", "doremi")

    reference: str = "checkpoint"
    reference_tokens: int = 100_000
    proxy_tokens: int = 100_000
    batch_size: int = 16
    lr: float = 3e-3
    eta: float = 1.0
    smoothing: float = 1e-3
    model: ProxyModel = ProxyModel()


@dataclass(frozen=True)
class AdditivityNoise(Settings):
    """The additivity check's replicates: the first ``mixtures`` measured ``replicates`` more
    times on fresh samples (their spread is the noise ceiling of r)."""

    mixtures: int = 4
    replicates: int = 4


@dataclass(frozen=True)
class AdditivitySettings(Settings):
    """Appendix D's additivity check around TiKMiX-D's mixture: ``mixtures`` perturbations
    ``w ⊙ U(low, high)``, ``tokens`` sampled for each, outliers flagged beyond
    ``outlier_threshold`` studentized residuals."""

    CONFIG_SECTION: ClassVar[tuple[str, ...]] = ("checks", "additivity")

    mixtures: int = 256
    noise: AdditivityNoise = AdditivityNoise()
    low: float = 0.5
    high: float = 2.0
    tokens: int = 65_536
    outlier_threshold: float = 3.0
