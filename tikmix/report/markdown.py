"""The results report: ``report.md``, a paper-style results section built from the result files.

Every number in the report is read from a result file the workflow wrote (influence matrices,
mixture documents, the additivity, ranking and compute tables, stage-1 metrics, the stage-2
evaluation table) and formatted with :func:`format_number`; nothing is typed in by hand except the
paper's own reported values (:mod:`tikmix.core.paper`), which are labelled as such. Every verdict
(a safe projection rank, a FLOP cross-check, which mixture to recommend, which beats which) is
decided in :mod:`tikmix.analysis`; this module only words it. Figures are linked relative to the
report, so the ``results/report/`` folder can be moved or archived as a whole.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tikmix.analysis import read_json_file
from tikmix.analysis.additivity import additivity_overview, predicted_benefits
from tikmix.analysis.compute import flops_disagreements, flops_ratio
from tikmix.analysis.evaluation import (
    AVERAGE,
    RANDOM,
    SAME_MIXTURE,
    AllWorse,
    SurrogateVerdict,
    all_worse_than_checkpoint,
    lowest_average_loss,
    surrogate_verdict,
)
from tikmix.analysis.projection_agreement import safe_projection_rank
from tikmix.analysis.ranking import checkpoint_positions, consecutive_agreement
from tikmix.analysis.recommendation import (
    PROXY,
    Recommendation,
    comparisons_frame,
    read_recommendation,
    recommend_from_proxy,
)
from tikmix.core import paper
from tikmix.core.atomic import restore_nan, write_text_atomic
from tikmix.core.conventions import MIXTURE_METHODS, SIGN_CONVENTION
from tikmix.core.mixture import read_mixture
from tikmix.mixing.weights import read_influence_matrix
from tikmix.report.figures import method_label

SIGN_NOTE = (
    f"Sign convention: {SIGN_CONVENTION}. The tables and figures show the **benefit** B = −I "
    "(the paper's influence with its sign flipped): a positive B[v, d] means that training "
    "more on domain d lowers the loss of task v."
)
#: Order of the known methods in tables; other methods follow in the order given.
METHOD_ORDER = list(MIXTURE_METHODS)


def format_number(value: object) -> str:
    """How the report writes a value: integers exactly, other numbers to 4 significant digits.

    Integer-valued floats below 1e9 (token counts read back from a CSV) print as integers; larger
    ones (FLOPs) in scientific notation.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if float(value).is_integer() and abs(value) < 1e9:
            return str(int(value))
        return f"{float(value):.4g}"
    return str(value)


