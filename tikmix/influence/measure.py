"""Direct measurement of a mixture's benefit (TiKMiX-M responses, additivity check).

For a candidate mixture ``w`` the caller samples a fresh dataset of that mixture (real sequences,
packed as in training: ``tikmix.data.sampler.sample_mixture``); its benefit for task ``v`` is
``∇f_vᵀ (G + λI)⁻¹ ḡ_w`` with ``ḡ_w`` the dataset's mean per-token gradient — one gradient pass
per mixture, dotted with the preconditioned task gradients computed once. Comparing it with
``Σ_d w_d B[v, d]`` tests the additivity the influence matrix relies on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
import torch
from torch import nn

from tikmix.data.sampler import plan_mixture
from tikmix.influence.gradients import module_dot_products, summed_gradients
from tikmix.influence.projection import ModuleProjection
from tikmix.influence.tracking import Batch, Precision
from tikmix.seeds import derive_seed


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

    Each element of ``batches_for_each_mixture`` is the batches of one mixture's sampled dataset.
    ``projections`` must be those the preconditioned task gradients were computed with.
    """
    tasks = list(preconditioned_task_grads)
    rows = []
    for batches in batches_for_each_mixture:
        stats = summed_gradients(
            model, modules, batches, precision=precision, projections=projections
        )
        mean = stats.mean()
        rows.append(
            [sum(module_dot_products(preconditioned_task_grads[t], mean).values()) for t in tasks]
        )
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

    def batches(plan):
        for ids in plan.iter_batches(streams, batch_size):
            yield torch.from_numpy(ids)

    values = measure_mixture_benefits(
        model,
        modules,
        (batches(plan) for plan in plans),
        preconditioned_task_grads,
        precision=precision,
        projections=projections,
    )
    n_tokens = sum(len(plan) for plan in plans) * seq_len
    table = pd.DataFrame(values, index=mixtures.index, columns=list(preconditioned_task_grads))
    return table, n_tokens
