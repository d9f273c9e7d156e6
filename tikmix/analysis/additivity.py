"""Additivity check (paper appendix D): is a mixture's benefit the weighted sum of its domains'?

TiKMiX-D scores a mixture ``w`` for task ``v`` by the linear prediction ``Σ_d w_d B[v, d]``
(B the benefit matrix, ``= −influence``, larger is better). The check perturbs a reference
mixture (TiKMiX-D's ``w_D``): each weight is multiplied by ``U(low, high)`` and the vector
renormalised (:func:`tikmix.mixing.candidates.perturbed_mixtures`). For every perturbed mixture
a *fresh* dataset of that mixture is sampled (real packed sequences, the shared sampler) and its
benefit is measured *directly*: one gradient pass, dotted with the preconditioned task gradients
(:func:`tikmix.influence.measure.measure_mixture_benefits`). Direct against predicted, per task:
Pearson r and p, Spearman ρ, the OLS fit ``direct ≈ slope · predicted + intercept`` and
externally studentized residuals. Points with ``|t| > threshold`` are *flagged* as outliers and
kept in every statistic; the Pearson r without them is reported beside the full one, since the
paper dropped sampling outliers before reporting r (:mod:`tikmix.core.paper`).

With a fixed θ and curvature the direct benefit is linear in ``w`` up to sampling noise, so r is
bounded by that noise. A few mixtures are measured again on fresh samples (replicates); the
pooled within-mixture variance ``σ²`` gives the *noise ceiling* ``sqrt(1 − σ² / var(direct))``,
the largest r the measurement allows even if additivity held exactly. It is reported beside r.
:func:`additivity_overview` sums a summary table up for the report.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import nn

from tikmix.analysis import write_tables
from tikmix.core.atomic import write_json_atomic
from tikmix.core.compute import ComputeRecord
from tikmix.core.conventions import SIGN_CONVENTION
from tikmix.core.mixture import MixtureInputError, read_mixture, validate_weights
from tikmix.core.settings import AdditivityNoise, AdditivitySettings
from tikmix.data.sampler import load_streams
from tikmix.influence.measure import measure_mixture_table
from tikmix.influence.projection import resolve_projections
from tikmix.influence.store import open_preconditioned
from tikmix.influence.tracking import select_modules
from tikmix.mixing.candidates import perturbed_mixtures
from tikmix.mixing.weights import read_influence_matrix
from tikmix.models.checkpoint import load_checkpoint
from tikmix.models.device import resolve_device
from tikmix.models.flops import training_flops_per_token

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = [
    "task",
    "n_mixtures",
    "pearson_r",
    "pearson_p",
    "spearman_rho",
    "spearman_p",
    "slope",
    "intercept",
    "r_squared",
    "n_outliers",
    "pearson_r_without_outliers",
    "noise_sd",
    "noise_ceiling",
]


@dataclass
class AdditivityResult:
    """Outcome of the check.

    Attributes:
        mixtures: the perturbed mixtures (rows ``mixture`` 0..n-1, columns domains).
        points: one row per (mixture, task): ``predicted``, ``direct``, ``fitted`` (OLS of direct
            on predicted), ``residual``, ``studentized_residual`` (externally studentized) and
            ``outlier`` (``|studentized_residual| > threshold``; flagged, never dropped).
        summary: one row per task with the columns of :data:`SUMMARY_COLUMNS`.
        compute: the tokens and FLOPs of the direct measurements (one gradient pass each,
            :func:`tikmix.models.flops.training_flops_per_token`).
    """

    mixtures: pd.DataFrame
    points: pd.DataFrame
    summary: pd.DataFrame
    compute: ComputeRecord


def predicted_benefits(B: pd.DataFrame, mixtures: pd.DataFrame) -> pd.DataFrame:
    """Linear predictions ``Σ_d w_d B[v, d]``: rows the mixtures, columns the tasks.

    ``mixtures`` must have exactly ``B``'s domains as columns (any order).
    """
    domains = list(B.columns)
    missing = [d for d in domains if d not in mixtures.columns]
    unknown = [d for d in mixtures.columns if d not in domains]
    if missing or unknown:
        raise MixtureInputError(
            f"mixtures and benefit matrix differ in domains: missing {missing}, unknown {unknown}"
        )
    values = mixtures[domains].to_numpy(dtype=float) @ B.to_numpy(dtype=float).T
    return pd.DataFrame(values, index=mixtures.index, columns=B.index)


def studentized_residuals(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Externally studentized residuals of the OLS fit ``y ≈ a + b·x``.

    ``t_i = e_i / (s_(i) · sqrt(1 − h_ii))`` with ``h_ii`` the leverage and ``s_(i)`` the residual
    standard deviation of the fit without point ``i``, so that one large outlier does not mask
    itself by inflating the common ``s``. Under the linear model ``t_i`` follows Student's t with
    ``n − 3`` degrees of freedom. Needs ``n ≥ 4`` points and a non-constant ``x``.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)
    if n < 4:
        raise ValueError(f"studentized residuals need at least 4 points, got {n}")
    centred = x - x.mean()
    sxx = float(centred @ centred)
    if sxx == 0:
        raise ValueError("studentized residuals need a non-constant predictor")
    slope = float(centred @ (y - y.mean())) / sxx
    residual = y - (y.mean() + slope * centred)
    leverage = 1.0 / n + centred**2 / sxx
    sse = float(residual @ residual)
    deleted_variance = (sse - residual**2 / (1.0 - leverage)) / (n - 3)
    with np.errstate(divide="ignore", invalid="ignore"):
        return residual / np.sqrt(np.maximum(deleted_variance, 0.0) * (1.0 - leverage))


def _task_statistics(task: str, x: np.ndarray, y: np.ndarray, threshold: float):
    fit = stats.linregress(x, y)
    fitted = fit.intercept + fit.slope * x
    t = studentized_residuals(x, y)
    outlier = np.abs(t) > threshold
    kept = ~outlier
    r_kept = stats.pearsonr(x[kept], y[kept]).statistic if kept.sum() >= 3 else np.nan
    spearman = stats.spearmanr(x, y)
    summary = {
        "task": task,
        "n_mixtures": len(x),
        "pearson_r": float(fit.rvalue),
        "pearson_p": float(stats.pearsonr(x, y).pvalue),
        "spearman_rho": float(spearman.statistic),
        "spearman_p": float(spearman.pvalue),
        "slope": float(fit.slope),
        "intercept": float(fit.intercept),
        "r_squared": float(fit.rvalue**2),
        "n_outliers": int(outlier.sum()),
        "pearson_r_without_outliers": float(r_kept),
    }
    points = pd.DataFrame(
        {
            "task": task,
            "predicted": x,
            "direct": y,
            "fitted": fitted,
            "residual": y - fitted,
            "studentized_residual": t,
            "outlier": outlier,
        }
    )
    return summary, points


def noise_ceiling(direct: pd.DataFrame, replicates: pd.DataFrame) -> pd.DataFrame:
    """Per task: the replicate noise ``σ`` and the ceiling ``sqrt(max(0, 1 − σ²/var(direct)))``.

    ``replicates`` has one row per measurement, a ``replicate_of`` column naming the mixture
    measured and one column per task; ``σ²`` is the pooled within-mixture variance.
    """
    groups = replicates.groupby("replicate_of")
    variance = groups.var(ddof=1).mean()
    rows = []
    for task in direct.columns:
        total = float(direct[task].var(ddof=1))
        sigma2 = float(variance[task])
        ceiling = np.sqrt(max(0.0, 1.0 - sigma2 / total)) if total > 0 else np.nan
        rows.append({"task": task, "noise_sd": np.sqrt(sigma2), "noise_ceiling": ceiling})
    return pd.DataFrame(rows)


def additivity_statistics(
    predicted: pd.DataFrame,
    direct: pd.DataFrame,
    *,
    outlier_threshold: float = AdditivitySettings.outlier_threshold,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-task agreement between direct and predicted benefits.

    Args:
        predicted, direct: rows the mixtures, columns the tasks (same labels, same order of rows).
        outlier_threshold: ``|externally studentized residual|`` above which a point is flagged.

    Returns:
        ``(summary, points)``: ``summary`` one row per task (:data:`SUMMARY_COLUMNS`); ``points``
        one row per (mixture, task) with the fit, residuals and the ``outlier`` flag. Every point
        counts in every statistic except ``pearson_r_without_outliers``.

    Raises:
        ValueError: different shapes or labels, non-finite values, fewer than 4 mixtures, or a
            task whose predictions are all equal (no correlation is defined).
    """
    if list(predicted.columns) != list(direct.columns) or not predicted.index.equals(direct.index):
        raise ValueError(
            "predicted and direct benefits need the same tasks (columns) and mixtures (rows); "
            f"got tasks {list(predicted.columns)} vs {list(direct.columns)}"
        )
    if len(predicted) < 4:
        raise ValueError(f"the additivity check needs at least 4 mixtures, got {len(predicted)}")
    if outlier_threshold <= 0:
        raise ValueError(f"outlier_threshold must be positive, got {outlier_threshold}")
    summaries, tables = [], []
    for task in predicted.columns:
        x = predicted[task].to_numpy(dtype=float)
        y = direct[task].to_numpy(dtype=float)
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise ValueError(f"task {task!r}: non-finite predicted or direct benefit")
        if np.ptp(x) == 0:
            raise ValueError(
                f"task {task!r}: every mixture has the same predicted benefit, so no correlation "
                "is defined (are the task's benefits equal across domains?)"
            )
        summary, points = _task_statistics(str(task), x, y, outlier_threshold)
        summary.update(noise_sd=np.nan, noise_ceiling=np.nan)
        points.insert(0, "mixture", predicted.index.to_numpy())
        summaries.append(summary)
        tables.append(points)
    return (
        pd.DataFrame(summaries, columns=SUMMARY_COLUMNS),
        pd.concat(tables, ignore_index=True),
    )


