"""Settings objects: one frozen dataclass per group of settings, the one home of its defaults.

In the manner of kronfluence's ``FactorArguments``: each group (eq. 6's normalisation,
TiKMiX-D's objective, TiKMiX-M's search, the gradient pass) is a frozen dataclass whose field
defaults are *the* defaults. The workflow builds each once from the config (``from_config``) and
hands it to a rule as one param (``as_params``: a plain mapping, so Snakemake's params trigger
sees it); :func:`tikmix.workflow.rule_settings` turns it back into the object; the command line
builds its options from the fields (``help`` in each field's metadata). The schema's defaults
(workflow/schemas/config.schema.yaml) are checked against these by the tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
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
        return cls(**{f.name: section[f.name] for f in fields(cls) if f.name in section})

    def as_params(self) -> dict[str, Any]:
        """A plain mapping (a rule param; :meth:`from_params` inverts it)."""
        return asdict(self)

    @classmethod
    def from_params(cls, params: Settings | Mapping[str, Any]):  # noqa: ANN206 - the subclass
        return params if isinstance(params, cls) else cls(**params)


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
    """TiKMiX-D's objective (eq. 7): ``α·std(P̂) − β·ΣP̂ − γ·H(w)``, and its availability caps."""

    CONFIG_SECTION: ClassVar[tuple[str, ...]] = ("mixing", "tikmix_d")

    alpha: float = field(default=1.0, metadata={"help": "weight of std(P)"})
    beta: float = field(default=1.0, metadata={"help": "weight of sum(P)"})
    gamma: float = field(default=1.0, metadata={"help": "weight of the entropy H(w)"})
    max_epochs: float | None = field(
        default=None,
        metadata={
            "help": "cap w_d * stage_tokens <= max_epochs * available tokens of d (None: no caps)"
        },
    )


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
    replicates: int = field(
        default=4, metadata={"help": "measurements each of w_D and w_M for a noisy response"}
    )
