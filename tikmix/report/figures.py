"""Paper-style figures: influence heatmaps and trajectories, additivity scatters, mixtures, compute.

Every function draws one figure from tidy tables (as written by :mod:`tikmix.analysis`) and saves
it as PNG (200 dpi) and PDF next to each other with :func:`save_figure`; it returns the written
paths. Influence figures state the sign convention
(:data:`tikmix.core.conventions.SIGN_CONVENTION`) on an axis or the colour bar, since a reader
meets figures out of context.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import TwoSlopeNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from tikmix.analysis.ranking import TOKENS_AXIS  # noqa: E402
from tikmix.core import paper  # noqa: E402
from tikmix.core.atomic import atomic_output  # noqa: E402
from tikmix.core.conventions import SIGN_CONVENTION  # noqa: E402
from tikmix.core.mixture import read_mixture  # noqa: E402

DPI = 200
#: 20 distinct qualitative colours; with 4 line styles and markers, 80 lines stay distinguishable.
_COLOURS = [
    plt.get_cmap("tab20")(i)
    for i in (0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19)
]
_LINESTYLES = ["-", "--", "-.", ":"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
_METHOD_LABELS = {
    "continue": "Continue stage 1",
    "natural": "Natural",
    "uniform": "Uniform",
    "tikmix_d": "TiKMiX-D",
    "tikmix_m": "TiKMiX-M",
    "tikmix_c": "tikmix_c",
    "regmix": "RegMix",
    "doremi": "DoReMi",
    # not a mixture: the pilot training that chose among them (tikmix.analysis.recommendation)
    "recommendation": "Recommendation pilots",
}


def method_label(method: str) -> str:
    """Display name of a mixture method (``tikmix_d`` → ``TiKMiX-D``)."""
    return _METHOD_LABELS.get(method, method)


def line_styles(n: int) -> list[dict]:
    """``n`` distinct (colour, line style, marker) combinations for line plots."""
    combos = itertools.cycle((c, ls) for ls in _LINESTYLES for c in _COLOURS)
    return [
        {"color": c, "linestyle": ls, "marker": _MARKERS[i % len(_MARKERS)]}
        for i, (c, ls) in zip(range(n), combos, strict=False)
    ]


def save_figure(fig: Figure, stem: str | Path) -> list[Path]:
    """Save ``fig`` as ``{stem}.png`` (200 dpi) and ``{stem}.pdf``; close it; return the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf")]
    for path in paths:
        with atomic_output(path, suffix=path.suffix) as tmp:
            fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format=path.suffix[1:])
    plt.close(fig)
    return paths


def _format_tokens(x: float, _pos=None) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:g}{unit}"
    return f"{x:g}"


def influence_heatmap(
    matrix: pd.DataFrame, stem: str | Path, *, title: str, annotate: bool = True
) -> list[Path]:
    """Heatmap of a benefit matrix (rows tasks, columns domains), diverging and centred at 0."""
    values = matrix.to_numpy(dtype=float)
    limit = float(np.nanmax(np.abs(values))) or 1.0
    n_tasks, n_domains = values.shape
    fig, ax = plt.subplots(
        figsize=(max(6.0, 0.75 * n_domains + 2.5), max(2.8, 0.6 * n_tasks + 1.8))
    )
    image = ax.imshow(
        values, cmap="RdBu", norm=TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit), aspect="auto"
    )
    ax.set_xticks(range(n_domains), matrix.columns, rotation=45, ha="right")
    ax.set_yticks(range(n_tasks), matrix.index)
    ax.set_xlabel("training domain")
    ax.set_ylabel("validation task")
    ax.set_title(title)
    if annotate:
        for i, j in itertools.product(range(n_tasks), range(n_domains)):
            v = values[i, j]
            ax.text(
                j,
                i,
                f"{v:.2g}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if abs(v) > 0.6 * limit else "black",
            )
    bar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    bar.set_label(SIGN_CONVENTION)
    fig.tight_layout()
    return save_figure(fig, stem)


