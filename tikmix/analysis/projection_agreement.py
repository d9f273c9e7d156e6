"""Does gradient projection preserve the domain rankings? (the scale option's check, on real data).

At 1B–7B parameters the workflow can project every tracked layer's gradients, G ↦ P_out G P_inᵀ,
and fit EK-FAC in the projected space (``influence.projection``). Whether that is safe depends on
the model and the data, so this check measures it at a checkpoint: the tasks × domains benefit
matrix without projection and at each configured rank r (``rank_out = rank_in = r``), every one
from scratch on the same freshly sampled batches, then per task the Spearman ρ (and Pearson r)
across domains of the projected row against the unprojected one
(:func:`tikmix.influence.api.projection_agreement`). :func:`safe_projection_rank` draws the
verdict: from which rank on every task keeps ρ at :data:`AGREEMENT_TARGET` or above.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tikmix.analysis import write_tables
from tikmix.core.atomic import write_json_atomic
from tikmix.core.compute import ComputeRecord
from tikmix.data.sampler import load_streams, plan_mixture
from tikmix.influence.api import iterate_batches, projection_agreement
from tikmix.influence.stages import FISHER_LABELS, load_model
from tikmix.influence.tracking import select_modules
from tikmix.models.flops import training_flops_per_token
from tikmix.seeds import derive_seed

log = logging.getLogger(__name__)

#: The Spearman ρ every task's projected benefit row should keep with its unprojected one.
AGREEMENT_TARGET = 0.9
#: Slack below the target: ρ is a ratio of integers (e.g. exactly 0.9, computed as 0.8999…).
_RHO_SLACK = 1e-9


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
        "compute": ComputeRecord(
            int(tokens), float(tokens * training_flops_per_token(model, seq_len))
        ).to_dict(),
        "seconds": time.perf_counter() - started,
    }
    log.info("done in %.0f s", record["seconds"])
    return table, record


def write_projection_agreement(
    table: pd.DataFrame, record: dict, *, csv: str | Path, record_path: str | Path
) -> None:
    """The table as CSV; the cost record, with the worst task's ρ per rank, as JSON."""
    write_tables([(table, csv, False)])
    worst = worst_spearman_by_rank(table)
    write_json_atomic(
        record_path,
        {**record, "min_spearman_by_rank": {str(r): float(v) for r, v in worst.items()}},
    )


def worst_spearman_by_rank(table: pd.DataFrame) -> pd.Series:
    """The smallest Spearman ρ over tasks at each rank of an agreement table, by rank."""
    return table.groupby("rank")["spearman"].min().sort_index()


@dataclass(frozen=True)
class SafeRank:
    """The projection check's verdict.

    Attributes:
        target: the Spearman ρ every task should keep.
        worst: the worst task's ρ per tested rank (:func:`worst_spearman_by_rank`).
        safe_rank: the smallest tested rank from which every larger tested rank keeps every
            task at ``target`` or above; None when the largest tested rank does not.
    """

    target: float
    worst: pd.Series
    safe_rank: int | None


def safe_projection_rank(table: pd.DataFrame, target: float = AGREEMENT_TARGET) -> SafeRank:
    """:class:`SafeRank` of an agreement table (``rank, task, spearman``).

    The worst ρ passes over tasks whose ρ is undefined (NaN); a rank where every task's is
    undefined does not keep the target. A rank that keeps it below a larger one that does not
    is not safe: projecting more finely must not lose it.
    """
    worst = worst_spearman_by_rank(table)
    failing = worst.index[~(worst >= target - _RHO_SLACK)]
    safe = worst.index[worst.index > failing.max()] if len(failing) else worst.index
    return SafeRank(target, worst, int(safe.min()) if len(safe) else None)
