"""Figures: every figure function writes a non-empty PNG (at 200 dpi) and a PDF."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib import image

from tikmix.analysis.additivity import additivity_statistics
from tikmix.analysis.evaluation import benefit_vs_improvement
from tikmix.analysis.ranking import ORDER_AXIS, benefit_trajectories
from tikmix.core import paper
from tikmix.core.conventions import SIGN_CONVENTION
from tikmix.report import figures
from tikmix.report.figures import (
    additivity_scatter,
    benefit_improvement_scatter,
    benefit_trajectories_figure,
    compute_bars,
    influence_heatmap,
    line_styles,
    mixture_bars,
    predicted_benefit_bars,
)

DOMAINS = [f"genre_{i:02d}" for i in range(15)]
TASKS = ["mmlu", "trivia", "heldout_news", "heldout_fiction"]
rng = np.random.default_rng(0)


def _matrix(scale=1.0):
    return pd.DataFrame(
        scale * rng.normal(size=(len(TASKS), len(DOMAINS))), index=TASKS, columns=DOMAINS
    )


def _check(paths):
    png, pdf = paths
    assert png.suffix == ".png" and pdf.suffix == ".pdf"
    assert png.stat().st_size > 5000 and pdf.stat().st_size > 1000
    assert pdf.read_bytes().startswith(b"%PDF")
    assert image.imread(png).shape[0] > 400  # 200 dpi: a few inches give well over 400 pixels


def test_line_styles_are_distinct_for_many_domains():
    styles = line_styles(60)
    assert len({(s["color"], s["linestyle"]) for s in styles}) == 60


def test_influence_figures(tmp_path):
    _check(influence_heatmap(_matrix(1e-3), tmp_path / "heatmap", title="Benefit at ck"))
    positions = pd.DataFrame(
        {"checkpoint": ["a", "b", "c"], "order": [0, 1, 2], "position": [0, 1, 2]}
    )
    positions.attrs["axis_label"] = ORDER_AXIS
    table = benefit_trajectories({c: _matrix() for c in "abc"}, positions)
    _check(benefit_trajectories_figure(table, tmp_path / "trajectories", title="Benefit"))


def test_additivity_scatter_marks_outliers(tmp_path):
    x = rng.normal(size=50)
    y = x + 0.1 * rng.normal(size=50)
    y[3] += 2.0
    summary, points = additivity_statistics(pd.DataFrame({"arc": x}), pd.DataFrame({"arc": y}))
    assert points["outlier"].sum() >= 1
    _check(additivity_scatter(points, summary.iloc[0], tmp_path / "scatter", title="arc at ck"))


@pytest.mark.parametrize("n_methods", [1, 4])
def test_mixture_and_compute_figures(tmp_path, n_methods):
    methods = ["natural", "uniform", "tikmix_d", "tikmix_m"][:n_methods]
    weights = pd.DataFrame(
        rng.dirichlet(np.ones(len(DOMAINS)), size=n_methods), index=methods, columns=DOMAINS
    )
    _check(mixture_bars(weights, tmp_path / "weights", title="Mixtures"))
    predicted = weights @ _matrix().T
    _check(predicted_benefit_bars(predicted, tmp_path / "predicted", title="Predicted"))
    summary = pd.DataFrame(
        {"method": methods, "tokens": 0.0, "flops": [0.0, 3e9, 7e15, 3e16][:n_methods]}
    )
    _check(compute_bars(summary, tmp_path / "compute", title="Compute"))


def _stage2_record(method, seed, loss, weights):
    return {
        "method": method,
        "seed": seed,
        "weights": dict(zip(DOMAINS, weights, strict=True)),
        "tasks": {"mmlu": {"loss": loss}},
        "average_loss": loss,
        "before": {"average_loss": 3.0},
    }


@pytest.mark.parametrize("n_seeds", [1, 3])
def test_benefit_improvement_scatter_states_pearson_and_axes(tmp_path, monkeypatch, n_seeds):
    methods = ["natural", "uniform", "tikmix_d", "random0", "random1"]
    records = [
        _stage2_record(m, s, 2.5 - 0.1 * k + 0.01 * s, rng.dirichlet(np.ones(len(DOMAINS))))
        for k, m in enumerate(methods)
        for s in range(n_seeds)
    ]
    # Seeds of a mixture share its weights.
    for r in records:
        r["weights"] = records[methods.index(r["method"]) * n_seeds]["weights"]
    points, stats = benefit_vs_improvement(
        records, _matrix(), random_mixtures={"random0", "random1"}
    )
    drawn = []
    save = figures.save_figure
    monkeypatch.setattr(
        figures, "save_figure", lambda fig, stem: drawn.append(fig) or save(fig, stem)
    )
    _check(benefit_improvement_scatter(points, stats, tmp_path / "figure4", title="Figure 4"))
    ax = drawn[0].axes[0]
    legend = [t.get_text() for t in drawn[0].legends[0].get_texts()]
    # Matplotlib lists the fit line first, then the points in drawing order.
    assert legend[1:] == [
        "Natural",
        "Uniform",
        "TiKMiX-D",
        "random mixture, Dirichlet(1) (2)",
    ]
    assert f"Pearson ρ = {stats['pearson']:.3f}" in legend[0]
    assert f"paper: ρ = {paper.FIGURE4_PEARSON}" in legend[0]
    assert "nats/token" in ax.get_ylabel() and "Σ_v P̂_v" in ax.get_xlabel()
    assert SIGN_CONVENTION in ax.get_xlabel()


def test_benefit_improvement_scatter_without_a_correlation(tmp_path):
    records = [_stage2_record("natural", 0, 2.5, np.ones(len(DOMAINS)) / len(DOMAINS))]
    points, stats = benefit_vs_improvement(records, _matrix())
    _check(benefit_improvement_scatter(points, stats, tmp_path / "figure4", title="Figure 4"))