def benefit_trajectories_figure(
    trajectories: pd.DataFrame, stem: str | Path, *, title: str
) -> list[Path]:
    """Benefit of every domain over training, one panel per task (paper figs. 3, 5–12).

    ``trajectories`` is :func:`tikmix.analysis.ranking.benefit_trajectories`'s table; its
    ``attrs["axis_label"]`` labels the x axis. One legend, outside the panels, for all.
    """
    tasks = list(dict.fromkeys(trajectories["task"]))
    domains = list(dict.fromkeys(trajectories["domain"]))
    axis_label = trajectories.attrs.get("axis_label", TOKENS_AXIS)
    n_cols = min(2, len(tasks))
    n_rows = math.ceil(len(tasks) / n_cols)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(5.2 * n_cols + 2.4, 3.4 * n_rows), squeeze=False
    )
    styles = dict(zip(domains, line_styles(len(domains)), strict=True))
    for ax, task in zip(axes.flat, tasks, strict=False):
        part = trajectories[trajectories["task"] == task]
        for domain in domains:
            line = part[part["domain"] == domain].sort_values("order")
            ax.plot(
                line["position"],
                line["benefit"],
                label=domain,
                markersize=4,
                linewidth=1.3,
                **styles[domain],
            )
        ax.axhline(0.0, color="0.5", linewidth=0.8)
        ax.set_title(task)
        ax.set_ylabel(SIGN_CONVENTION, fontsize=8)
        ax.set_xlabel(axis_label)
        ax.grid(alpha=0.3)
        if axis_label == TOKENS_AXIS:
            ax.xaxis.set_major_formatter(_format_tokens)
        else:
            ax.set_xticks(sorted(part["position"].unique()))
    for ax in axes.flat[len(tasks) :]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        title="domain",
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        fontsize=8,
        ncol=1 if len(domains) <= 20 else 2,
    )
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, stem)


def additivity_scatter(
    points: pd.DataFrame, summary: Mapping, stem: str | Path, *, title: str
) -> list[Path]:
    """Direct against predicted benefit of the perturbed mixtures of one task (paper fig. 13).

    ``points`` are one task's rows of the additivity table (``predicted, direct, fitted,
    outlier``); ``summary`` its summary row (``pearson_r, pearson_p, slope, intercept,
    n_outliers``). Draws y = x, the OLS fit and flagged outliers (kept in every statistic).
    """
    x = points["predicted"].to_numpy(dtype=float)
    y = points["direct"].to_numpy(dtype=float)
    outlier = points["outlier"].to_numpy(dtype=bool)
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    ax.scatter(x[~outlier], y[~outlier], s=14, alpha=0.7, color="tab:blue", label="mixture")
    if outlier.any():
        ax.scatter(
            x[outlier],
            y[outlier],
            s=40,
            marker="x",
            color="tab:red",
            label=f"flagged outlier (|t| > threshold), kept: {int(outlier.sum())}",
        )
    lo = float(min(x.min(), y.min()))
    hi = float(max(x.max(), y.max()))
    pad = 0.05 * (hi - lo or 1.0)
    grid = np.array([lo - pad, hi + pad])
    ax.plot(grid, grid, color="0.4", linestyle="--", linewidth=1, label="y = x")
    ax.plot(
        grid,
        summary["intercept"] + summary["slope"] * grid,
        color="tab:orange",
        linewidth=1.6,
        label=f"OLS fit: slope {summary['slope']:.3g}, intercept {summary['intercept']:.2g}",
    )
    ax.set_xlabel("predicted benefit Σ_d w_d B[v, d]")
    ax.set_ylabel("direct benefit of a sampled mixture")
    # Benefits are small numbers: few ticks and a shared ×10ⁿ offset keep the labels apart.
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(6))
    ax.ticklabel_format(style="sci", scilimits=(-2, 3))
    ax.set_title(
        f"{title}\nPearson r = {summary['pearson_r']:.3f}, p = {summary['pearson_p']:.2g}"
        f" (n = {len(x)})",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    ax.text(
        0.99,
        0.01,
        SIGN_CONVENTION,
        transform=ax.transAxes,
        ha="right",
        va="bottom",
        fontsize=7,
        color="0.3",
    )
    fig.tight_layout()
    return save_figure(fig, stem)


def _method_bars(ax, table: pd.DataFrame) -> np.ndarray:
    """Grouped bars on ``ax``: one group per column of ``table``, one bar per method (row).

    Returns the groups' centres on the x axis.
    """
    methods = list(table.index)
    width = 0.8 / len(methods)
    centres = np.arange(len(table.columns))
    for k, method in enumerate(methods):
        ax.bar(
            centres - 0.4 + (k + 0.5) * width,
            table.loc[method].to_numpy(dtype=float),
            width,
            label=method_label(method),
            color=_COLOURS[k % len(_COLOURS)],
        )
    return centres


def mixture_bars(weights: pd.DataFrame, stem: str | Path, *, title: str) -> list[Path]:
    """Grouped bars: one group per domain, one bar per method (rows of ``weights``)."""
    methods, domains = list(weights.index), list(weights.columns)
    fig, ax = plt.subplots(
        figsize=(min(14.0, max(6.5, 0.22 * len(domains) * len(methods) + 3)), 4.2)
    )
    centres = _method_bars(ax, weights)
    ax.set_xticks(centres, domains, rotation=45, ha="right")
    ax.set_xlabel("domain")
    ax.set_ylabel("mixture weight (fraction of stage tokens)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="mixture", fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return save_figure(fig, stem)


def predicted_benefit_bars(predicted: pd.DataFrame, stem: str | Path, *, title: str) -> list[Path]:
    """Grouped bars of each mixture's predicted benefit ``B·w`` per task (rows methods)."""
    tasks = list(predicted.columns)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(tasks) + 3), 4.0))
    centres = _method_bars(ax, predicted)
    ax.axhline(0.0, color="0.4", linewidth=0.8)
    ax.set_xticks(centres, tasks, rotation=30, ha="right")
    ax.set_xlabel("validation task")
    ax.set_ylabel("predicted benefit B·w\n(" + SIGN_CONVENTION + ")", fontsize=9)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="mixture", fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return save_figure(fig, stem)


