"""Does gradient projection preserve the domain rankings? (the scale option's check, on real data).

At 1B–7B parameters the workflow can project every tracked layer's gradients, G ↦ P_out G P_inᵀ,
and fit EK-FAC in the projected space (``influence.projection``). Whether that is safe depends on
the model and the data, so this check measures it at a checkpoint: the tasks × domains benefit
matrix without projection and at each configured rank r (``rank_out = rank_in = r``), every one
from scratch on the same freshly sampled batches, then per task the Spearman ρ (and Pearson r)
across domains of the projected row against the unprojected one
(:func:`tikmix.influence.api.projection_agreement`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tikmix.core.atomic import atomic_output, write_json_atomic
from tikmix.data.sampler import load_streams, plan_mixture
from tikmix.influence.api import iterate_batches, projection_agreement
from tikmix.influence.stages import FISHER_LABELS, load_model
from tikmix.influence.tracking import select_modules
from tikmix.models.flops import training_flops_per_token
from tikmix.seeds import derive_seed

log = logging.getLogger(__name__)


def _sample(streams, weights: Mapping[str, float], tokens: int, seq_len: int, seed: int):
    plan = plan_mixture({d: len(streams[d]) for d in weights}, dict(weights), tokens, seq_len, seed)
    return plan.gather(streams)


def _batches(ids: np.ndarray, batch_size: int) -> list[torch.Tensor]:
    return [torch.from_numpy(ids[i : i + batch_size]) for i in range(0, len(ids), batch_size)]


def run_projection_agreement(
    *,
    checkpoint: str | Path,
    domain_dirs: Mapping[str, str | Path],
    task_files: Mapping[str, str | Path],
    prior: Mapping[str, float],
    ranks: Sequence[int],
    tokens_per_domain: int,
    fit_tokens: int,
    seq_len: int,
    batch_size: int,
    tracked_modules: str,
    fisher: str,
    seed: int,
    device: str,
    precision: str = "fp32",
) -> tuple[pd.DataFrame, dict]:
    """The agreement table (``rank, task, spearman, pearson``) and a record of what it cost.

    EK-FAC is fitted on ``fit_tokens`` drawn from ``prior`` (as the workflow's own fit is); each
    domain contributes ``tokens_per_domain`` tokens; each task all of its scored tokens. The
    samples' seeds are disjoint from every other stage's.
    """
    if not ranks:
        raise ValueError("projection agreement needs at least one rank")
    started = time.perf_counter()
    model, ckpt_hash = load_model(checkpoint, device)
    modules = select_modules(model, tracked_modules)
    streams = load_streams(domain_dirs)

    fit_ids = _sample(streams, prior, fit_tokens, seq_len, derive_seed(seed, "projection", "fit"))
    domain_ids = {
        d: _sample(
            streams, {d: 1.0}, tokens_per_domain, seq_len, derive_seed(seed, "projection", d)
        )
        for d in domain_dirs
    }
    tasks, task_tokens = {}, 0
    for task, path in task_files.items():
        with np.load(path) as data:
            ids, mask = data["input_ids"], data["loss_mask"]
        tasks[task] = list(iterate_batches(ids, mask, batch_size))
        task_tokens += ids.shape[0] * (ids.shape[1] - 1)
    # Per matrix: two passes over the fit sample (covariances, then Λ), one per domain and task.
    sequences = 2 * len(fit_ids) + sum(len(ids) for ids in domain_ids.values())
    tokens_per_matrix = sequences * seq_len + task_tokens
    log.info(
        "projection agreement at ranks %s: %d tokens per benefit matrix, %d matrices",
        list(ranks),
        tokens_per_matrix,
        1 + len(ranks),
    )
    table = projection_agreement(
        model,
        _batches(fit_ids, batch_size),
        tasks,
        {d: _batches(ids, batch_size) for d, ids in domain_ids.items()},
        ranks,
        modules=modules,
        seed=derive_seed(seed, "projection", "labels"),
        fisher=FISHER_LABELS[fisher],
        precision=precision,
    )
    tokens = tokens_per_matrix * (1 + len(ranks))
    record = {
        "checkpoint": ckpt_hash,
        "ranks": list(map(int, ranks)),
        "compute": {
            "tokens": int(tokens),
            "flops": float(tokens * training_flops_per_token(model, seq_len)),
        },
        "seconds": time.perf_counter() - started,
    }
    log.info("done in %.0f s", record["seconds"])
    return table, record


def write_projection_agreement(
    table: pd.DataFrame, record: dict, *, csv: str | Path, record_path: str | Path
) -> None:
    """The table as CSV; the cost record, with the worst task's ρ per rank, as JSON."""
    with atomic_output(csv) as tmp:
        table.to_csv(tmp, index=False)
    worst = table.groupby("rank")["spearman"].min()
    write_json_atomic(
        record_path,
        {**record, "min_spearman_by_rank": {str(r): float(v) for r, v in worst.items()}},
    )