def additivity_check(
    model: nn.Module,
    modules: dict[str, nn.Linear],
    streams: Mapping[str, np.ndarray],
    B: pd.DataFrame,
    reference: pd.Series | Mapping[str, float],
    preconditioned_task_grads: Mapping[str, Mapping[str, torch.Tensor]],
    *,
    n_mixtures: int = AdditivitySettings.mixtures,
    low: float = AdditivitySettings.low,
    high: float = AdditivitySettings.high,
    tokens: int,
    seq_len: int,
    batch_size: int,
    seed: int = 0,
    outlier_threshold: float = AdditivitySettings.outlier_threshold,
    noise_mixtures: int = AdditivityNoise.mixtures,
    noise_replicates: int = AdditivityNoise.replicates,
    projection: dict | None = None,
    precision: str = "fp32",
) -> AdditivityResult:
    """Run appendix D's experiment around ``reference`` (TiKMiX-D's mixture).

    Args:
        model, modules: the checkpoint and its tracked modules (those of the benefit matrix).
        streams: domain → token stream (the domains of ``B``).
        B: benefit matrix, tasks × domains, from the same checkpoint.
        reference: the mixture to perturb.
        preconditioned_task_grads: ``(G + λI)⁻¹ ∇f_v`` per task (the tasks of ``B``).
        n_mixtures, low, high: ``n_mixtures`` perturbations ``w ⊙ U(low, high)``, renormalised.
        tokens: tokens sampled per mixture (the paper's:
            :data:`tikmix.core.paper.ADDITIVITY_TOKENS_PER_MIXTURE`).
        seq_len, batch_size: sequence length of the samples and batch size of the gradient pass.
        seed: seeds the perturbations and the samples.
        outlier_threshold: see :func:`additivity_statistics`.
        noise_mixtures, noise_replicates: the first ``noise_mixtures`` mixtures are measured
            ``noise_replicates`` more times, each on its own fresh sample, for the noise ceiling
            (:func:`noise_ceiling`).
        projection, precision: those the benefit matrix was computed with (the measurements must
            live in the same projected space).
    """
    w = validate_weights(reference, B.columns, source="additivity reference mixture")
    tasks = [t for t in B.index if t in preconditioned_task_grads]
    if len(tasks) != len(B.index) or len(preconditioned_task_grads) != len(B.index):
        raise ValueError(
            f"benefit matrix tasks {list(B.index)} differ from the preconditioned task gradients' "
            f"{list(preconditioned_task_grads)}"
        )
    mixtures = perturbed_mixtures(w, n_mixtures, low=low, high=high, seed=seed)
    mixtures.index.name = "mixture"
    predicted = predicted_benefits(B, mixtures)
    log.info("additivity: measuring %d mixtures of %d tokens each", n_mixtures, tokens)

    def measure(table: pd.DataFrame) -> tuple[pd.DataFrame, int]:
        return measure_mixture_table(
            model,
            modules,
            {d: streams[d] for d in B.columns},
            table,
            {t: preconditioned_task_grads[t] for t in B.index},
            tokens=tokens,
            seq_len=seq_len,
            batch_size=batch_size,
            seed=seed,
            design="additivity",
            projections=resolve_projections(modules, projection),
            precision=precision,
        )

    direct, n_tokens = measure(mixtures)
    # Replicates get labels after the mixtures', so each draws its own fresh sample.
    repeated = mixtures.iloc[
        np.repeat(np.arange(min(noise_mixtures, n_mixtures)), noise_replicates)
    ]
    origin = repeated.index.to_numpy()
    repeated = repeated.set_axis(
        pd.RangeIndex(n_mixtures, n_mixtures + len(repeated), name="mixture")
    )
    replicates, n_replicate_tokens = measure(repeated)
    summary, points = additivity_statistics(predicted, direct, outlier_threshold=outlier_threshold)
    ceiling = noise_ceiling(direct, replicates.assign(replicate_of=origin)).set_index("task")
    summary["noise_sd"] = summary["task"].map(ceiling["noise_sd"])
    summary["noise_ceiling"] = summary["task"].map(ceiling["noise_ceiling"])
    n_tokens += n_replicate_tokens
    compute = ComputeRecord(n_tokens, n_tokens * training_flops_per_token(model, seq_len))
    return AdditivityResult(mixtures=mixtures, points=points, summary=summary, compute=compute)


