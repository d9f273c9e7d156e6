"""Ranking invariance (paper sec. 1 and 3.1, figs. 3, 5–12): do domain rankings persist in training?

TiKMiX mixes semi-dynamically because the *order* of the domains' benefits for a task changes
slowly. Given the benefit matrix of every checkpoint (``B = −influence``, larger is better),
this module lays the benefits out as trajectories over training and measures, per task, the
Spearman ρ and Kendall τ-b between the domain benefits of consecutive checkpoints and between
every checkpoint and the last one.

Positions along training come from each checkpoint's ``tikmix.json`` (``tokens_seen``). A user's
Hugging Face checkpoint may have no such file; then *every* checkpoint is placed at its index in
the configured training order and the axis label says so (mixing the two scales would be wrong).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from tikmix.core.checkpoint_format import META_FILE
from tikmix.core.mixture import MixtureInputError
from tikmix.mixing.weights import read_influence_matrix

TOKENS_AXIS = "tokens seen"
ORDER_AXIS = "checkpoint index in training order (tokens seen not recorded)"
STABILITY_COLUMNS = [
    "task",
    "comparison",
    "checkpoint_a",
    "checkpoint_b",
    "n_domains",
    "spearman_rho",
    "spearman_p",
    "kendall_tau",
    "kendall_p",
]


def checkpoint_positions(checkpoint_dirs: Mapping[str, str | Path]) -> pd.DataFrame:
    """Where each checkpoint sits in training, in the given (training) order.

    Returns columns ``checkpoint, order, step, tokens_seen, position``; ``position`` is
    ``tokens_seen`` when every checkpoint records it, else ``order`` for all. The axis label to
    plot ``position`` with is in ``.attrs["axis_label"]`` (:data:`TOKENS_AXIS` or
    :data:`ORDER_AXIS`).
    """
    if not checkpoint_dirs:
        raise ValueError("no checkpoints given")
    rows = []
    for order, (name, directory) in enumerate(checkpoint_dirs.items()):
        meta_path = Path(directory) / META_FILE
        meta = {}
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
            except json.JSONDecodeError as exc:
                raise ValueError(f"{meta_path}: not valid JSON ({exc})") from None
        rows.append(
            {
                "checkpoint": name,
                "order": order,
                "step": meta.get("step"),
                "tokens_seen": meta.get("tokens_seen"),
            }
        )
    table = pd.DataFrame(rows)
    known = table["tokens_seen"].notna().all()
    table["position"] = table["tokens_seen"] if known else table["order"]
    if known and not table["tokens_seen"].is_monotonic_increasing:
        raise ValueError(
            "checkpoints are not listed in training order: tokens_seen "
            f"{dict(zip(table['checkpoint'], table['tokens_seen'], strict=True))}"
        )
    table.attrs["axis_label"] = TOKENS_AXIS if known else ORDER_AXIS
    return table


def check_consistent(matrices: Mapping[str, pd.DataFrame]) -> tuple[list[str], list[str]]:
    """The tasks and domains every matrix shares; raises if any checkpoint's differ."""
    if not matrices:
        raise ValueError("no influence matrices given")
    names = list(matrices)
    first = matrices[names[0]]
    for name in names[1:]:
        other = matrices[name]
        if set(other.index) != set(first.index) or set(other.columns) != set(first.columns):
            raise MixtureInputError(
                f"influence matrices of checkpoints {names[0]!r} and {name!r} cover different "
                f"tasks/domains: {sorted(first.index)} x {sorted(first.columns)} vs "
                f"{sorted(other.index)} x {sorted(other.columns)}"
            )
    return list(first.index), list(first.columns)


def benefit_trajectories(
    matrices: Mapping[str, pd.DataFrame], positions: pd.DataFrame
) -> pd.DataFrame:
    """Long table of every benefit: ``checkpoint, order, position, task, domain, benefit, rank``.

    ``rank`` is the domain's rank for the task at that checkpoint, 1 = largest benefit (ties share
    the average rank).
    """
    tasks, domains = check_consistent(matrices)
    missing = [c for c in matrices if c not in set(positions["checkpoint"])]
    if missing:
        raise ValueError(f"no position for checkpoint(s) {missing}")
    where = positions.set_index("checkpoint")
    frames = []
    for name, matrix in matrices.items():
        block = matrix.loc[tasks, domains]
        long = block.stack().rename("benefit").reset_index()
        long.columns = ["task", "domain", "benefit"]
        long["rank"] = long.groupby("task")["benefit"].rank(ascending=False)
        long.insert(0, "position", where.loc[name, "position"])
        long.insert(0, "order", int(where.loc[name, "order"]))
        long.insert(0, "checkpoint", name)
        frames.append(long)
    table = pd.concat(frames, ignore_index=True)
    table.attrs["axis_label"] = positions.attrs.get("axis_label", TOKENS_AXIS)
    return table


