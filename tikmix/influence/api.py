"""Group influence of data domains on validation tasks, in memory (notebooks, tests, benchmarks).

The workflow's rules call :mod:`tikmix.influence.stages`, one function per rule, which read and
write stores; this module runs the same stage numerics on objects in memory. :func:`fit_ekfac`
is the rules ``ekfac_covariances → ekfac_eigen → ekfac_lambda → ekfac_factors`` back to back
(``covariance_sums``, ``eigendecompose``, ``lambda_sums``, ``EkfacFactors.from_lambda``).

The influence matrix stores the *benefit* (``docs/architecture.md``, "Conventions";
:mod:`tikmix.core.conventions`)::

    B[v, d] = ∇f_v(θ)ᵀ (G + λI)⁻¹ ḡ_d        (= −I of the paper; larger is better)

with ``f_v`` the mean loss over task ``v``'s scored tokens, ``ḡ_d`` the mean per-token loss
gradient over domain ``d``'s token budget and ``G`` the EK-FAC Fisher of the tracked layers. The
preconditioner is applied once per task (``precondition``); each domain then costs one gradient
pass and a dot product, so B is linear in the domain gradient: for disjoint sets of tokens
``S = ∪ S_i``, ``n_S · B[v, S] = Σ_i n_i · B[v, S_i]``.

Every function takes a model, the tracked modules (a dict from ``select_modules``, a regex, or
``None`` for the default Llama projections) and batches of token ids ``[B, L + 1]`` or
``(ids, loss_mask)`` pairs (``docs/architecture.md``). ``precision`` (``fp32|bf16|auto``) sets the
forward passes' autocast; ``projection`` (``None``, a ``ProjectionSpec``, its config mapping
``{rank_out, rank_in, seed}`` or explicit per-module projections) computes everything in the
randomly projected gradient space (``tikmix.influence.projection``): pass the same one to the
curvature fit, the task gradients and the domain gradients.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

from tikmix.core.conventions import BENEFIT_DEFINITION
from tikmix.influence.ekfac import (
    EkfacFactors,
    FisherKind,
    covariance_sums,
    eigendecompose,
    lambda_sums,
)
from tikmix.influence.gradients import GradientStats, module_dot_products, summed_gradients
from tikmix.influence.projection import (
    ModuleProjection,
    ProjectionSpec,
    resolve_projections,
)
from tikmix.influence.tracking import Batch, Precision, resolve_modules

ModuleSpec = dict[str, nn.Linear] | str | None
ProjectionArg = ProjectionSpec | Mapping[str, int] | Mapping[str, ModuleProjection] | None


def _reiterable(batches: Iterable[Batch]) -> Iterable[Batch]:
    if iter(batches) is batches:
        raise TypeError(
            "EK-FAC fitting reads the batches twice (covariances, then Λ): pass a list or "
            "another re-iterable collection, not an iterator or generator"
        )
    return batches


def fit_ekfac(
    model: nn.Module,
    batches: Iterable[Batch],
    *,
    modules: ModuleSpec = None,
    fisher: FisherKind = "true",
    seed: int = 0,
    damping: float | Literal["auto"] = "auto",
    dtype: torch.dtype = torch.float64,
    precision: Precision = "fp32",
    projection: ProjectionArg = None,
    eigenvalue_correction: bool = True,
) -> EkfacFactors:
    """Fit EK-FAC factors on ``batches`` (re-iterable: covariance pass, then Λ pass).

    ``fisher="true"`` samples labels from the model (deterministic for ``seed``);
    ``damping="auto"`` is ``0.1 · mean(Λ)`` per module. Sums accumulate in ``dtype``. Without
    ``eigenvalue_correction`` the factors are plain K-FAC's (one pass; see :func:`fit_kfac`).
    """
    modules = resolve_modules(model, modules)
    if eigenvalue_correction:
        batches = _reiterable(batches)
    options = {
        "fisher": fisher,
        "seed": seed,
        "dtype": dtype,
        "precision": precision,
        "projections": resolve_projections(modules, projection),
    }
    covariances = covariance_sums(model, modules, batches, **options)
    bases = eigendecompose(covariances)
    if not eigenvalue_correction:
        return EkfacFactors.kfac(bases, covariances, damping)
    lambdas = lambda_sums(model, modules, bases, batches, **options)
    return EkfacFactors.from_lambda(bases, lambdas, damping)


def fit_kfac(model: nn.Module, batches: Iterable[Batch], **options) -> EkfacFactors:
    """Plain K-FAC factors (no eigenvalue correction): a baseline for EK-FAC, one pass.

    ``options`` are :func:`fit_ekfac`'s (modules, fisher, seed, damping, dtype, precision,
    projection).
    """
    return fit_ekfac(model, batches, eigenvalue_correction=False, **options)


def domain_gradient(
    model: nn.Module,
    batches: Iterable[Batch],
    modules: ModuleSpec = None,
    *,
    dtype: torch.dtype = torch.float64,
    precision: Precision = "fp32",
    projection: ProjectionArg = None,
) -> GradientStats:
    """Summed token-loss gradient of a domain (or shard) and its token/sequence counts."""
    modules = resolve_modules(model, modules)
    return summed_gradients(
        model,
        modules,
        batches,
        dtype=dtype,
        precision=precision,
        projections=resolve_projections(modules, projection),
    )


def iterate_batches(
    ids: np.ndarray | torch.Tensor,
    loss_mask: np.ndarray | torch.Tensor | None = None,
    batch_size: int = 32,
) -> Iterator[Batch]:
    """Split ``[N, L + 1]`` token ids (and an optional mask) into ``(ids, mask)`` batches.

    Arrays may be memory maps: each batch is copied into an int64 tensor as it is yielded.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if loss_mask is not None and tuple(loss_mask.shape) != tuple(ids.shape):
        raise ValueError(
            f"loss_mask shape {tuple(loss_mask.shape)} differs from ids {tuple(ids.shape)}"
        )

    def tensor(array: np.ndarray | torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(
            np.array(array, dtype=np.int64) if isinstance(array, np.ndarray) else array
        )

    for start in range(0, ids.shape[0], batch_size):
        rows = slice(start, start + batch_size)
        yield tensor(ids[rows]), None if loss_mask is None else tensor(loss_mask[rows])


def task_gradient(
    model: nn.Module,
    ids: np.ndarray | torch.Tensor,
    loss_mask: np.ndarray | torch.Tensor | None = None,
    modules: ModuleSpec = None,
    *,
    batch_size: int = 32,
    dtype: torch.dtype = torch.float64,
    precision: Precision = "fp32",
    projection: ProjectionArg = None,
) -> GradientStats:
    """Summed loss gradient over a task's scored tokens (``loss_mask``; all tokens if ``None``).

    ``.mean()`` of the result is ``∇f_v`` for ``f_v`` the task's mean token loss.
    """
    batches = iterate_batches(ids, loss_mask, batch_size)
    return domain_gradient(
        model, batches, modules, dtype=dtype, precision=precision, projection=projection
    )


def _mean(grad: GradientStats | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return grad.mean() if isinstance(grad, GradientStats) else dict(grad)


def precondition(
    factors: EkfacFactors, task_grads: Mapping[str, GradientStats | Mapping[str, torch.Tensor]]
) -> dict[str, dict[str, torch.Tensor]]:
    """``(G + λI)⁻¹ ∇f_v`` per task (one IHVP each; ``GradientStats`` are turned into means)."""
    return {task: factors.ihvp(_mean(grad)) for task, grad in task_grads.items()}


def influence_matrix(
    preconditioned_task_grads: Mapping[str, Mapping[str, torch.Tensor]],
    domain_grads: Mapping[str, GradientStats | Mapping[str, torch.Tensor]],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Benefit matrix (rows tasks, columns domains) and its per-module terms (long format).

    ``domain_grads`` are per-token means (or ``GradientStats``, whose mean is taken). The matrix
    is the sum over modules of the long table's ``benefit`` column.
    """
    rows = []
    for domain, grad in domain_grads.items():
        mean = _mean(grad)
        for task, pre in preconditioned_task_grads.items():
            for module, value in module_dot_products(pre, mean).items():
                rows.append((task, domain, module, value))
    per_module = pd.DataFrame(rows, columns=["task", "domain", "module", "benefit"])
    return benefit_matrix(per_module, list(preconditioned_task_grads), list(domain_grads))


def benefit_matrix(
    per_module: pd.DataFrame, tasks: list[str], domains: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tasks × domains matrix of per-module benefit terms (columns task, domain, module,
    benefit), each summed over modules in the order they appear."""
    matrix = (
        per_module.groupby(["task", "domain"], sort=False)["benefit"]
        .sum()
        .unstack("domain")
        .reindex(index=tasks, columns=domains)
    )
    matrix.index.name, matrix.columns.name = "task", "domain"
    matrix.attrs["orientation"] = per_module.attrs["orientation"] = BENEFIT_DEFINITION
    return matrix, per_module


def group_influence(
    model: nn.Module,
    task_batches: Mapping[str, Iterable[Batch]],
    domain_batches: Mapping[str, Iterable[Batch]],
    factors: EkfacFactors,
    modules: ModuleSpec = None,
    *,
    precision: Precision = "fp32",
    projection: ProjectionArg = None,
) -> pd.DataFrame:
    """Tasks × domains benefit matrix in one call (task gradients, IHVPs, domain gradients).

    ``factors`` must have been fitted with the same ``projection``.
    """
    modules = resolve_modules(model, modules)
    options = {"precision": precision, "projections": resolve_projections(modules, projection)}
    tasks = {t: summed_gradients(model, modules, b, **options) for t, b in task_batches.items()}
    domains = {d: summed_gradients(model, modules, b, **options) for d, b in domain_batches.items()}
    matrix, _ = influence_matrix(precondition(factors, tasks), domains)
    return matrix


def projection_agreement(
    model: nn.Module,
    fit_batches: Iterable[Batch],
    task_batches: Mapping[str, Iterable[Batch]],
    domain_batches: Mapping[str, Iterable[Batch]],
    ranks: Iterable[int],
    *,
    modules: ModuleSpec = None,
    seed: int = 0,
    fisher: FisherKind = "true",
    precision: Precision = "fp32",
) -> pd.DataFrame:
    """How well projected influence ranks domains like unprojected influence, per rank and task.

    Fits EK-FAC and computes the benefit matrix once without projection and once per rank ``r``
    with ``projection = {rank_out: r, rank_in: r, seed}``, each from scratch on the same batches
    (re-iterable collections); returns a table with columns ``rank, task, spearman`` (Spearman
    rank correlation across domains of the projected vs the unprojected benefit row; needs at
    least three domains) plus ``pearson``. A rank at or above a layer's dimension leaves that
    side of the layer unprojected, so the curve reaches 1 once the rank covers every layer.
    """
    if len(domain_batches) < 3:
        raise ValueError(f"rank agreement needs at least 3 domains, got {len(domain_batches)}")
    modules = resolve_modules(model, modules)
    fit_batches = _reiterable(fit_batches)
    task_batches = {t: _reiterable(b) for t, b in task_batches.items()}
    domain_batches = {d: _reiterable(b) for d, b in domain_batches.items()}

    def matrix(projection: ProjectionSpec | None) -> pd.DataFrame:
        factors = fit_ekfac(
            model,
            fit_batches,
            modules=modules,
            fisher=fisher,
            seed=seed,
            precision=precision,
            projection=projection,
        )
        return group_influence(
            model,
            task_batches,
            domain_batches,
            factors,
            modules,
            precision=precision,
            projection=projection,
        )

    # scipy.stats takes about as long to import as torch: only this check pays for it
    from scipy.stats import pearsonr, spearmanr

    reference = matrix(None)
    rows = []
    for rank in ranks:
        projected = matrix(ProjectionSpec(rank_out=rank, rank_in=rank, seed=seed))
        for task in reference.index:
            x, y = reference.loc[task].to_numpy(), projected.loc[task].to_numpy()
            rows.append((rank, task, float(spearmanr(x, y)[0]), float(pearsonr(x, y)[0])))
    return pd.DataFrame(rows, columns=["rank", "task", "spearman", "pearson"])
