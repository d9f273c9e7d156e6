"""Ranking invariance: rank correlations against independent formulas, positions, trajectories."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tikmix.analysis.ranking import (
    ORDER_AXIS,
    TOKENS_AXIS,
    benefit_trajectories,
    checkpoint_positions,
    ranking_stability,
)
from tikmix.core.mixture import MixtureInputError

DOMAINS = [f"d{i}" for i in range(7)]


def _matrices(n_checkpoints=3, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(2, len(DOMAINS)))
    return {
        f"ck{k}": pd.DataFrame(
            base + 0.5 * k * rng.normal(size=base.shape), index=["arc", "mmlu"], columns=DOMAINS
        )
        for k in range(n_checkpoints)
    }


def _kendall_tau_b(x, y):
    """Kendall's τ-b by counting concordant and discordant pairs (no ties in this data)."""
    concordant = discordant = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        s = np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
        concordant += s > 0
        discordant += s < 0
    return (concordant - discordant) / (len(x) * (len(x) - 1) / 2)


def test_rank_correlations_match_independent_formulas():
    matrices = _matrices()
    table = ranking_stability(matrices)
    pairs = [
        ("consecutive", "ck0", "ck1"),
        ("consecutive", "ck1", "ck2"),
        ("final", "ck0", "ck2"),
        ("final", "ck1", "ck2"),
    ]
    assert (
        list(zip(table["comparison"], table["checkpoint_a"], table["checkpoint_b"], strict=True))
        == pairs * 2
    )
    for row in table.itertuples(index=False):
        x = matrices[row.checkpoint_a].loc[row.task].to_numpy()
        y = matrices[row.checkpoint_b].loc[row.task].to_numpy()
        ranks_x, ranks_y = stats.rankdata(x), stats.rankdata(y)
        assert row.spearman_rho == pytest.approx(np.corrcoef(ranks_x, ranks_y)[0, 1], rel=1e-12)
        assert row.kendall_tau == pytest.approx(_kendall_tau_b(x, y), rel=1e-12)
        assert row.spearman_p == pytest.approx(stats.spearmanr(x, y).pvalue, rel=1e-9)
        assert row.kendall_p == pytest.approx(stats.kendalltau(x, y).pvalue, rel=1e-9)
        assert row.n_domains == len(DOMAINS)


def test_identical_and_reversed_rankings_give_plus_and_minus_one():
    m = _matrices(1)["ck0"]
    table = ranking_stability({"a": m, "b": 2 * m + 1, "c": -m}).set_index(
        ["comparison", "checkpoint_a", "checkpoint_b", "task"]
    )
    assert table.loc[("consecutive", "a", "b", "arc"), "spearman_rho"] == pytest.approx(1.0)
    assert table.loc[("consecutive", "a", "b", "arc"), "kendall_tau"] == pytest.approx(1.0)
    assert table.loc[("final", "a", "c", "mmlu"), "kendall_tau"] == pytest.approx(-1.0)


def test_constant_benefits_give_nan_and_one_checkpoint_an_empty_table():
    m = _matrices(1)["ck0"]
    flat = m.copy()
    flat.loc["arc"] = 0.0
    table = ranking_stability({"a": m, "b": flat}).set_index("task")
    assert np.isnan(table.loc["arc", "spearman_rho"]).all()
    assert np.isfinite(table.loc["mmlu", "spearman_rho"]).all()
    assert ranking_stability({"a": m}).empty


def test_matrices_must_cover_the_same_tasks_and_domains():
    matrices = _matrices(2)
    matrices["ck1"] = matrices["ck1"].drop(columns="d3")
    with pytest.raises(MixtureInputError, match="'ck0' and 'ck1'"):
        ranking_stability(matrices)


def _checkpoint(tmp_path, name, tokens_seen):
    directory = tmp_path / name
    directory.mkdir()
    if tokens_seen is not None:
        (directory / "tikmix.json").write_text(
            json.dumps(
                {"format": "builtin", "step": tokens_seen // 100, "tokens_seen": tokens_seen}
            )
        )
    return directory


def test_positions_use_tokens_seen_or_fall_back_to_training_order(tmp_path):
    dirs = {n: _checkpoint(tmp_path, n, t) for n, t in [("a", 1000), ("b", 3000)]}
    positions = checkpoint_positions(dirs)
    assert positions["position"].tolist() == [1000, 3000]
    assert positions.attrs["axis_label"] == TOKENS_AXIS
    dirs["hf"] = _checkpoint(tmp_path, "hf", None)  # a user checkpoint without tikmix.json
    positions = checkpoint_positions(dirs)
    assert positions["position"].tolist() == [0, 1, 2]
    assert positions.attrs["axis_label"] == ORDER_AXIS
    with pytest.raises(ValueError, match="training order"):
        checkpoint_positions({"b": dirs["b"], "a": dirs["a"]})


def test_trajectories_hold_every_benefit_with_its_rank(tmp_path):
    matrices = _matrices(2)
    dirs = {n: _checkpoint(tmp_path, n, t) for n, t in [("ck0", 500), ("ck1", 900)]}
    table = benefit_trajectories(matrices, checkpoint_positions(dirs))
    assert len(table) == 2 * 2 * len(DOMAINS)
    row = table[(table["checkpoint"] == "ck1") & (table["task"] == "mmlu")].set_index("domain")
    assert row["benefit"].to_dict() == pytest.approx(matrices["ck1"].loc["mmlu"].to_dict())
    assert row["position"].unique().tolist() == [900]
    best = matrices["ck1"].loc["mmlu"].idxmax()
    assert row.loc[best, "rank"] == 1.0
    assert sorted(row["rank"]) == list(range(1, len(DOMAINS) + 1))
    assert table.attrs["axis_label"] == TOKENS_AXIS