def markdown_table(table: pd.DataFrame, *, index: bool = True) -> str:
    """A GitHub-flavoured Markdown table; numbers through :func:`format_number`."""
    frame = table.reset_index() if index else table
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for row in frame.itertuples(index=False):
        cells = [format_number(v).replace("|", "\\|") for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def spelled(count: int) -> str:
    """A small count in words (``10`` → ``ten``), as prose writes it; digits from 13 on."""
    words = "zero one two three four five six seven eight nine ten eleven twelve".split()
    return words[count] if 0 <= count < len(words) else str(count)


def _ordered_methods(methods: Sequence[str]) -> list[str]:
    known = [m for m in METHOD_ORDER if m in methods]
    return known + [m for m in methods if m not in known]


@dataclass
class EvaluationFiles:
    """The stage-2 result files (rule ``evaluation_table``), as written by
    :func:`tikmix.analysis.evaluation.write_evaluation_tables`.

    Attributes:
        table: table 1 in long form (``table.csv``).
        summary: per-method summary with the mixture FLOPs (``summary.csv``).
        figure4: figure 4's points (``figure4.csv``); ``figure4_stats`` its statistics (JSON).
        paired: the paired comparisons against the best baseline (``paired.csv``);
            ``paired_stats`` their pooled σ and minimum detectable effect (JSON).
    """

    table: Path
    summary: Path
    figure4: Path
    figure4_stats: Path
    paired: Path
    paired_stats: Path


@dataclass
class ReportInputs:
    """The result files a report is built from.

    Attributes:
        influence: checkpoint → ``influence.csv``, in training order.
        checkpoint_dirs: checkpoint → directory (its ``tikmix.json`` places it in training).
        mixture_checkpoint: the checkpoint the mixtures were determined at.
        mixtures: method → canonical mixture JSON of ``mixture_checkpoint``.
        additivity: checkpoint → additivity summary CSV (one row per task); empty when the
            check was switched off.
        ranking: ranking-stability CSV (:func:`tikmix.analysis.ranking.ranking_stability`), or
            None when the check was switched off.
        compute: compute summary CSV; ``compute_components`` the per-component one.
        task_splits: task → ``split.json`` of its steering / evaluation split
            (:mod:`tikmix.data.task_split`).
        figures: section (``influence``, ``mixtures``, ``additivity``, ``ranking``,
            ``compute``, ``evaluation``) → PNG files to show in it.
        stage1_metrics: ``results/stage1/metrics.json`` when stage 1 ran (built-in model).
        evaluation: the stage-2 result files; the section appears when they are given.
        projection: the projection-agreement CSV (:mod:`tikmix.analysis.projection_agreement`);
            the section appears when it is given.
        recommendation: the recommendation document (:mod:`tikmix.analysis.recommendation`);
            without it the report states TiKMiX-M's own decision, labelled proxy-only.
    """

    influence: dict[str, Path]
    checkpoint_dirs: dict[str, Path]
    mixture_checkpoint: str
    mixtures: dict[str, Path]
    additivity: dict[str, Path]
    ranking: Path | None
    compute: Path
    compute_components: Path
    task_splits: dict[str, Path]
    figures: dict[str, list[Path]] = field(default_factory=dict)
    stage1_metrics: Path | None = None
    evaluation: EvaluationFiles | None = None
    projection: Path | None = None
    recommendation: Path | None = None


class _Writer:
    def __init__(self, report_dir: Path, figures: Mapping[str, Sequence[Path]]):
        self.report_dir = report_dir
        self.figures = figures
        self.parts: list[str] = []

    def add(self, *blocks: str) -> None:
        self.parts.extend(blocks)

    def figure(self, section: str, caption: str) -> None:
        for path in self.figures.get(section, []):
            link = os.path.relpath(Path(path), self.report_dir)
            name = Path(path).stem.replace("_", " ")
            self.add(f"![{name}]({link})", f"*{caption}* (`{Path(path).name}`; PDF beside it)")

    def text(self) -> str:
        return "\n\n".join(self.parts) + "\n"


def _read_json(path: Path) -> dict:
    return restore_nan(read_json_file(path, "result file not found"))


def _read_csv(path: Path, what: str) -> pd.DataFrame:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return pd.read_csv(path)


def _model_description(checkpoint: Path) -> str:
    config_path = Path(checkpoint) / "config.json"
    if not config_path.is_file():
        return f"checkpoint {checkpoint}"
    config = read_json_file(config_path, "model config not found")
    if "model_type" in config:
        keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
        dims = ", ".join(f"{k} {config[k]}" for k in keys if k in config)
        return f"Hugging Face {config['model_type']} ({dims})"
    keys = ("d_model", "n_layers", "n_heads", "d_ff", "vocab_size")
    dims = ", ".join(f"{k} {config[k]}" for k in keys if k in config)
    return f"built-in Llama ({dims})"


def _setup_section(w: _Writer, inputs: ReportInputs, B: pd.DataFrame, positions) -> None:
    last = list(inputs.influence)[-1]
    rows = [("model", _model_description(inputs.checkpoint_dirs[last]))]
    if inputs.stage1_metrics is not None:
        metrics = _read_json(inputs.stage1_metrics)
        rows += [
            ("parameters", format_number(metrics["n_parameters"])),
            ("stage-1 tokens", format_number(metrics["tokens"])),
            ("stage-1 throughput (tokens/s)", format_number(metrics["tokens_per_second"])),
        ]
    rows += [
        (f"domains ({len(B.columns)})", ", ".join(B.columns)),
        (f"validation tasks ({len(B.index)})", ", ".join(B.index)),
    ]
    checkpoints = ", ".join(
        f"{row.checkpoint} ({format_number(row.position)})"
        for row in positions.itertuples(index=False)
    )
    rows.append((f"checkpoints ({len(positions)}; {positions.attrs['axis_label']})", checkpoints))
    rows.append(("mixtures determined at", inputs.mixture_checkpoint))
    table = pd.DataFrame(rows, columns=["setting", "value"])
    w.add("## Setup", markdown_table(table, index=False))


def _tasks_section(w: _Writer, splits: Mapping[str, Path]) -> None:
    """The steering / evaluation split of every task: its fraction and the items per half."""
    records = {task: _read_json(path) for task, path in splits.items()}
    table = pd.DataFrame(
        [
            (task, r["items"], r["steering_items"], r["evaluation_items"])
            for task, r in records.items()
        ],
        columns=["task", "items", "steering", "evaluation"],
    )
    fractions = " / ".join(
        format_number(f) for f in sorted({r["fraction"] for r in records.values()})
    )
    w.add(
        "## Validation tasks",
        "Each task's items are split by a hash of their content (`data.steering_fraction` "
        f"{fractions} of them steer). The steering half determines the mixtures (task "
        "gradients, TiKMiX-D and TiKMiX-M, RegMix's targets, the checks); the evaluation half "
        "only scores them (stage 2: table 1, figure 4, accuracy). No item does both.",
        markdown_table(table, index=False),
    )


def _influence_section(w: _Writer, inputs: ReportInputs, matrices: dict[str, pd.DataFrame]):
    ckpt = inputs.mixture_checkpoint
    B = matrices[ckpt]
    best = B.idxmax(axis=1)
    sentences = "; ".join(
        f"{task} is helped most by {domain} (B = {format_number(B.loc[task, domain])})"
        for task, domain in best.items()
    )
    w.add(
        "## Group influence",
        f"Table: benefit matrix B at checkpoint `{ckpt}` (rows tasks, columns domains). "
        + SIGN_NOTE,
        markdown_table(B),
        f"At `{ckpt}`, {sentences}.",
    )
    w.figure("influence", "Benefit matrix per checkpoint (diverging colour scale centred at 0).")


def _mixture_section(
    w: _Writer,
    inputs: ReportInputs,
    B: pd.DataFrame,
    tikmix_m: SurrogateVerdict | None,
    recommendation: Recommendation | None,
) -> pd.DataFrame:
    methods = _ordered_methods(list(inputs.mixtures))
    weights = pd.DataFrame({m: read_mixture(inputs.mixtures[m], B.columns) for m in methods}).T
    weights.index.name = "method"
    predicted = predicted_benefits(B, weights)
    predicted["total"] = predicted.sum(axis=1)
    shown = weights.T.rename(columns=method_label)
    shown.index.name = "domain"
    w.add(
        "## Mixtures",
        f"Table: mixture weights determined at `{inputs.mixture_checkpoint}` "
        "(fraction of stage-2 tokens per domain).",
        markdown_table(shown),
    )
    _availability_part(w, {m: _read_json(Path(inputs.mixtures[m])) for m in methods})
    if "continue" in inputs.mixtures:
        source = _read_json(Path(inputs.mixtures["continue"])).get("provenance", {})
        w.add(
            f"*{method_label('continue')}* (`continue`) is the do-nothing baseline: "
            f"{source.get('note', 'stage 1’s mixture')}, continued unchanged. Every "
            "recommendation is compared with it in stage 2."
        )
    w.figure("mixtures", "Mixture weights per domain, and each mixture's predicted benefit B·w.")
    table = predicted.rename(index=method_label)
    w.add(
        "Table: predicted benefit B·w of each mixture per task, and its sum over tasks "
        "(the linear prediction TiKMiX-D maximises; larger is better).",
        markdown_table(table),
    )
    if tikmix_m is not None:
        solver = _read_json(Path(inputs.mixtures["tikmix_m"]))["solver"]
        _tikmix_m_part(w, solver, tikmix_m)
    if "tikmix_c" in inputs.mixtures:
        _tikmix_c_part(w, _read_json(Path(inputs.mixtures["tikmix_c"]))["solver"])
    if recommendation is not None:
        _recommendation_part(w, recommendation, inputs.mixture_checkpoint)
    return predicted


def _tikmix_c_part(w: _Writer, solver: Mapping) -> None:
    """tikmix_c's calibration per task and its prediction for the chosen mixture."""
    calibration = pd.DataFrame.from_dict(solver["calibration"], orient="index")
    calibration.index.name = "task"
    shown = pd.DataFrame(
        {
            "a ± SE": [
                f"{format_number(a)} ± {format_number(se)}"
                for a, se in zip(calibration["a"], calibration["se_a"], strict=True)
            ],
            "c ± SE": [
                f"{format_number(c)} ± {format_number(se)}"
                for c, se in zip(calibration["c"], calibration["se_c"], strict=True)
            ],
            "LOO r": calibration["loo_r"],
            "LOO R²": calibration["loo_r2"],
            "weight": calibration["task_weight"],
        },
        index=calibration.index,
    )
    rollouts, prediction = solver["rollouts"], solver["prediction"]
    w.add(
        "### tikmix_c",
        "tikmix_c (beyond the paper; docs/tikmix_c.md) predicts each task's benefit against "
        "`continue` as a·B·(w − p) − c·KL(w‖p), with a and c fitted to "
        f"{rollouts['n']} rollouts around p (each continuing the checkpoint for "
        f"{format_number(rollouts['tokens'])} tokens, seed {rollouts['seed']}, scored on the "
        "steering half). Tasks are weighted by their leave-one-rollout-out R² (zero below "
        "`mixing.tikmix_c.min_loo_r2`), and the weighted mean is maximised within the caps "
        f"(KL(w‖p) of the result: {format_number(solver['kl_to_prior'])}). Predicted benefit "
        f"of its mixture, mean over tasks: {format_number(prediction['average'])} ± "
        f"{format_number(prediction['average_se'])} nats (the weighted objective "
        f"{format_number(prediction['objective'])} ± {format_number(prediction['objective_se'])}"
        "); positive = lower loss than `continue`.",
        "Table: tikmix_c's fit per task: a (how far the influence's prediction carries over to "
        "training), c (the price of leaving p, ≥ 0), the leave-one-rollout-out Pearson r and R² "
        "of predicted vs measured benefit, and the task's weight in the objective.",
        markdown_table(shown),
    )


def _recommendation_part(w: _Writer, recommendation: Recommendation, checkpoint: str) -> None:
    """The mixture for the next stage and its evidence: pilot training, or the proxy alone."""
    label = method_label(recommendation.method)
    exports = f"`results/mixtures/{checkpoint}/{recommendation.method}.json`"
    if recommendation.basis == PROXY:
        w.add(
            "### Recommended mixture (proxy-only)",
            f"**{label}** is TiKMiX-M's own choice for the next stage: {recommendation.reason}. "
            "**Nothing was trained to check it** (`recommendation.pilot: null`): TiKMiX-M's gate "
            "and confirmation re-score its own proxy, which is not evidence that the mixture "
            f"beats doing nothing. Its weights: {exports}.",
        )
        return
    rows = comparisons_frame(recommendation)
    shown = pd.DataFrame(
        {
            "candidate": [method_label(m) for m in rows["method"]],
            "Δ average loss vs continue (nats)": rows["mean_difference"].map(format_number),
            "SE": rows["se"].map(format_number),
            f"one-sided {100 * recommendation.confidence:.1f}% upper bound": rows[
                "upper_bound"
            ].map(format_number),
            "verdict": rows["verdict"],
        }
    ).set_index("candidate")
    seeds = recommendation.pilot_seeds
    w.add(
        "### Recommended mixture",
        f"**{label}** is this study's recommended mixture for the next stage (weights: "
        f"{exports}), decided by training: {recommendation.reason}.",
        f"Table: the pilot. Each candidate continued `{checkpoint}` for "
        f"{format_number(recommendation.pilot_tokens)} tokens with the same {spelled(len(seeds))} "
        f"seeds ({', '.join(map(str, seeds))}; none of them a stage-2 seed) and was scored on the "
        "*steering* half of every task, never on the half stage 2 scores. Δ is its average loss "
        "minus `continue`'s, paired by seed (negative = lower loss than doing nothing); a "
        "candidate is recommended only when its upper bound is below 0, the level Bonferroni-"
        f"corrected over the candidates that differ from `continue`. Pooled σ = "
        f"{format_number(recommendation.sigma)} nats, minimum detectable effect "
        f"{format_number(recommendation.mde)} nats (80% power).",
        markdown_table(shown),
    )


#: The methods held to the availability caps; the others are baselines, flagged when they exceed.
CAPPED_METHODS = ("tikmix_d", "tikmix_m", "tikmix_c", "regmix", "doremi")


def _availability_part(w: _Writer, documents: Mapping[str, Mapping]) -> None:
    """The caps the mixtures were held to, each mixture's planned cumulative epochs, and the
    baselines that plan more than ``max_epochs`` passes over a domain."""
    planned = {m: d["planned_epochs"] for m, d in documents.items() if "planned_epochs" in d}
    if not planned:
        return
    caps = next(documents[m]["availability"] for m in planned)
    T = format_number(caps["stage_tokens"])
    if caps["stage1_exposure"] == "unknown":
        exposure = (
            "stage-1 exposure is **not counted** (unknown: set `prior` and `stage1_tokens` for "
            "your checkpoints), so the caps and planned epochs count stage 2 only"
        )
    else:
        exposure = f"stage-1 exposure is counted (from {caps['stage1_exposure']})"
    max_epochs = caps["max_epochs"]
    if max_epochs is None:
        rule = "No availability caps (`mixing.max_epochs: null`)"
    else:
        rule = (
            f"Availability caps: each domain's stage-1 exposure plus w_d · T stays within "
            f"max_epochs = {format_number(max_epochs)} passes over its unique tokens, for "
            f"{', '.join(method_label(m) for m in CAPPED_METHODS)}"
        )
    table = pd.DataFrame(planned).rename(columns=method_label)
    table.index.name = "domain"
    w.add(
        f"{rule}; T = {T} tokens of the next stage; {exposure}.",
        "Table: planned cumulative epochs per domain, (stage-1 exposure + w_d · T) / unique "
        "tokens of the domain.",
        markdown_table(table),
    )
    if max_epochs is None:
        return
    over = [
        f"{method_label(m)} ({', '.join(f'{d}: {e:.3g}' for d, e in epochs.items() if e > max_epochs)})"
        for m, epochs in planned.items()
        if m not in CAPPED_METHODS and any(e > max_epochs for e in epochs.values())
    ]
    if over:
        w.add(
            f"**Warning**: these baselines plan more than {format_number(max_epochs)} epochs of a "
            f"domain (they are not capped): {'; '.join(over)}."
        )


def _tikmix_m_part(w: _Writer, solver: Mapping, verdict: SurrogateVerdict) -> None:
    """TiKMiX-M's model (linear program or LightGBM surrogate, and why), its quality, gate,
    confirmation and (curvature) departure from B·w."""
    response = {
        "curvature": "the Newton-step benefit under each mixture's own curvature "
        "Λ(w) = Σ_d w_d Λ_d (exact, no sampling noise)",
        "direct": "each mixture's directly measured group influence (fixed curvature)",
        "lookahead": "each mixture's relative loss decrease after a few optimizer steps",
    }[solver["response"]]
    # R² to four decimals, as the surrogate's reason writes it (format_number would print 1).
    linear_r2 = (
        format_number(verdict.linear_r2)
        if math.isnan(verdict.linear_r2)
        else f"{verdict.linear_r2:.4f}"
    )
    r2 = (
        f"A least-squares linear model of the response on w has cross-validated R² "
        f"{linear_r2} against the threshold "
        f"{format_number(verdict.linear_r2_threshold)} (`tikmix_m.gate.linear_r2`)"
    )
    if verdict.surrogate == "linear":
        model = (
            f"{r2}, so the response is linear in w: LightGBM was skipped and the fitted linear "
            "response was maximised over the same feasible set (box ∩ Pareto set ∩ caps) as a "
            "linear program (cvxpy + Clarabel). The linear model"
        )
        moved = "The linear program moved the linear model's prediction"
    else:
        model = f"{r2}, not above it, so TiKMiX-M's LightGBM surrogate was used. It"
        moved = "Its search moved the surrogate's prediction"
    w.add(
        "### TiKMiX-M",
        f"TiKMiX-M's models were fitted on {verdict.n_samples} mixtures sampled in the box "
        "[low·w_D, high·w_D], widened to contain the prior p (staying where we are), cut by the "
        f"Pareto set (the search never leaves it), with response {response}. {model} predicts "
        f"held-out responses with Spearman {format_number(verdict.spearman)}, Pearson "
        f"{format_number(verdict.pearson)} and RMSE {format_number(verdict.rmse)} "
        f"({verdict.n_folds}-fold cross-validation). {moved} from "
        f"{format_number(verdict.predicted_start)} at w_D to "
        f"{format_number(verdict.predicted_proposal)}. Gate: "
        f"{'passed' if verdict.trusted else 'kept w_D'} ({verdict.gate_reason}). "
        f"Confirmation by the response: w_D {format_number(verdict.start_response)}, "
        f"proposal {format_number(verdict.proposal_response)}; "
        f"TiKMiX-M returns {'its proposal' if verdict.returns_proposal else 'w_D'}.",
    )
    departure = solver.get("curvature_vs_linear")
    if departure:
        table = pd.DataFrame(departure).T
        table.index.name = "task"
        w.add(
            "Table: how far the curvature response departs from the linear prediction B·w over "
            "TiKMiX-M's sampled mixtures (Pearson r, and the RMS difference relative to the "
            "spread of B·w). Both are free of sampling noise: the honest measure of additivity "
            "under the fixed-eigenbasis EK-FAC.",
            markdown_table(table),
        )


def _additivity_section(w: _Writer, inputs: ReportInputs) -> None:
    w.add(
        "## Additivity of group influence",
        "Following appendix D, mixtures around TiKMiX-D's are sampled (each weight multiplied by "
        "U(low, high), renormalised); for each, a fresh dataset is drawn and its benefit measured "
        "directly with one gradient pass, then compared with the linear prediction "
        "Σ_d w_d B[v, d]. Outliers (|externally studentized residual| above the threshold) are "
        "flagged and kept in every statistic; the last column leaves them out, as the paper did.",
    )
    for ckpt, path in inputs.additivity.items():
        summary = _read_csv(path, "additivity summary").set_index("task")
        overview = additivity_overview(summary)
        w.add(
            f"Table: direct vs predicted benefit at checkpoint `{ckpt}`.",
            markdown_table(summary),
            f"Pearson r ranges from {format_number(overview.lowest_r)} to "
            f"{format_number(overview.highest_r)} over {overview.n_tasks} tasks, with "
            f"{format_number(overview.n_outliers)} flagged outlier(s) in total."
            + _noise_sentence(overview.noise_ceiling),
        )
    reported = pd.DataFrame(
        {
            "benchmark": list(paper.ADDITIVITY_PEARSON_R),
            "pearson_r (paper, appendix D)": list(paper.ADDITIVITY_PEARSON_R.values()),
        }
    )
    w.add(
        f"For reference, the paper reports ({paper.ADDITIVITY_MIXTURES} mixtures of "
        f"{paper.billions(paper.ADDITIVITY_TOKENS_PER_MIXTURE)} tokens, "
        f"{spelled(paper.ADDITIVITY_OUTLIERS_REMOVED)} outliers removed, "
        f"p < {paper.ADDITIVITY_P_BELOW:g}):",
        markdown_table(reported, index=False),
    )
    w.figure("additivity", "Direct against predicted benefit per task, y = x and the OLS fit.")


def _noise_sentence(ceilings: Mapping[str, tuple[float, float]]) -> str:
    """r beside the noise ceiling that replicate measurements allow (when they were made)."""
    if not ceilings:
        return ""
    pairs = ", ".join(
        f"{task} {format_number(r)} / {format_number(ceiling)}"
        for task, (r, ceiling) in ceilings.items()
    )
    return (
        " With θ and the curvature fixed, the direct benefit is linear in w up to sampling "
        "noise, so r cannot exceed the noise ceiling sqrt(1 − σ²/var(direct)) measured from "
        f"replicates (r / ceiling: {pairs})."
    )


def _ranking_section(w: _Writer, inputs: ReportInputs) -> None:
    stability = _read_csv(inputs.ranking, "ranking stability table")
    w.add("## Ranking invariance over training")
    agreement = consecutive_agreement(stability)
    if agreement is None:
        w.add("A single checkpoint was analysed, so no ranking can be compared across training.")
    else:
        w.add(
            "Table: Spearman ρ and Kendall τ-b between the domain benefits of a task at two "
            "checkpoints (`consecutive`: each against the next; `final`: each against the last).",
            markdown_table(stability, index=False),
            "Between consecutive checkpoints the mean Spearman ρ over tasks is "
            f"{format_number(agreement.mean_spearman)} and the mean Kendall τ "
            f"{format_number(agreement.mean_kendall)}.",
        )
    w.figure("ranking", "Benefit of each domain over training, one panel per task.")


def _projection_section(w: _Writer, path: Path) -> None:
    table = _read_csv(path, "projection agreement table")
    wide = table.pivot(index="task", columns="rank", values="spearman")
    wide.columns = [f"ρ at r = {r}" for r in wide.columns]
    safe = safe_projection_rank(table)
    verdict = (
        f"From rank {safe.safe_rank} on, every task keeps ρ ≥ {safe.target:g}."
        if safe.safe_rank is not None
        else f"The largest tested rank does not keep ρ ≥ {safe.target:g} for every task."
    )
    w.add(
        "## Gradient projection",
        "Table: Spearman ρ across domains between each task's projected and unprojected "
        "benefit row, per projection rank r (r × r per tracked layer, EK-FAC refitted in the "
        "projected space).",
        markdown_table(wide),
        "The worst task's ρ per rank: "
        + ", ".join(f"r = {r}: {format_number(v)}" for r, v in safe.worst.items())
        + f". {verdict}",
    )
    w.figure("projection", "Projected against unprojected influence: Spearman ρ per task.")


def _compute_section(w: _Writer, inputs: ReportInputs) -> None:
    summary = _read_csv(inputs.compute, "compute table")
    components = _read_csv(inputs.compute_components, "compute components table")
    shown = summary.assign(method=summary["method"].map(method_label)).set_index("method")
    w.add(
        "## Compute",
        "Table: tokens processed and FLOPs spent to determine each mixture (forward 2·N, "
        "gradient pass 6·N FLOPs per token, 9·n³ per symmetric eigendecomposition); "
        "*Recommendation pilots*, where present, is the pilot training that chose among them.",
        markdown_table(shown),
        "Table: the same by component.",
        markdown_table(components, index=False),
        f"For scale, the paper ({paper.billions(paper.MODEL_PARAMETERS)} model) reports "
        + ", ".join(f"{method_label(m)} {v:.2g}" for m, v in paper.MIXTURE_FLOPS.items())
        + " FLOPs.",
    )
    w.figure("compute", "FLOPs to determine each mixture.")


def _mean_std(mean: float, std: float, bold: bool) -> str:
    """``mean ± std`` (std to 2 significant digits; no ``±`` with one seed), bold if ``bold``."""
    text = format_number(mean)
    if not math.isnan(std):
        text += f" ± {std:.2g}"
    return f"**{text}**" if bold else text


def _wide_table(table: pd.DataFrame, methods: list[str], row_label) -> pd.DataFrame:
    """Rows (task, metric) of the long table 1, columns methods, cells "mean ± std"."""
    cells: dict[str, dict[str, str]] = {}
    for (metric, task), group in table.groupby(["metric", "task"], sort=False):
        by_method = group.set_index("method")
        cells[row_label(task, metric)] = {
            method_label(m): _mean_std(
                by_method.loc[m, "mean"], by_method.loc[m, "std"], bool(by_method.loc[m, "best"])
            )
            for m in methods
        }
    wide = pd.DataFrame.from_dict(cells, orient="index")
    wide.index.name = "task"
    return wide


def _evaluation_section(
    w: _Writer,
    files: EvaluationFiles,
    compute: pd.DataFrame | None = None,
    recommended: str | None = None,
) -> None:
    table = _read_csv(files.table, "stage-2 evaluation table")
    summary = _read_csv(files.summary, "stage-2 summary").set_index("method")
    points = _read_csv(files.figure4, "figure-4 table").set_index("method")
    stats = _read_json(files.figure4_stats)
    methods = _ordered_methods(list(dict.fromkeys(table["method"])))
    seeds = sorted(set(summary["n_seeds"]))
    seed_text = " or ".join(str(n) for n in seeds)
    w.add(
        "## Stage-2 evaluation",
        "Every mixture continues the evaluation checkpoint for the same tokens with the same "
        f"seeds ({seed_text} per mixture); the evaluation half of each task (see *Validation "
        "tasks*) is then measured. Cells are the mean ± "
        "sample standard deviation over seeds (no ± with a single seed); the best value of each "
        "row is **bold** (ties all bold).",
    )
    loss = table[table["metric"] == "loss"]
    wide = _wide_table(loss, methods, lambda task, _metric: task)
    labels = [method_label(m) for m in methods]
    if recommended in methods:
        recommended_label = f"{method_label(recommended)} (recommended)"
        wide = wide.rename(columns={method_label(recommended): recommended_label})
        labels = [recommended_label if m == recommended else method_label(m) for m in methods]
    wide.loc["best on (loss)"] = [summary.loc[m, "best_on_text"] for m in methods]
    wide.loc["FLOPs to determine the mixture"] = [
        format_number(summary.loc[m, "mixture_flops"]) for m in methods
    ]
    w.add(
        "Table: validation loss (mean per-token cross-entropy, nats; lower is better) per task "
        f"after stage 2, the analogue of the paper's table 1. `{AVERAGE}` is the mean over "
        "tasks; *best on* counts the tasks where a method has the lowest loss; the FLOPs are "
        "the `total_compute` of each mixture file (everything spent to determine it, the "
        "influence matrix included).",
        markdown_table(wide[labels]),
    )
    accuracy = table[table["metric"] != "loss"]
    if not accuracy.empty:
        acc = _wide_table(accuracy, methods, lambda task, metric: f"{task} ({metric})")
        acc.columns = wide.columns
        w.add(
            "Table: accuracy of the multiple-choice tasks (fraction of items whose answer has "
            "the highest summed log-likelihood; `accuracy_norm` ranks by log-likelihood "
            "per token; higher is better).",
            markdown_table(acc[labels]),
        )
    best = lowest_average_loss(summary, methods)
    worse = all_worse_than_checkpoint(points, stats)
    if worse is not None:
        w.add(_all_worse_warning(worse))
    sentences = [
        f"{method_label(best.method)} has the lowest average loss "
        f"({format_number(best.average_loss)})"
        + (", i.e. it hurt the model least." if worse is not None else ".")
    ]
    flops = summary["mixture_flops"]
    ratio = flops_ratio(flops, "tikmix_d", "regmix")
    if ratio is not None:
        sentences.append(
            f"Determining TiKMiX-D's mixture cost {format_number(ratio.flops)} FLOPs, "
            f"{format_number(ratio.ratio)} times RegMix's {format_number(ratio.reference_flops)} "
            f"(the paper: {paper.MIXTURE_FLOPS['tikmix_d']:.2g} / "
            f"{paper.MIXTURE_FLOPS['regmix']:.2g} = {paper.TIKMIX_D_TO_REGMIX_FLOPS:.2f})."
        )
    if compute is not None:
        sentences += [
            f"**Warning:** {method_label(d.method)}'s mixture file records "
            f"{format_number(d.mixture_file)} FLOPs but the compute table sums "
            f"{format_number(d.compute_table)} from the job records; one of the two accounts "
            "misses a component."
            for d in flops_disagreements(flops, compute)
        ]
    w.add(" ".join(sentences))
    _paired_part(w, files, recommended)
    _figure4_part(w, points, stats)


def _paired_part(w: _Writer, files: EvaluationFiles, recommended: str | None) -> None:
    """Each method against the best baseline, paired by seed, and what this study can detect."""
    paired = _read_csv(files.paired, "paired comparisons").set_index("method")
    stats = _read_json(files.paired_stats)
    if stats["reference"] is None:
        w.add(
            "No baseline (`continue`, natural or uniform) was evaluated in stage 2, so no method "
            "is compared with doing nothing."
        )
        return
    reference = method_label(stats["reference"])
    shown = pd.DataFrame(
        {
            "method": [
                method_label(m) + (" (recommended)" if m == recommended else "")
                for m in paired.index
            ],
            "Δ average loss (nats)": paired["mean_difference"].map(format_number),
            "SE": paired["se"].map(format_number),
            "one-sided 95% bounds": [
                f"[{format_number(low)}, {format_number(up)}]"
                for low, up in zip(paired["lower_95"], paired["upper_95"], strict=True)
            ],
            "verdict": paired["verdict"],
        }
    ).set_index("method")
    n = int(stats["n_seeds"])
    sentences = [
        f"Table: each method's average loss minus {reference}'s (the best of the baselines "
        "`continue`, natural and uniform), paired by seed (seed *s* of every mixture shares the "
        f"run's seed), mean over {spelled(n)} seeds with its standard error and one-sided 95% "
        "bounds (lower, upper). Negative is better: *better* needs the upper bound below 0, *worse* "
        "the lower bound above 0, otherwise it is a *tie*; *same mixture* marks the reference's own "
        "mixture under another name (left out of σ)."
    ]
    if math.isfinite(stats["mde"]):
        sentences.append(
            f"The pooled SD of the paired differences is σ = {format_number(stats['sigma'])} "
            f"nats, so with {spelled(n)} seeds the minimum detectable effect (one-sided 5% test, "
            f"80% power) is {format_number(stats['mde'])} nats: a true difference smaller than "
            "that is likely to read as a tie."
        )
    else:
        sentences.append("With fewer than two seeds no difference can be tested.")
    w.add(" ".join(sentences), markdown_table(shown))
    if recommended in paired.index and paired.at[recommended, "verdict"] != SAME_MIXTURE:
        row = paired.loc[recommended]
        if not math.isfinite(row["se"]):
            verdict = "with one seed, not a difference that can be tested."
        elif row["mean_difference"] <= row["se"]:
            verdict = "not worse beyond one standard error."
        else:
            verdict = "**worse than the baseline by more than one standard error**."
        w.add(
            f"The recommended mixture, {method_label(recommended)}, measured on the evaluation "
            f"half: {format_number(row['mean_difference'])} ± {format_number(row['se'])} nats "
            f"against {reference}, {verdict}"
        )
    elif recommended is not None:
        w.add(
            f"The recommended mixture, {method_label(recommended)}, is the mixture of the "
            f"reference, {reference}, so it has no difference to test."
            if recommended == stats["reference"] or recommended in paired.index
            else f"The recommended mixture, {method_label(recommended)}, was not evaluated in "
            "stage 2."
        )


def _all_worse_warning(worse: AllWorse) -> str:
    """A plain warning that every method's stage-2 run ended worse than its checkpoint."""
    return (
        "**Every stage-2 run ended worse than the checkpoint it continued**: the average task "
        f"loss rose by {format_number(worse.least_rise)} to {format_number(worse.most_rise)} "
        "nats. No mixture "
        "improved the model, so the table below ranks mixtures by how little they hurt, not by "
        "how much they help. The likely cause is the continued training, not the mixtures: a "
        "learning rate too high for this checkpoint (`stage2.lr`) and AdamW moments restarted "
        "from zero (a Hugging Face checkpoint has no `optimizer.pt`) push a converged model out "
        "of its minimum. Continue near the checkpoint's final pre-training learning rate "
        "(about 1e-5 to 1e-4) with a longer warm-up (`stage2.warmup_fraction`), as in "
        "`config/examples/user.yaml`, or give more stage-2 tokens."
    )


def _figure4_part(w: _Writer, points: pd.DataFrame, stats: Mapping) -> None:
    reference = stats["reference"]
    against = (
        "the checkpoint's average loss before stage 2"
        if reference == "checkpoint"
        else f"{method_label(reference)}'s average loss"
    )
    shown = pd.DataFrame(
        {
            "mixture": [method_label(m) for m in points.index],
            "kind": points["kind"],
            "predicted Σ_v P̂_v": points["predicted_benefit"],
            "improvement (nats)": [
                _mean_std(m, s, False)
                for m, s in zip(points["improvement_mean"], points["improvement_std"], strict=True)
            ],
            "seeds": points["n_seeds"],
        }
    )
    n_random = int((points["kind"] == RANDOM).sum())
    w.add(
        "### Predicted benefit and measured improvement (figure 4)",
        "Table: each evaluated mixture's predicted total benefit Σ_v P̂_v(w) (the normalised "
        "benefit of eq. 6 summed over tasks, from the influence matrix of the evaluation "
        f"checkpoint; larger is better) and its measured improvement ({against} minus the "
        f"mixture's, mean ± std over seeds; larger is better). The {n_random} random mixtures "
        "(Dirichlet(1) draws) are evaluated like the methods but are not rows of table 1.",
        markdown_table(shown, index=False),
    )
    if math.isnan(stats["pearson"]):
        w.add(
            f"Pearson ρ is undefined for these {stats['n_mixtures']} mixtures (fewer than three, "
            f"or no spread on an axis); the paper reports ρ = {paper.FIGURE4_PEARSON}."
        )
    else:
        w.add(
            f"Over the {stats['n_mixtures']} mixtures, the Pearson correlation between predicted "
            f"benefit and measured improvement is ρ = {format_number(stats['pearson'])} "
            f"(p = {stats['p_value']:.2g}); the paper reports ρ = {paper.FIGURE4_PEARSON} over "
            f"{spelled(paper.FIGURE4_MIXTURES)} mixtures of a "
            f"{paper.billions(paper.MODEL_PARAMETERS)} model trained on "
            f"{paper.billions(paper.FIGURE4_TOKENS)} tokens."
        )
    w.figure(
        "evaluation",
        "Predicted total benefit against measured improvement, one point per mixture, with the "
        "OLS line and Pearson ρ.",
    )


#: What each optional part of the study is, and the config setting that leaves it out.
NOT_RUN = {
    "additivity": (
        "Additivity check (appendix D)",
        "`checks.additivity.enabled: false`",
    ),
    "ranking": (
        "Ranking-invariance check and the influence heatmaps",
        "`checks.ranking.enabled: false`",
    ),
    "projection": ("Gradient-projection check", "`checks.projection.ranks: []`"),
    "evaluation": (
        "Stage-2 evaluation (no mixture was trained on, so no method is ranked by measured "
        "improvement)",
        "`stage2.methods: []`",
    ),
}


def not_run(inputs: ReportInputs) -> list[str]:
    """The optional parts (keys of :data:`NOT_RUN`) the study's config left out."""
    given = {
        "additivity": bool(inputs.additivity),
        "ranking": inputs.ranking is not None,
        "projection": inputs.projection is not None,
        "evaluation": inputs.evaluation is not None,
    }
    return [part for part in NOT_RUN if not given[part]]


def _not_run_section(w: _Writer, inputs: ReportInputs) -> None:
    parts = not_run(inputs)
    if not parts:
        return
    rows = pd.DataFrame([NOT_RUN[part] for part in parts], columns=["not run", "because of"])
    w.add(
        "## Not run",
        "This study's config switched these parts off; nothing above depends on them.",
        markdown_table(rows, index=False),
    )


def write_report(path: str | Path, inputs: ReportInputs) -> Path:
    """Write the Markdown report to ``path`` (atomically) and return it.

    Raises:
        FileNotFoundError: a required result file is missing (the message names it).
        MixtureInputError: an influence matrix or mixture file is malformed.
    """
    path = Path(path)
    if inputs.mixture_checkpoint not in inputs.influence:
        raise ValueError(
            f"mixture checkpoint {inputs.mixture_checkpoint!r} has no influence matrix; "
            f"checkpoints: {list(inputs.influence)}"
        )
    matrices = {c: read_influence_matrix(p) for c, p in inputs.influence.items()}
    positions = checkpoint_positions({c: inputs.checkpoint_dirs[c] for c in inputs.influence})
    B = matrices[inputs.mixture_checkpoint]
    w = _Writer(path.parent, inputs.figures)
    w.add(
        "# TiKMiX results",
        "Group influence of each training domain on each validation task, the mixtures derived "
        "from it, checks of the assumptions behind them, and their cost. " + SIGN_NOTE,
    )
    _setup_section(w, inputs, B, positions)
    _tasks_section(w, inputs.task_splits)
    _influence_section(w, inputs, matrices)
    tikmix_m = (
        surrogate_verdict(_read_json(Path(inputs.mixtures["tikmix_m"]))["solver"])
        if "tikmix_m" in inputs.mixtures
        else None
    )
    if inputs.recommendation is not None:
        recommendation = read_recommendation(inputs.recommendation)
    elif tikmix_m is not None:
        recommendation = recommend_from_proxy(
            _read_json(Path(inputs.mixtures["tikmix_m"])),
            {m: read_mixture(path).to_dict() for m, path in inputs.mixtures.items()},
        )
    else:
        recommendation = None
    _mixture_section(w, inputs, B, tikmix_m, recommendation)
    recommended = recommendation.method if recommendation is not None else None
    if inputs.additivity:
        _additivity_section(w, inputs)
    if inputs.ranking is not None:
        _ranking_section(w, inputs)
    if inputs.projection is not None:
        _projection_section(w, inputs.projection)
    _compute_section(w, inputs)
    if inputs.evaluation is not None:
        compute = _read_csv(inputs.compute, "compute table")
        _evaluation_section(w, inputs.evaluation, compute, recommended)
    _not_run_section(w, inputs)
    write_text_atomic(path, w.text())
    return path


def report_job(
    *,
    report: str | Path,
    influence: Sequence[str | Path],
    mixtures: Sequence[str | Path],
    additivity: Sequence[str | Path],
    ranking: Sequence[str | Path],
    projection: Sequence[str | Path],
    compute: str | Path,
    compute_components: str | Path,
    task_splits: Sequence[str | Path],
    tasks: Sequence[str],
    checkpoints: Sequence[str],
    checkpoint_dirs: Mapping[str, str | Path],
    mixture_checkpoint: str,
    methods: Sequence[str],
    figures: Mapping[str, Sequence[str | Path]],
    stage1_metrics: str | Path | None,
    evaluation: Mapping[str, str | Path] | None,
    recommendation: str | Path | None = None,
) -> Path:
    """Rule ``report``: :func:`write_report`. ``influence`` is in the order of
    ``checkpoints``, ``mixtures`` of ``methods``; ``additivity``, ``ranking`` and
    ``projection`` are empty when their check is switched off (``additivity`` holds the
    summary of ``mixture_checkpoint``); ``task_splits`` is in the order of ``tasks``;
    ``evaluation`` maps the keys of
    :class:`EvaluationFiles` to files, empty without stage 2."""
    return write_report(
        report,
        ReportInputs(
            influence=dict(zip(checkpoints, influence, strict=True)),
            checkpoint_dirs=dict(checkpoint_dirs),
            mixture_checkpoint=mixture_checkpoint,
            mixtures=dict(zip(methods, mixtures, strict=True)),
            additivity=dict(zip([mixture_checkpoint], additivity, strict=False)),
            ranking=ranking[0] if ranking else None,
            compute=compute,
            compute_components=compute_components,
            task_splits=dict(zip(tasks, task_splits, strict=True)),
            figures=dict(figures),
            stage1_metrics=stage1_metrics,
            evaluation=EvaluationFiles(**evaluation) if evaluation else None,
            projection=projection[0] if projection else None,
            recommendation=recommendation,
        ),
    )