def _correlations(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    spearman = stats.spearmanr(a, b)
    kendall = stats.kendalltau(a, b)
    return {
        "spearman_rho": float(spearman.statistic),
        "spearman_p": float(spearman.pvalue),
        "kendall_tau": float(kendall.statistic),
        "kendall_p": float(kendall.pvalue),
    }


def ranking_stability(matrices: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Rank correlations of each task's domain benefits between checkpoints.

    ``matrices`` maps checkpoint → benefit matrix, in training order. Rows come in two
    ``comparison`` kinds: ``consecutive`` (each checkpoint against the next) and ``final`` (each
    earlier checkpoint against the last). Spearman ρ and Kendall τ-b with their two-sided
    p-values; NaN where a task's benefits are all equal at one of the two checkpoints. With a
    single checkpoint the table is empty.
    """
    tasks, domains = check_consistent(matrices)
    if len(domains) < 2:
        raise ValueError("rank correlations need at least 2 domains")
    names = list(matrices)
    pairs = [("consecutive", a, b) for a, b in zip(names, names[1:], strict=False)]
    pairs += [("final", a, names[-1]) for a in names[:-1]]
    rows = []
    for task in tasks:
        for comparison, a, b in pairs:
            x = matrices[a].loc[task, domains].to_numpy(dtype=float)
            y = matrices[b].loc[task, domains].to_numpy(dtype=float)
            constant = np.ptp(x) == 0 or np.ptp(y) == 0
            values = (
                dict.fromkeys(["spearman_rho", "spearman_p", "kendall_tau", "kendall_p"], np.nan)
                if constant
                else _correlations(x, y)
            )
            rows.append(
                {
                    "task": task,
                    "comparison": comparison,
                    "checkpoint_a": a,
                    "checkpoint_b": b,
                    "n_domains": len(domains),
                    **values,
                }
            )
    return pd.DataFrame(rows, columns=STABILITY_COLUMNS)


def ranking_analysis(
    influence: Mapping[str, str | Path], checkpoint_dirs: Mapping[str, str | Path]
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, pd.DataFrame]:
    """Read every checkpoint's ``influence.csv`` (training order) and analyse the rankings.

    Returns ``(matrices, trajectories, stability)``: checkpoint → benefit matrix,
    :func:`benefit_trajectories` and :func:`ranking_stability`.
    """
    missing = [c for c in influence if c not in checkpoint_dirs]
    if missing:
        raise ValueError(f"no checkpoint directory for {missing}")
    matrices = {c: read_influence_matrix(path) for c, path in influence.items()}
    positions = checkpoint_positions({c: checkpoint_dirs[c] for c in influence})
    return matrices, benefit_trajectories(matrices, positions), ranking_stability(matrices)


@dataclass(frozen=True)
class RankingAgreement:
    """How well domain rankings persist between consecutive checkpoints, over tasks.

    Attributes:
        n_comparisons: (task, consecutive pair) rows compared.
        mean_spearman, mean_kendall: their mean Spearman ρ and Kendall τ-b (undefined rows,
            a task whose benefits are all equal, left out; NaN when every row is undefined).
    """

    n_comparisons: int
    mean_spearman: float
    mean_kendall: float


def consecutive_agreement(stability: pd.DataFrame) -> RankingAgreement | None:
    """:class:`RankingAgreement` of a :func:`ranking_stability` table; None when it is empty
    (a single checkpoint: nothing to compare)."""
    if stability.empty:
        return None
    consecutive = stability[stability["comparison"] == "consecutive"]
    return RankingAgreement(
        n_comparisons=len(consecutive),
        mean_spearman=float(consecutive["spearman_rho"].mean()),
        mean_kendall=float(consecutive["kendall_tau"].mean()),
    )