def compute_bars(summary: pd.DataFrame, stem: str | Path, *, title: str) -> list[Path]:
    """FLOPs spent to determine each mixture (log scale); methods that cost nothing say so."""
    table = summary.set_index("method")
    flops = table["flops"].to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(table) + 2), 3.8))
    centres = np.arange(len(table))
    ax.bar(
        centres,
        np.where(flops > 0, flops, np.nan),
        color=[_COLOURS[k % len(_COLOURS)] for k in range(len(table))],
    )
    if (flops > 0).any():
        # A log axis from a decade below the cheapest method: every bar's height is visible.
        positive = flops[flops > 0]
        ax.set_yscale("log")
        ax.set_ylim(10 ** (math.floor(math.log10(positive.min())) - 1), positive.max() * 4)
    on_axis = blended_transform_factory(ax.transData, ax.transAxes)
    for k, value in enumerate(flops):
        if value > 0:
            ax.text(k, value, f"{value:.2g}", ha="center", va="bottom", fontsize=8)
        else:
            ax.text(
                k,
                0.02,
                "0\n(no computation)",
                ha="center",
                va="bottom",
                fontsize=8,
                transform=on_axis,
            )
    ax.set_xticks(centres, [method_label(m) for m in table.index])
    ax.set_xlim(-0.6, len(table) - 0.4)  # zero-cost bars are NaN and would not widen the axis
    ax.set_ylabel("FLOPs to determine the mixture")
    ax.set_xlabel("mixture method")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, stem)


def additivity_figures(
    points: pd.DataFrame,
    summary: pd.DataFrame,
    stems: Mapping[str, str | Path],
    *,
    checkpoint: str,
) -> list[Path]:
    """One :func:`additivity_scatter` per task of ``stems`` (task → output stem)."""
    rows = summary.set_index("task")
    paths = []
    for task, stem in stems.items():
        paths += additivity_scatter(
            points[points["task"] == task],
            rows.loc[task],
            stem,
            title=f"Additivity: {task} at checkpoint {checkpoint}",
        )
    return paths


def mixture_figures(
    B: pd.DataFrame,
    mixtures: Mapping[str, str | Path],
    *,
    weights_stem: str | Path,
    benefit_stem: str | Path,
    checkpoint: str,
) -> list[Path]:
    """Mixture weights per domain and each mixture's predicted benefit ``B·w`` per task.

    ``mixtures`` maps method → mixture file (any format :func:`read_mixture` reads) over ``B``'s
    domains.
    """
    weights = pd.DataFrame({m: read_mixture(path, B.columns) for m, path in mixtures.items()}).T
    predicted = weights @ B.T
    return mixture_bars(
        weights, weights_stem, title=f"Mixtures determined at checkpoint {checkpoint}"
    ) + predicted_benefit_bars(
        predicted,
        benefit_stem,
        title=f"Predicted benefit of each mixture (B at checkpoint {checkpoint})",
    )


