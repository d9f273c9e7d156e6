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
import torch
from torch import nn

from tikmix.influence.gradients import module_dot_products, summed_gradients
from tikmix.influence.tracking import Batch


def measure_mixture_benefits(
    model: nn.Module,
    modules: dict[str, nn.Linear],
    batches_for_each_mixture: Iterable[Iterable[Batch]],
    preconditioned_task_grads: Mapping[str, Mapping[str, torch.Tensor]],
) -> np.ndarray:
    """Benefits ``[n_mixtures, n_tasks]`` (task order of ``preconditioned_task_grads``).

    Each element of ``batches_for_each_mixture`` is the batches of one mixture's sampled dataset.
    """
    tasks = list(preconditioned_task_grads)
    rows = []
    for batches in batches_for_each_mixture:
        mean = summed_gradients(model, modules, batches).mean()
        rows.append(
            [sum(module_dot_products(preconditioned_task_grads[t], mean).values()) for t in tasks]
        )
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(tasks))
