"""The results report: ``report.md``, a paper-style results section built from the result files.

Every number in the report is read from a result file the workflow wrote (influence matrices,
mixture documents, the additivity, ranking and compute tables, stage-1 metrics, the stage-2
evaluation table) and formatted with :func:`format_number`; nothing is typed in by hand except the
paper's own reported values, which are labelled as such. Figures are linked relative to the
report, so the ``results/report/`` folder can be moved or archived as a whole.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tikmix.analysis.additivity import PAPER_PEARSON_R, predicted_benefits
from tikmix.analysis.ranking import checkpoint_positions
from tikmix.data.atomic import atomic_output
from tikmix.mixing.exports import read_mixture
from tikmix.mixing.weights import read_influence_matrix
from tikmix.report.figures import method_label

SIGN_NOTE = (
    "Sign convention: the tables and figures show the **benefit** B = −I (the paper's influence "
    "with its sign flipped), so **larger is better**: a positive B[v, d] means that training "
    "more on domain d lowers the loss of task v."
)
#: The paper's FLOPs to determine each mixture (table 1), for scale.
PAPER_FLOPS = {"tikmix_d": 7.2e17, "tikmix_m": 3.2e18, "regmix": 3.7e18, "doremi": 4.2e19}
#: Order of the known methods in tables; other methods follow in the order given.
METHOD_ORDER = ["natural", "uniform", "tikmix_d", "tikmix_m", "regmix", "doremi"]


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


def _ordered_methods(methods: Sequence[str]) -> list[str]:
    known = [m for m in METHOD_ORDER if m in methods]
    return known + [m for m in methods if m not in known]


@dataclass
class ReportInputs:
    """The result files a report is built from.

    Attributes:
        influence: checkpoint → ``influence.csv``, in training order.
        checkpoint_dirs: checkpoint → directory (its ``tikmix.json`` places it in training).
        mixture_checkpoint: the checkpoint the mixtures were determined at.
        mixtures: method → canonical mixture JSON of ``mixture_checkpoint``.
        additivity: checkpoint → additivity summary CSV (one row per task).
        ranking: ranking-stability CSV (:func:`tikmix.analysis.ranking.ranking_stability`).
        compute: compute summary CSV; ``compute_components`` the per-component one.
        figures: section (``influence``, ``mixtures``, ``additivity``, ``ranking``,
            ``compute``) → PNG files to show in it.
        stage1_metrics: ``results/stage1/metrics.json`` when stage 1 ran (built-in model).
        evaluation: the stage-2 table (``results/evaluation/table.csv``); its section appears
            only when the file exists.
    """

    influence: dict[str, Path]
    checkpoint_dirs: dict[str, Path]
    mixture_checkpoint: str
    mixtures: dict[str, Path]
    additivity: dict[str, Path]
    ranking: Path
    compute: Path
    compute_components: Path
    figures: dict[str, list[Path]] = field(default_factory=dict)
    stage1_metrics: Path | None = None
    evaluation: Path | None = None


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
    if not Path(path).is_file():
        raise FileNotFoundError(f"result file not found: {path}")
    return json.loads(Path(path).read_text())


def _read_csv(path: Path, what: str) -> pd.DataFrame:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return pd.read_csv(path)


def _model_description(checkpoint: Path) -> str:
    config_path = Path(checkpoint) / "config.json"
    if not config_path.is_file():
        return f"checkpoint {checkpoint}"
    config = json.loads(config_path.read_text())
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


def _mixture_section(w: _Writer, inputs: ReportInputs, B: pd.DataFrame) -> pd.DataFrame:
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
    w.figure("mixtures", "Mixture weights per domain, and each mixture's predicted benefit B·w.")
    table = predicted.rename(index=method_label)
    w.add(
        "Table: predicted benefit B·w of each mixture per task, and its sum over tasks "
        "(the linear prediction TiKMiX-D maximises; larger is better).",
        markdown_table(table),
    )
    return predicted


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
        low, high = summary["pearson_r"].min(), summary["pearson_r"].max()
        w.add(
            f"Table: direct vs predicted benefit at checkpoint `{ckpt}`.",
            markdown_table(summary),
            f"Pearson r ranges from {format_number(low)} to {format_number(high)} over "
            f"{len(summary)} tasks, with {format_number(int(summary['n_outliers'].sum()))} "
            "flagged outlier(s) in total.",
        )
    paper = pd.DataFrame(
        {
            "benchmark": list(PAPER_PEARSON_R),
            "pearson_r (paper, appendix D)": list(PAPER_PEARSON_R.values()),
        }
    )
    w.add(
        "For reference, the paper reports (254 mixtures of 0.1B tokens, two outliers removed, "
        "p < 0.0001):",
        markdown_table(paper, index=False),
    )
    w.figure("additivity", "Direct against predicted benefit per task, y = x and the OLS fit.")


def _ranking_section(w: _Writer, inputs: ReportInputs) -> None:
    stability = _read_csv(inputs.ranking, "ranking stability table")
    w.add("## Ranking invariance over training")
    if stability.empty:
        w.add("A single checkpoint was analysed, so no ranking can be compared across training.")
    else:
        consecutive = stability[stability["comparison"] == "consecutive"]
        w.add(
            "Table: Spearman ρ and Kendall τ-b between the domain benefits of a task at two "
            "checkpoints (`consecutive`: each against the next; `final`: each against the last).",
            markdown_table(stability, index=False),
            "Between consecutive checkpoints the mean Spearman ρ over tasks is "
            f"{format_number(consecutive['spearman_rho'].mean())} and the mean Kendall τ "
            f"{format_number(consecutive['kendall_tau'].mean())}.",
        )
    w.figure("ranking", "Benefit of each domain over training, one panel per task.")


def _compute_section(w: _Writer, inputs: ReportInputs) -> None:
    summary = _read_csv(inputs.compute, "compute table")
    components = _read_csv(inputs.compute_components, "compute components table")
    shown = summary.assign(method=summary["method"].map(method_label)).set_index("method")
    w.add(
        "## Compute",
        "Table: tokens processed and FLOPs spent to determine each mixture (forward 2·N, "
        "gradient pass 6·N FLOPs per token, 9·n³ per symmetric eigendecomposition).",
        markdown_table(shown),
        "Table: the same by component.",
        markdown_table(components, index=False),
        "For scale, the paper (1B model) reports "
        + ", ".join(f"{method_label(m)} {v:.2g}" for m, v in PAPER_FLOPS.items())
        + " FLOPs.",
    )
    w.figure("compute", "FLOPs to determine each mixture.")


def _evaluation_section(w: _Writer, path: Path) -> None:
    table = pd.read_csv(path)
    w.add(
        "## Stage-2 evaluation",
        "Table: stage-2 results of each mixture (the analogue of the paper's table 1), as "
        f"written to `{path.name}`.",
        markdown_table(table, index=False),
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
    _influence_section(w, inputs, matrices)
    _mixture_section(w, inputs, B)
    _additivity_section(w, inputs)
    _ranking_section(w, inputs)
    _compute_section(w, inputs)
    if inputs.evaluation is not None and Path(inputs.evaluation).is_file():
        _evaluation_section(w, Path(inputs.evaluation))
    with atomic_output(path) as tmp:
        tmp.write_text(w.text())
    return path
