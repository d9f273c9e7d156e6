"""Direct measurement of a mixture's benefit (TiKMiX-M responses, additivity check).

For a candidate mixture ``w`` the caller samples a fresh dataset of that mixture (real sequences,
packed as in training: ``tikmix.data.sampler.sample_mixture``); its benefit for task ``v`` is
``∇f_vᵀ (G + λI)⁻¹ ḡ_w`` with ``ḡ_w`` the dataset's mean per-token gradient — one gradient pass
per mixture, dotted with the preconditioned task gradients computed once. Comparing it with
``Σ_d w_d B[v, d]`` tests the additivity the influence matrix relies on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn

from tikmix.data.sampler import plan_mixture
from tikmix.influence.gradients import module_dot_products, summed_gradients
from tikmix.influence.projection import ModuleProjection
from tikmix.influence.tracking import Batch, Precision, slice_batches
from tikmix.progress import Progress
from tikmix.seeds import derive_seed

log = logging.getLogger(__name__)


def mixture_benefits(
    mean: Mapping[str, torch.Tensor],
    preconditioned_task_grads: Mapping[str, Mapping[str, torch.Tensor]],
) -> list[float]:
    """``Σ_modules ⟨(G + λI)⁻¹ ∇f_v, ḡ_w⟩`` per task, module by module: with preconditioned
    gradients read lazily (:func:`tikmix.influence.store.open_preconditioned`) one module of
    every task is held at a time. Modules are added in the preconditioned gradients' order."""
    tasks = list(preconditioned_task_grads)
    totals = dict.fromkeys(tasks, 0)
    for task in tasks:
        missing = set(preconditioned_task_grads[task]) ^ set(mean)
        if missing:
            raise ValueError(f"gradients cover different modules; unmatched: {sorted(missing)}")
    for module in preconditioned_task_grads[tasks[0]] if tasks else ():
        for task in tasks:
            pre = {module: preconditioned_task_grads[task][module]}
            totals[task] += module_dot_products(pre, {module: mean[module]})[module]
    return [totals[t] for t in tasks]


def measure_mixture_benefits(
    model: nn.Module,
    modules: dict[str, nn.Linear],
    batches_for_each_mixture: Iterable[Iterable[Batch]],
    preconditioned_task_grads: Mapping[str, Mapping[str, torch.Tensor]],
    *,
    precision: Precision = "fp32",
    projections: Mapping[str, ModuleProjection] | None = None,
) -> np.ndarray:
    """Benefits ``[n_mixtures, n_tasks]`` (task order of ``preconditioned_task_grads``).

    Each element of ``batches_for_each_mixture`` is the batches of one mixture's sampled dataset;
    each gets one gradient pass (:func:`tikmix.influence.gradients.summed_gradients`, the domain
    gradients' pass), then :func:`mixture_benefits`. ``projections`` must be those the
    preconditioned task gradients were computed with.
    """
    tasks = list(preconditioned_task_grads)
    rows = []
    for batches in batches_for_each_mixture:
        stats = summed_gradients(
            model, modules, batches, precision=precision, projections=projections
        )
        if stats.n_tokens == 0:
            raise ValueError("mean gradient of zero scored tokens is undefined")
        # the mean in place of the sums (the same division): no second model-sized copy
        mean = {name: s.div_(stats.n_tokens) for name, s in stats.sums.items()}
        rows.append(mixture_benefits(mean, preconditioned_task_grads))
        del stats, mean
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(tasks))


def measure_mixture_table(
    model: nn.Module,
    modules: dict[str, nn.Linear],
    streams: Mapping[str, np.ndarray],
    mixtures: pd.DataFrame,
    preconditioned_task_grads: Mapping[str, Mapping[str, torch.Tensor]],
    *,
    tokens: int,
    seq_len: int,
    batch_size: int,
    seed: int,
    design: str,
    precision: Precision = "fp32",
    projections: Mapping[str, ModuleProjection] | None = None,
) -> tuple[pd.DataFrame, int]:
    """Direct benefit of every mixture (rows of ``mixtures``, domains as columns).

    Mixture ``i`` draws ``tokens // seq_len`` fresh sequences through the shared sampler (the same
    packing as training) with seed ``derive_seed(seed, "measure", design, i)``: no two mixtures,
    and no mixture and the domain gradients, share a sample. Returns the benefits (rows the
    mixtures, columns the tasks) and the number of tokens measured. ``precision`` and
    ``projections`` must match those the preconditioned task gradients were computed with.
    """
    lengths = {name: len(streams[name]) for name in mixtures.columns}
    plans = [
        plan_mixture(
            lengths,
            weights.to_dict(),
            tokens,
            seq_len,
            derive_seed(seed, "measure", design, int(mixture)),
        )
        for mixture, weights in mixtures.iterrows()
    ]

    n_tokens = sum(len(plan) for plan in plans) * seq_len
    progress = Progress(n_tokens, f"{design} measurements of {len(plans)} mixtures", log)

    def batches(plan):
        batches = (torch.from_numpy(ids) for ids in plan.iter_batches(streams, batch_size))
        return progress.track(slice_batches(batches, modules))

    values = measure_mixture_benefits(
        model,
        modules,
        (batches(plan) for plan in plans),
        preconditioned_task_grads,
        precision=precision,
        projections=projections,
    )
    table = pd.DataFrame(values, index=mixtures.index, columns=list(preconditioned_task_grads))
    return table, n_tokens
