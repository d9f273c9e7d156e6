"""Random Kronecker projections of layer gradients (LoGra-style), for models too large to store.

A tracked layer's gradient is a matrix ``G [out, in']`` (``tikmix.influence.tracking``). With
fixed random matrices ``P_out [r_out, out]`` and ``P_in [r_in, in']`` it is stored as
``G' = P_out G P_inᵀ [r_out, r_in]``, which for a 7B Llama at ``r_out = r_in = 64`` shrinks a
per-domain gradient from 28 GB to about 4 MB (float32). Because one token's gradient is the outer
product ``g aᵀ``, its projection is ``(P_out g)(P_in a)ᵀ = g' a'ᵀ``: the hooks project the layer
input ``a`` and the output gradient ``g`` *before* any outer product, so no full-size gradient is
ever formed, per token or per batch. Every quantity built from ``(a, g)`` is then built in the
projected space, consistently:

* summed gradients ``Σ_t g'_t a'_tᵀ = P_out (Σ_t g_t a_tᵀ) P_inᵀ`` (projection is linear);
* EK-FAC covariances ``A' = E[a' a'ᵀ] = P_in A P_inᵀ`` and ``S' = P_out S P_outᵀ``;
* the eigenvalue correction ``Λ' = E_seq[(Q_S'ᵀ G'_n Q_A')²]``.

EK-FAC fitted this way is exactly the EK-FAC of the projected parameterisation (a layer
``W + P_outᵀ W' P_in`` at ``W' = 0``, whose gradient in ``W'`` is ``G'``), so influence in the
projected space is influence in a random ``r_out · r_in``-dimensional subspace of each layer's
weights. With square orthogonal ``P`` the projection is a rotation and influence is unchanged.

Entries are iid ``N(0, 1/r)`` (Johnson–Lindenstrauss scaling: ``E‖P x‖² = ‖x‖²``), drawn in
float64 on the CPU from a generator seeded by ``(seed, module name, side)``, so every job, device
and shard uses the same ``P``. A side whose dimension is at most its rank is left unprojected
(identity): projecting it would not reduce it, and the identity is exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tikmix.influence.layers import layer_dims
from tikmix.seeds import derive_seed


@dataclass(frozen=True)
class ProjectionSpec:
    """Ranks and seed of the per-layer Kronecker projections (the config's ``projection`` block)."""

    rank_out: int
    rank_in: int
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("rank_out", "rank_in"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"projection.{name} must be a positive integer, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"projection.seed must be an integer, got {self.seed!r}")

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any] | ProjectionSpec | None
    ) -> ProjectionSpec | None:
        """``None`` (no projection), a spec, or a mapping ``{rank_out, rank_in[, seed]}``."""
        if config is None or isinstance(config, ProjectionSpec):
            return config
        if not isinstance(config, Mapping):
            raise ValueError(f"projection must be null or a mapping, got {config!r}")
        unknown = sorted(set(config) - {"rank_out", "rank_in", "seed"})
        missing = sorted({"rank_out", "rank_in"} - set(config))
        if unknown or missing:
            raise ValueError(
                f"projection {dict(config)!r}: unknown keys {unknown}, missing keys {missing} "
                "(expected rank_out, rank_in and optionally seed)"
            )
        return cls(**config)

    def to_dict(self) -> dict[str, int]:
        return {"rank_out": self.rank_out, "rank_in": self.rank_in, "seed": self.seed}


@dataclass
class ModuleProjection:
    """``P_out [r_out, out]`` and ``P_in [r_in, in']`` of one layer; ``None`` means identity."""

    output: torch.Tensor | None
    input: torch.Tensor | None

    def shape(self, out_dim: int, in_dim: int) -> tuple[int, int]:
        """Shape of the projected gradient of a layer whose gradient is ``[out_dim, in_dim]``."""
        return (
            out_dim if self.output is None else self.output.shape[0],
            in_dim if self.input is None else self.input.shape[0],
        )

    def to(self, device: torch.device | str, dtype: torch.dtype) -> ModuleProjection:
        def move(p: torch.Tensor | None) -> torch.Tensor | None:
            return None if p is None else p.to(device=device, dtype=dtype)

        return ModuleProjection(move(self.output), move(self.input))

    def project_activations(self, a: torch.Tensor) -> torch.Tensor:
        """``a' = P_in a`` along the last axis of ``a [..., in']``."""
        return a if self.input is None else a.to(self.input.dtype) @ self.input.T

    def project_output_grads(self, g: torch.Tensor) -> torch.Tensor:
        """``g' = P_out g`` along the last axis of ``g [..., out]``."""
        return g if self.output is None else g.to(self.output.dtype) @ self.output.T

    def project_gradient(self, gradient: torch.Tensor) -> torch.Tensor:
        """``P_out G P_inᵀ`` of a full gradient matrix ``G [out, in']``."""
        return self.project_output_grads(self.project_activations(gradient).T).T


Projections = dict[str, ModuleProjection]


def gaussian_projection(rank: int, dim: int, seed: int) -> torch.Tensor:
    """``[rank, dim]`` float64 matrix with iid ``N(0, 1/rank)`` entries, the same on every machine."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn(rank, dim, dtype=torch.float64, generator=generator) / rank**0.5


def make_projections(modules: Mapping[str, nn.Linear], spec: ProjectionSpec) -> Projections:
    """One ``ModuleProjection`` per tracked layer, seeded by ``(spec.seed, name, side)``.

    The input side covers the bias column (``in_features + 1`` when the layer has a bias).
    """
    projections = {}
    for name, module in modules.items():
        out_dim, in_dim = layer_dims(module)
        in_dim += module.bias is not None
        output = (
            gaussian_projection(
                spec.rank_out, out_dim, derive_seed(spec.seed, "projection", name, "out")
            )
            if spec.rank_out < out_dim
            else None
        )
        inputs = (
            gaussian_projection(
                spec.rank_in, in_dim, derive_seed(spec.seed, "projection", name, "in")
            )
            if spec.rank_in < in_dim
            else None
        )
        projections[name] = ModuleProjection(output, inputs)
    return projections


def resolve_projections(
    modules: Mapping[str, nn.Linear],
    projection: ProjectionSpec | Mapping[str, Any] | Mapping[str, ModuleProjection] | None,
) -> Projections | None:
    """Accept ``None``, a spec (or its config mapping) or explicit per-module projections."""
    if projection is None:
        return None
    if (
        isinstance(projection, Mapping)
        and projection
        and all(isinstance(p, ModuleProjection) for p in projection.values())
    ):
        missing = sorted(set(modules) - set(projection))
        if missing:
            raise ValueError(f"no projection given for tracked modules {missing}")
        return {name: projection[name] for name in modules}
    return make_projections(modules, ProjectionSpec.from_config(projection))


def project_gradients(
    gradients: Mapping[str, torch.Tensor], projections: Projections
) -> dict[str, torch.Tensor]:
    """``P_out G P_inᵀ`` per module of full gradient matrices (an explicit reference path)."""
    return {
        name: projections[name].to(g.device, g.dtype).project_gradient(g)
        for name, g in gradients.items()
    }


def projection_attrs(
    projection: ProjectionSpec | Mapping[str, Any] | None,
) -> dict[str, int] | None:
    """What a store records of the projection its arrays live in (``None``: unprojected)."""
    spec = ProjectionSpec.from_config(projection)
    return None if spec is None else spec.to_dict()