def benefit_improvement_scatter(
    points: pd.DataFrame, stats: Mapping, stem: str | Path, *, title: str
) -> list[Path]:
    """Predicted total benefit against measured stage-2 improvement (paper figure 4).

    ``points`` and ``stats`` are :func:`tikmix.analysis.evaluation.benefit_vs_improvement`'s
    (indexed by mixture, with ``kind``, ``predicted_benefit``, ``improvement_mean`` and
    ``improvement_std``). Methods get a labelled marker each, random mixtures grey dots; error
    bars show the standard deviation over seeds where there are several. The legend gives
    Pearson ρ over all points next to the paper's.
    """
    fig, ax = plt.subplots(figsize=(6.0, 4.6))
    methods = points[points["kind"] != "random"]
    random = points[points["kind"] == "random"]
    for k, (method, row) in enumerate(methods.iterrows()):
        ax.errorbar(
            row["predicted_benefit"],
            row["improvement_mean"],
            yerr=None if math.isnan(row["improvement_std"]) else row["improvement_std"],
            fmt=_MARKERS[k % len(_MARKERS)],
            color=_COLOURS[k % len(_COLOURS)],
            markersize=8,
            capsize=3,
            label=method_label(str(method)),
        )
    if len(random):
        ax.errorbar(
            random["predicted_benefit"],
            random["improvement_mean"],
            yerr=None if random["improvement_std"].isna().all() else random["improvement_std"],
            fmt="o",
            color="0.55",
            markersize=5,
            capsize=2,
            label=f"random mixture, Dirichlet(1) ({len(random)})",
        )
    x = points["predicted_benefit"].to_numpy(dtype=float)
    y = points["improvement_mean"].to_numpy(dtype=float)
    pearson = stats.get("pearson", math.nan)
    if not math.isnan(pearson):
        slope, intercept = np.polyfit(x, y, 1)
        grid = np.linspace(x.min(), x.max(), 2)
        ax.plot(
            grid,
            intercept + slope * grid,
            color="0.3",
            linestyle="--",
            linewidth=1,
            label=f"OLS fit; Pearson ρ = {pearson:.3f}, p = {stats['p_value']:.2g} "
            f"(n = {len(points)}; paper: ρ = {paper.FIGURE4_PEARSON})",
        )
    else:
        # An invisible entry keeps the statistic in the legend, where the reader looks for it.
        ax.plot(
            [],
            [],
            " ",
            label=f"Pearson ρ undefined (n = {len(points)}; needs ≥ 3 points with spread)",
        )
    reference = stats.get("reference", "checkpoint")
    baseline = (
        "the checkpoint before stage 2"
        if reference == "checkpoint"
        else method_label(str(reference))
    )
    ax.set_xlabel(
        "predicted total benefit Σ_v P̂_v(w) (normalised, dimensionless)\n" + SIGN_CONVENTION
    )
    ax.set_ylabel(f"measured improvement: average loss decrease\nvs {baseline} (nats/token)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    # Outside the axes (after tight_layout, which would shrink the axes to make room for it);
    # save_figure's tight bounding box takes it in.
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return save_figure(fig, stem)


def projection_agreement_figure(
    table: pd.DataFrame, stem: str | Path, *, title: str, target: float
) -> list[Path]:
    """Spearman ρ of projected vs unprojected benefit rows against the projection rank, per task.

    ``table`` is :func:`tikmix.influence.api.projection_agreement`'s (``rank, task, spearman``).
    The rank axis is logarithmic (ranks are usually powers of two); ``target`` (the check's
    :data:`~tikmix.analysis.projection_agreement.AGREEMENT_TARGET`) is drawn as a dashed
    reference line.
    """
    tasks = list(dict.fromkeys(table["task"]))
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for task, style in zip(tasks, line_styles(len(tasks)), strict=True):
        line = table[table["task"] == task].sort_values("rank")
        ax.plot(line["rank"], line["spearman"], label=task, linewidth=1.4, **style)
    ranks = sorted(table["rank"].unique())
    ax.axhline(target, color="0.4", linestyle="--", linewidth=0.9, label=f"ρ = {target:g}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ranks, [str(r) for r in ranks])
    ax.set_xlabel("projection rank r (per layer: r × r, rank_out = rank_in = r)")
    ax.set_ylabel("Spearman ρ across domains\n(projected vs unprojected benefit)")
    ax.set_ylim(min(-0.05, float(table["spearman"].min()) - 0.05), 1.02)
    ax.grid(alpha=0.3)
    ax.legend(title="task", fontsize=8, loc="lower right")
    ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, stem)