def run_additivity_check(
    *,
    checkpoint: str | Path,
    domain_dirs: Mapping[str, str | Path],
    influence_csv: str | Path,
    reference_mixture: str | Path,
    preconditioned: str | Path,
    tracked_modules: str,
    device: str = "auto",
    **options,
) -> AdditivityResult:
    """:func:`additivity_check` from the workflow's files.

    Loads the checkpoint, the domains' training streams, the benefit matrix, the reference
    mixture (a mixture file, e.g. TiKMiX-D's JSON) and the preconditioned task gradients the
    matrix was computed from (so the direct measurements use the same curvature and damping).
    ``options`` go to :func:`additivity_check` (``n_mixtures, low, high, tokens, seq_len,
    batch_size, seed, outlier_threshold``).
    """
    B = read_influence_matrix(influence_csv)
    reference = read_mixture(reference_mixture, B.columns)
    model, _ = load_checkpoint(checkpoint, device=resolve_device(device))
    modules = select_modules(model, tracked_modules)
    streams = load_streams(domain_dirs, "train")
    return additivity_check(
        model, modules, streams, B, reference, open_preconditioned(preconditioned), **options
    )


def write_additivity(
    result: AdditivityResult,
    *,
    points: str | Path,
    summary: str | Path,
    mixtures: str | Path,
    record: str | Path,
    settings: Mapping,
) -> None:
    """Write the tables (CSV) and a JSON record of the settings, the summary and the compute."""
    write_tables(
        (
            (result.points, points, False),
            (result.summary, summary, False),
            (result.mixtures, mixtures, True),
        )
    )
    write_json_atomic(
        record,
        {
            "settings": dict(settings),
            "sign_convention": SIGN_CONVENTION,
            "summary": result.summary.to_dict(orient="records"),
            "compute": result.compute.to_dict(),
        },
    )


