"""Stage-2 evaluation tables: the paper's Table 1 and the data of its Figure 4.

Inputs are the per-(method, seed) records written by :func:`tikmix.models.stage2.run_stage2`
(``results/evaluation/{method}/seed{seed}.json``)::

    {method, seed, weights, tasks: {task: {loss, accuracy?, accuracy_norm?}}, average_loss,
     before: {tasks, average_loss}, compute: {tokens, flops}, ...}

* :func:`evaluation_table` — tasks × methods, mean and sample standard deviation (ddof 1; NaN
  with a single seed) over seeds, for every metric, plus the ``average`` row of the loss; each
  cell says whether its method is the best on that task (lowest loss, highest accuracy; ties all
  count as best).
* :func:`method_summary` — per method: average loss (mean ± std), "best on k/n tasks" by loss,
  and the FLOPs spent to determine the mixture (``total_compute.flops`` of its mixture JSON).
* :func:`benefit_vs_improvement` — Figure 4: each evaluated mixture's predicted total benefit
  ``Σ_v P̂_v(w)`` (normalised benefit, eq. 6, from the influence matrix; larger is better)
  against its measured improvement, the decrease of the average task loss relative to the
  checkpoint before stage 2 or to a reference method; with their Pearson ρ (the paper's:
  :data:`tikmix.core.paper.FIGURE4_PEARSON`).
  Besides the methods, figure 4 has random mixtures (:func:`write_random_mixture`): the paper
  correlated ten mixtures, more than the methods alone give, and random draws spread the
  predicted benefit without favouring any method.

Verdicts drawn from them return small dataclasses: :func:`surrogate_verdict` (did TiKMiX-M
trust its surrogate, which mixture does it return; the study's recommendation is
:mod:`tikmix.analysis.recommendation`'s), :func:`paired_comparisons`
(each method against the best baseline, paired by seed, with the minimum detectable effect), :func:`lowest_average_loss` and :func:`all_worse_than_checkpoint`. Everything
else returns pandas objects; rendering is the report's job.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import pearsonr
from scipy.stats import t as student_t

from tikmix.analysis import read_json_file, write_tables
from tikmix.core.atomic import write_json_atomic
from tikmix.core.compute import ComputeRecord
from tikmix.core.conventions import SIGN_CONVENTION, normalised_benefit
from tikmix.core.mixture import read_mixture_document
from tikmix.core.settings import Normalisation
from tikmix.mixing.availability import Availability
from tikmix.mixing.documents import write_method
from tikmix.mixing.weights import read_influence_matrix
from tikmix.seeds import derive_seed

AVERAGE = "average"
#: Metrics where larger is better; every other metric (the loss) is better when smaller.
HIGHER_IS_BETTER = frozenset({"accuracy", "accuracy_norm"})
_RECORD_KEYS = ("method", "seed", "weights", "tasks", "average_loss")
_AXES = ("predicted_benefit", "improvement_mean")
#: ``kind`` of a figure-4 point: a mixture method of table 1, or a random mixture.
METHOD, RANDOM = "method", "random"


class EvaluationInputError(ValueError):
    """An evaluation record or mixture file that cannot be used as given."""


def load_records(paths: Iterable[str | Path]) -> list[dict]:
    """Read stage-2 records, checking the keys the tables need (named by file)."""
    records = []
    for path in paths:
        path = Path(path)
        record = read_json_file(path, "evaluation record not found", EvaluationInputError)
        missing = [key for key in _RECORD_KEYS if key not in record]
        if missing:
            raise EvaluationInputError(f"{path}: evaluation record lacks key(s) {missing}")
        record["_source"] = str(path)
        records.append(record)
    return records


def records_frame(records: Iterable[Mapping]) -> pd.DataFrame:
    """Long format: one row per (method, seed, task, metric) with its ``value``.

    The record's ``average_loss`` becomes task :data:`AVERAGE`, metric ``loss``. A repeated
    (method, seed) is an error.
    """
    rows, seen = [], set()
    for record in records:
        key = (record["method"], int(record["seed"]))
        if key in seen:
            raise EvaluationInputError(f"two records for method {key[0]!r}, seed {key[1]}")
        seen.add(key)
        for task, metrics in record["tasks"].items():
            rows.extend((*key, task, metric, float(value)) for metric, value in metrics.items())
        rows.append((*key, AVERAGE, "loss", float(record["average_loss"])))
    if not rows:
        raise EvaluationInputError("no evaluation records")
    return pd.DataFrame(rows, columns=["method", "seed", "task", "metric", "value"])


def evaluation_table(
    records: Iterable[Mapping], methods: Sequence[str] | None = None
) -> pd.DataFrame:
    """Table 1 in long form: ``metric, task, method, mean, std, n_seeds, best``.

    ``methods`` keeps only those methods' records, so that mixtures evaluated for figure 4 alone
    (the random ones) neither appear as rows nor compete for "best"; each needs a record.
    Metrics, tasks and methods keep their first-seen order, with task :data:`AVERAGE` last.
    """
    records = list(records)
    if methods is not None:
        missing = [m for m in methods if not any(r["method"] == m for r in records)]
        if missing:
            raise EvaluationInputError(f"no evaluation record of method(s) {missing}")
        records = [r for r in records if r["method"] in methods]
    frame = records_frame(records)
    grouped = frame.groupby(["metric", "task", "method"], sort=False)["value"]
    table = grouped.agg(mean="mean", std=lambda v: v.std(ddof=1), n_seeds="count").reset_index()
    best = []
    for (metric, _task), cell in table.groupby(["metric", "task"], sort=False):
        target = cell["mean"].max() if metric in HIGHER_IS_BETTER else cell["mean"].min()
        best.append(cell["mean"] == target)
    table["best"] = pd.concat(best).reindex(table.index)
    order = {
        column: {v: i for i, v in enumerate(dict.fromkeys(frame[column]))}
        for column in ("metric", "task", "method")
    }
    order["task"][AVERAGE] = len(order["task"])
    table = table.sort_values(
        ["metric", "task", "method"], key=lambda col: col.map(order[col.name]), kind="stable"
    )
    return table.reset_index(drop=True)


def mixture_flops(mixture_files: Mapping[str, str | Path]) -> pd.Series:
    """Method → ``total_compute.flops`` of its mixture JSON (NaN when the file records none).

    ``total_compute``, not ``compute``: a TiKMiX mixture's ``compute`` is its last step only
    (the solve, the measurements), while ``total_compute`` adds the influence matrix and every
    step before it, which is what determining the mixture cost.
    """
    values = {}
    for method, path in mixture_files.items():
        if not Path(path).is_file():
            raise FileNotFoundError(f"mixture file of method {method!r} not found: {path}")
        document = read_mixture_document(path)
        values[method] = (
            ComputeRecord.read(document, str(path), "total_compute").flops
            if "total_compute" in document
            else math.nan
        )
    return pd.Series(values, dtype=float, name="mixture_flops")


def method_summary(table: pd.DataFrame, flops: pd.Series | None = None) -> pd.DataFrame:
    """Per method: average loss mean/std, best-on-k of n tasks (by loss), mixture FLOPs.

    Columns ``average_loss_mean, average_loss_std, n_seeds, best_on, n_tasks, best_on_text``
    (``"k/n"``) and ``mixture_flops`` (NaN where unknown). ``table`` is from
    :func:`evaluation_table`.
    """
    loss = table[table["metric"] == "loss"]
    average = loss[loss["task"] == AVERAGE].set_index("method")
    per_task = loss[loss["task"] != AVERAGE]
    n_tasks = per_task["task"].nunique()
    best_on = per_task.groupby("method", sort=False)["best"].sum().reindex(average.index)
    summary = pd.DataFrame(
        {
            "average_loss_mean": average["mean"],
            "average_loss_std": average["std"],
            "n_seeds": average["n_seeds"],
            "best_on": best_on.astype(int),
            "n_tasks": n_tasks,
        }
    )
    summary["best_on_text"] = [f"{k}/{n_tasks}" for k in summary["best_on"]]
    summary["mixture_flops"] = (
        math.nan if flops is None else pd.Series(flops, dtype=float).reindex(summary.index)
    )
    summary.index.name = "method"
    return summary


def benefit_vs_improvement(
    records: Iterable[Mapping],
    benefit: pd.DataFrame,
    *,
    reference: str = "checkpoint",
    random_mixtures: Collection[str] = (),
    normalisation: Normalisation = Normalisation(),
) -> tuple[pd.DataFrame, dict]:
    """Figure 4: predicted total normalised benefit vs measured improvement, per mixture.

    Args:
        records: stage-2 records (all seeds of a mixture must share its weights).
        benefit: the influence matrix ``B`` (tasks × domains, larger is better).
        reference: ``"checkpoint"`` measures improvement as the checkpoint's average loss
            before stage 2 minus the mixture's (per seed); a method name measures it against
            that method's seed-mean average loss (e.g. ``"natural"``).
        random_mixtures: the names in ``records`` that are random mixtures, not methods.
        normalisation: eq. 6's normaliser (:func:`tikmix.core.conventions.row_scales`).

    Returns:
        ``(points, stats)``: ``points`` has per mixture ``kind`` (:data:`METHOD` or
        :data:`RANDOM`), ``predicted_benefit``, ``improvement_mean``, ``improvement_std``,
        ``n_seeds``; ``stats`` has ``pearson`` and ``p_value`` over every point (NaN with fewer
        than 3 or a constant axis), ``n_mixtures``, ``n_random`` and ``reference``.
    """
    records = list(records)
    domains = list(benefit.columns)
    weights: dict[str, pd.Series] = {}
    improvements: dict[str, list[float]] = {}
    if reference != "checkpoint":
        ref = [float(r["average_loss"]) for r in records if r["method"] == reference]
        if not ref:
            raise EvaluationInputError(f"no evaluation record of reference method {reference!r}")
        reference_loss = float(np.mean(ref))
    for record in records:
        method = record["method"]
        w = pd.Series(record["weights"], dtype=float)
        unknown = sorted(set(w.index) - set(domains))
        if unknown:
            raise EvaluationInputError(
                f"method {method!r}: weights for domain(s) {unknown} absent from the "
                "influence matrix"
            )
        w = w.reindex(domains, fill_value=0.0)
        if method in weights and not np.allclose(weights[method], w, rtol=0, atol=1e-12):
            raise EvaluationInputError(f"method {method!r}: seeds were run with different weights")
        weights[method] = w
        if reference == "checkpoint":
            if "before" not in record:
                raise EvaluationInputError(
                    f"method {method!r}, seed {record['seed']}: record has no 'before' metrics"
                )
            before = float(record["before"]["average_loss"])
        else:
            before = reference_loss
        improvements.setdefault(method, []).append(before - float(record["average_loss"]))
    points = pd.DataFrame(
        {
            "kind": {m: RANDOM if m in random_mixtures else METHOD for m in weights},
            "predicted_benefit": {
                m: float(normalised_benefit(benefit, w, normalisation).sum())
                for m, w in weights.items()
            },
            "improvement_mean": {m: float(np.mean(v)) for m, v in improvements.items()},
            "improvement_std": {
                m: float(np.std(v, ddof=1)) if len(v) > 1 else math.nan
                for m, v in improvements.items()
            },
            "n_seeds": {m: len(v) for m, v in improvements.items()},
        }
    )
    points.index.name = "method"
    stats = {
        "pearson": math.nan,
        "p_value": math.nan,
        "n_mixtures": len(points),
        "n_random": int((points["kind"] == RANDOM).sum()),
    }
    # A correlation needs three points and spread on both axes (a constant axis, e.g. mixtures
    # with equal predicted benefit, would give rounding noise instead of NaN).
    spread = all(np.ptp(points[c]) > 1e-9 * (1 + points[c].abs().max()) for c in _AXES)
    if len(points) >= 3 and spread:
        result = pearsonr(points["predicted_benefit"], points["improvement_mean"])
        stats["pearson"], stats["p_value"] = float(result.statistic), float(result.pvalue)
    stats["reference"] = reference
    return points, stats


def random_mixture_name(index: int) -> str:
    """The method name (and file stem) of the ``index``-th random mixture: ``random{index}``."""
    return f"{RANDOM}{index}"


def write_random_mixture(
    path: str | Path,
    domains: Sequence[str],
    *,
    seed: int,
    index: int,
    influence_csv: str | Path,
    availability: str | Path | None = None,
    normalisation: Normalisation = Normalisation(),
) -> dict:
    """Write the ``index``-th random mixture: a Dirichlet(1) draw, uniform on the simplex.

    The draw depends only on ``(seed, index)`` (through :func:`tikmix.seeds.derive_seed`), so
    adding mixtures leaves the earlier ones unchanged. The document carries the predicted
    benefit under ``influence_csv``, a zero compute record and (given the checkpoint's
    ``availability.json``) its planned epochs, like the other mixtures; it is not capped.
    """
    if not domains:
        raise ValueError("a random mixture needs at least one domain")
    if index < 0:
        raise ValueError(f"random mixture index must be >= 0, got {index}")
    draw_seed = derive_seed(seed, "random_mixture", index)
    draw = np.random.default_rng(draw_seed).dirichlet(np.ones(len(domains)))
    return write_method(
        path,
        pd.Series(draw, index=list(domains)),
        method=random_mixture_name(index),
        influence_csv=influence_csv,
        normalisation=normalisation,
        solver={"name": "dirichlet", "concentration": 1.0, "seed": draw_seed},
        provenance={"seed": seed, "index": index, "influence": str(influence_csv)},
        availability=None if availability is None else Availability.read(availability),
    )


def write_evaluation_tables(
    record_paths: Iterable[str | Path],
    mixture_files: Mapping[str, str | Path],
    influence_path: str | Path,
    *,
    table_path: str | Path,
    summary_path: str | Path,
    figure4_path: str | Path,
    figure4_stats_path: str | Path,
    paired_path: str | Path,
    paired_stats_path: str | Path,
    random_mixtures: Sequence[str] = (),
    reference: str = "checkpoint",
    normalisation: Normalisation = Normalisation(),
) -> tuple[pd.DataFrame, dict]:
    """Compute and write Table 1 (long CSV + per-method summary CSV), the paired comparisons
    against the best baseline (CSV + statistics JSON, :func:`paired_comparisons`) and the
    Figure-4 data.

    ``mixture_files`` (method → mixture JSON) names the methods of table 1 and gives their
    FLOPs; records of ``random_mixtures`` enter figure 4 only; any other record is an error.
    Returns figure 4's ``(points, stats)`` (the stats also written as JSON).
    """
    records = load_records(record_paths)
    known = set(mixture_files) | set(random_mixtures)
    for record in records:
        if record["method"] not in known:
            raise EvaluationInputError(
                f"{record['_source']}: method {record['method']!r} is neither a table-1 method "
                f"{list(mixture_files)} nor a random mixture"
            )
    table = evaluation_table(records, methods=list(mixture_files))
    summary = method_summary(table, mixture_flops(mixture_files))
    paired, paired_stats = paired_comparisons(records, list(mixture_files))
    points, stats = benefit_vs_improvement(
        records,
        read_influence_matrix(influence_path),
        reference=reference,
        random_mixtures=set(random_mixtures),
        normalisation=normalisation,
    )
    stats["influence_matrix"] = str(influence_path)
    stats["orientation"] = SIGN_CONVENTION
    write_tables(
        (
            (table, table_path, False),
            (summary, summary_path, True),
            (points, figure4_path, True),
            (paired, paired_path, True),
        )
    )
    write_json_atomic(figure4_stats_path, stats)
    write_json_atomic(paired_stats_path, paired_stats)
    return points, stats


@dataclass(frozen=True)
class SurrogateVerdict:
    """Whether TiKMiX-M trusted its surrogate and which mixture it returns.

    The rule itself is TiKMiX-M's gate (in :func:`tikmix.mixing.search.propose_tikmix_m`: the
    surrogate's cross-validated Spearman must reach the gate's minimum, or the linear fit's R²
    exceed ``linear_r2``, and the predicted gain exceed the model's RMSE), recorded in the
    mixture document's ``solver``; this reads that record back.

    Attributes:
        trusted: the gate passed: the surrogate's ranking of mixtures was trusted.
        gate_reason: why (the numbers against the gate's thresholds).
        returns_proposal: the response confirmed the search's proposal against ``w_D``, so
            TiKMiX-M returns it (otherwise it returns ``w_D``, TiKMiX-D's mixture).
        recommended: ``tikmix_m`` when it returns its proposal, else ``tikmix_d``.
        reason: TiKMiX-M's reason for its decision.
        surrogate: the model behind the proposal: ``linear`` (the linear fit explained the
            response; a linear program) or ``lightgbm`` (surrogate + Algorithm 1).
        surrogate_reason: why that model (the linear fit's R² against the threshold).
        linear_r2, linear_r2_threshold: the linear fit's cross-validated R² (NaN if undefined)
            and the R² it had to exceed.
        spearman, pearson, rmse, n_samples, n_folds: that model's cross-validated quality.
        predicted_start, predicted_proposal: its prediction at ``w_D`` and at the proposal.
        start_response, proposal_response: the response measured at both.
    """

    trusted: bool
    gate_reason: str
    returns_proposal: bool
    recommended: str
    reason: str
    surrogate: str
    surrogate_reason: str
    linear_r2: float
    linear_r2_threshold: float
    spearman: float
    pearson: float
    rmse: float
    n_samples: int
    n_folds: int
    predicted_start: float
    predicted_proposal: float
    start_response: float
    proposal_response: float


def surrogate_verdict(solver: Mapping) -> SurrogateVerdict:
    """:class:`SurrogateVerdict` from the ``solver`` record of TiKMiX-M's mixture document.

    Undefined numbers (a NaN Spearman of a constant response) stay NaN; a missing key raises
    ``KeyError`` naming it.
    """
    quality, decision = solver["surrogate_quality"], solver["decision"]
    proposal = decision["chosen"] == "proposal"

    def number(mapping: Mapping, key: str) -> float:
        value = mapping[key]
        return math.nan if value is None else float(value)

    return SurrogateVerdict(
        trusted=bool(solver["gate_passed"]),
        gate_reason=str(solver["gate_reason"]),
        returns_proposal=proposal,
        recommended="tikmix_m" if proposal else "tikmix_d",
        reason=str(decision["reason"]),
        surrogate=str(solver["surrogate"]),
        surrogate_reason=str(solver["surrogate_reason"]),
        linear_r2=number(solver, "linear_cv_r2"),
        linear_r2_threshold=number(solver, "linear_r2_threshold"),
        spearman=number(quality, "spearman"),
        pearson=number(quality, "pearson"),
        rmse=number(quality, "rmse"),
        n_samples=int(quality["n_samples"]),
        n_folds=int(quality["n_folds"]),
        predicted_start=number(solver, "predicted_start"),
        predicted_proposal=number(solver, "predicted_proposal"),
        start_response=number(decision, "start_response"),
        proposal_response=number(decision, "proposal_response"),
    )


#: Baselines a recommendation must beat: doing nothing (``continue`` stage 1's mixture), the
#: natural mixture and uniform. The best of those evaluated is the reference of every comparison.
BASELINES = ("continue", "natural", "uniform")
#: Verdict of a method whose mixture is the reference's (left out of the pooled σ).
SAME_MIXTURE = "same mixture"
#: One-sided level of the paired bounds and power of the minimum detectable effect.
CONFIDENCE, POWER = 0.95, 0.80
#: Largest weight difference of two mixtures that are the same (an optimiser that returns the
#: prior p returns it to its solver's tolerance).
SAME_WEIGHTS_TOLERANCE = 1e-6


def same_weights(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    """Whether two mixtures (domain → weight) are the same, to :data:`SAME_WEIGHTS_TOLERANCE`."""
    if set(a) != set(b):
        return False
    return all(abs(float(a[d]) - float(b[d])) <= SAME_WEIGHTS_TOLERANCE for d in a)


def _average_losses(records: Iterable[Mapping]) -> pd.DataFrame:
    """Seed × method table of the average task loss."""
    frame = records_frame(records)
    average = frame[(frame["task"] == AVERAGE) & (frame["metric"] == "loss")]
    return average.pivot(index="seed", columns="method", values="value")


def minimum_detectable_effect(sigma: float, n_seeds: int, confidence: float = CONFIDENCE) -> float:
    """The smallest true mean paired difference a one-sided paired t-test at level
    ``confidence`` detects with probability :data:`POWER`:
    ``(t_.95,n−1 + t_.80,n−1) · σ / √n`` at the default level (NaN below two seeds or with an
    unknown σ)."""
    if n_seeds < 2 or not math.isfinite(sigma):
        return math.nan
    df = n_seeds - 1
    return float(
        (student_t.ppf(confidence, df) + student_t.ppf(POWER, df)) * sigma / math.sqrt(n_seeds)
    )


def paired_comparisons(
    records: Iterable[Mapping],
    methods: Sequence[str],
    baselines: Sequence[str] = BASELINES,
    confidence: float = CONFIDENCE,
) -> tuple[pd.DataFrame, dict]:
    """Every method's average loss against the best baseline, paired by seed.

    The reference is the evaluated baseline (of ``baselines``) with the lowest mean average
    loss. For each other method, ``d_s = loss(method, s) − loss(reference, s)`` over the seeds
    both ran (seed ``s`` of every mixture shares the run's seed: data order and torch seed), so
    what the seeds share cancels. Negative is better.

    Returns:
        ``(table, stats)`` (an empty table and a None reference when no baseline was
        evaluated): ``table`` per method: ``reference, n_seeds, mean_difference, sd,
        se`` (``sd/√n``), ``upper_95`` and ``lower_95`` (one-sided 95% bounds,
        ``mean ± t_.95,n−1 · se``) and ``verdict``: ``better`` when the upper bound is below 0,
        ``worse`` when the lower bound is above 0, else ``tie`` (:data:`SAME_MIXTURE` for a
        method whose mixture is the reference's); ``stats``: ``reference``, ``n_seeds``,
        ``sigma`` (the pooled SD of the paired differences of every other method, the noise a
        comparison of this study has) and ``mde`` (:func:`minimum_detectable_effect`).
    """
    records = list(records)
    losses = _average_losses(records)
    weights = {record["method"]: record["weights"] for record in records}
    candidates = [b for b in baselines if b in methods and b in losses.columns]
    # Without an evaluated baseline there is nothing to compare with: an empty table.
    reference = str(losses[candidates].mean().idxmin()) if candidates else None
    rows, variances, dofs = {}, [], []
    for method in methods if reference is not None else ():
        if method == reference or method not in losses.columns:
            continue
        differences = (losses[method] - losses[reference]).dropna()
        n = len(differences)
        mean = float(differences.mean()) if n else math.nan
        sd = float(differences.std(ddof=1)) if n > 1 else math.nan
        se = sd / math.sqrt(n) if n > 1 else math.nan
        half = float(student_t.ppf(confidence, n - 1)) * se if n > 1 else math.nan
        verdict = "better" if mean + half < 0 else "worse" if mean - half > 0 else "tie"
        # The reference's own mixture under another name (the demo's natural is `continue`):
        # its differences are zero by construction and say nothing about the noise.
        same_mixture = same_weights(weights[method], weights[reference])
        if same_mixture:
            verdict = SAME_MIXTURE
        rows[method] = {
            "reference": reference,
            "n_seeds": n,
            "mean_difference": mean,
            "sd": sd,
            "se": se,
            "upper_95": mean + half,
            "lower_95": mean - half,
            "verdict": verdict,
        }
        if n > 1 and not same_mixture:
            variances.append(sd**2 * (n - 1))
            dofs.append(n - 1)
    table = pd.DataFrame.from_dict(
        rows,
        orient="index",
        columns=[
            "reference",
            "n_seeds",
            "mean_difference",
            "sd",
            "se",
            "upper_95",
            "lower_95",
            "verdict",
        ],
    )
    table.index.name = "method"
    sigma = math.sqrt(sum(variances) / sum(dofs)) if dofs else math.nan
    n_seeds = int(table["n_seeds"].min()) if len(table) else 0
    stats = {
        "reference": reference,
        "n_seeds": n_seeds,
        "sigma": sigma,
        "mde": minimum_detectable_effect(sigma, n_seeds, confidence),
        "confidence": confidence,
        "power": POWER,
    }
    return table, stats


@dataclass(frozen=True)
class LowestLoss:
    """The method with the lowest mean average loss after stage 2, and that loss."""

    method: str
    average_loss: float


def lowest_average_loss(summary: pd.DataFrame, methods: Sequence[str]) -> LowestLoss:
    """:class:`LowestLoss` among ``methods`` (rows of :func:`method_summary`); the first of
    equal losses wins; methods without a loss (NaN) are passed over."""
    average = summary["average_loss_mean"].reindex(list(methods))
    best = average.idxmin()
    return LowestLoss(str(best), float(average[best]))


@dataclass(frozen=True)
class AllWorse:
    """Every method's stage-2 run ended worse than the checkpoint it continued.

    Attributes:
        least_rise, most_rise: the smallest and largest rise of the average task loss (nats).
    """

    least_rise: float
    most_rise: float


def all_worse_than_checkpoint(points: pd.DataFrame, stats: Mapping) -> AllWorse | None:
    """:class:`AllWorse` when every method (not the random mixtures) of figure 4 lost against
    the checkpoint; None otherwise, when the improvement is measured against a method, or
    when there is no method. A NaN improvement (nothing measured) is not a loss."""
    methods = points[points["kind"] == METHOD]
    if stats["reference"] != "checkpoint" or methods.empty:
        return None
    if not (methods["improvement_mean"] < 0).all():
        return None
    return AllWorse(
        least_rise=float(-methods["improvement_mean"].max()),
        most_rise=float(-methods["improvement_mean"].min()),
    )