@dataclass(frozen=True)
class AdditivityOverview:
    """What a summary table (:data:`SUMMARY_COLUMNS`, one row per task) says in a sentence.

    Attributes:
        n_tasks: tasks checked.
        lowest_r, highest_r: the range of Pearson r over tasks (NaN where none is defined).
        n_outliers: flagged outliers over every task.
        noise_ceiling: task → (r, noise ceiling) when replicates were measured, else empty.
    """

    n_tasks: int
    lowest_r: float
    highest_r: float
    n_outliers: int
    noise_ceiling: dict[str, tuple[float, float]]


def additivity_overview(summary: pd.DataFrame) -> AdditivityOverview:
    """:class:`AdditivityOverview` of a summary table indexed by task. The noise ceilings are
    given only when at least one task has one (a check without replicates has none)."""
    ceiling = {}
    if "noise_ceiling" in summary and not summary["noise_ceiling"].isna().all():
        ceiling = {
            str(task): (float(row["pearson_r"]), float(row["noise_ceiling"]))
            for task, row in summary.iterrows()
        }
    return AdditivityOverview(
        n_tasks=len(summary),
        lowest_r=float(summary["pearson_r"].min()),
        highest_r=float(summary["pearson_r"].max()),
        n_outliers=int(summary["n_outliers"].sum()),
        noise_ceiling=ceiling,
    )
