"""The analysis verdicts the report renders, tested directly: thresholds and edge cases."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tikmix.analysis.additivity import additivity_overview
from tikmix.analysis.compute import FlopsDisagreement, flops_disagreements, flops_ratio
from tikmix.analysis.evaluation import (
    METHOD,
    RANDOM,
    AllWorse,
    all_worse_than_checkpoint,
    lowest_average_loss,
    surrogate_verdict,
)
from tikmix.analysis.projection_agreement import AGREEMENT_TARGET, safe_projection_rank
from tikmix.analysis.ranking import consecutive_agreement
from tikmix.core import paper


def _agreement(worst: dict[int, float]) -> pd.DataFrame:
    """An agreement table whose worst task at each rank has the given ρ (NaN: every task's)."""
    rows = []
    for rank, rho in worst.items():
        rows += [{"rank": rank, "task": "a", "spearman": rho}]
        rows += [{"rank": rank, "task": "b", "spearman": rho if math.isnan(rho) else 1.0}]
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    ("worst", "safe"),
    [
        ({8: 0.5, 16: 0.95, 32: 0.97}, 16),
        ({8: 0.91, 16: 0.95}, 8),
        # exactly the target, computed as a ratio of integers just below it, keeps it
        ({8: 0.5, 16: 0.8999999999999999}, 16),
        # a rank that keeps the target below a larger one that does not is not safe
        ({8: 0.95, 16: 0.5, 32: 0.97}, 32),
        ({8: 0.95, 16: 0.5}, None),
        # a rank where no task's ρ is defined does not keep the target
        ({8: 0.95, 16: math.nan, 32: 0.97}, 32),
        ({8: 0.95, 16: math.nan}, None),
    ],
)
def test_safe_projection_rank(worst, safe):
    verdict = safe_projection_rank(_agreement(worst))
    assert verdict.safe_rank == safe and verdict.target == AGREEMENT_TARGET
    assert list(verdict.worst.index) == sorted(worst)
    np.testing.assert_array_equal(verdict.worst.to_numpy(), [worst[r] for r in sorted(worst)])


def test_safe_projection_rank_passes_over_a_single_undefined_task():
    table = _agreement({8: 0.95, 16: 0.97})
    table.loc[(table["rank"] == 8) & (table["task"] == "a"), "spearman"] = math.nan
    verdict = safe_projection_rank(table)
    assert verdict.safe_rank == 8 and verdict.worst[8] == 1.0


def test_safe_projection_rank_of_an_empty_table_and_another_target():
    empty = pd.DataFrame(columns=["rank", "task", "spearman"])
    assert safe_projection_rank(empty).safe_rank is None
    assert safe_projection_rank(_agreement({8: 0.85, 16: 0.9}), target=0.8).safe_rank == 8


def test_flops_disagreements_above_one_percent_only():
    compute = pd.DataFrame({"method": ["a", "b", "c", "d"], "flops": [100.0, 100.0, 0.0, 5.0]})
    flops = pd.Series({"a": 101.0, "b": 101.5, "c": 0.0, "d": math.nan, "e": 7.0})
    # a: 1% exactly (not more), c: both zero, d: unknown, e: not in the compute table
    assert flops_disagreements(flops, compute) == [FlopsDisagreement("b", 101.5, 100.0)]
    assert [d.method for d in flops_disagreements(flops, compute, tolerance=0.001)] == ["a", "b"]


def test_flops_ratio():
    ratio = flops_ratio(pd.Series({"tikmix_d": 2.0, "regmix": 8.0}))
    assert (ratio.method, ratio.reference, ratio.ratio) == ("tikmix_d", "regmix", 0.25)
    assert flops_ratio(pd.Series({"tikmix_d": 2.0, "regmix": 0.0})) is None
    assert flops_ratio(pd.Series({"tikmix_d": 2.0, "regmix": math.nan})) is None
    assert flops_ratio(pd.Series({"tikmix_d": 2.0})) is None


def _solver(chosen: str = "proposal", passed: bool = True, spearman=0.8) -> dict:
    return {
        "surrogate_quality": {
            "spearman": spearman,
            "pearson": 0.7,
            "rmse": 0.01,
            "n_samples": 64,
            "n_folds": 5,
        },
        "surrogate": "lightgbm",
        "linear_cv_r2": 0.5,
        "linear_r2_threshold": 0.99,
        "surrogate_reason": "the linear fit's reason",
        "predicted_start": 1.0,
        "predicted_proposal": 1.2,
        "gate_passed": passed,
        "gate_reason": "the gate's reason",
        "decision": {
            "chosen": chosen,
            "reason": "the decision's reason",
            "start_response": 0.9,
            "proposal_response": 1.1,
        },
    }


def test_surrogate_verdict_reads_the_gate_and_the_decision():
    verdict = surrogate_verdict(_solver())
    assert verdict.trusted and verdict.returns_proposal and verdict.recommended == "tikmix_m"
    assert (verdict.spearman, verdict.n_samples, verdict.proposal_response) == (0.8, 64, 1.1)
    assert (verdict.surrogate, verdict.linear_r2, verdict.linear_r2_threshold) == (
        "lightgbm",
        0.5,
        0.99,
    )
    # an untrusted surrogate (undefined Spearman, written as null) keeps w_D
    kept = surrogate_verdict(_solver("start", passed=False, spearman=None))
    assert not kept.trusted and not kept.returns_proposal and kept.recommended == "tikmix_d"
    assert math.isnan(kept.spearman)
    solver = _solver()
    del solver["decision"]
    with pytest.raises(KeyError, match="decision"):
        surrogate_verdict(solver)


def _points(improvements: dict[str, float], random: dict[str, float] | None = None):
    kinds = {m: METHOD for m in improvements} | {m: RANDOM for m in random or {}}
    return pd.DataFrame({"kind": kinds, "improvement_mean": improvements | (random or {})})


def test_all_worse_than_checkpoint():
    checkpoint = {"reference": "checkpoint"}
    worse = all_worse_than_checkpoint(_points({"a": -0.1, "b": -0.3}, {"r": 0.5}), checkpoint)
    assert worse == AllWorse(least_rise=pytest.approx(0.1), most_rise=pytest.approx(0.3))
    assert all_worse_than_checkpoint(_points({"a": -0.1, "b": 0.0}), checkpoint) is None
    assert all_worse_than_checkpoint(_points({"a": -0.1, "b": math.nan}), checkpoint) is None
    assert all_worse_than_checkpoint(_points({"a": -0.1}), {"reference": "natural"}) is None
    assert all_worse_than_checkpoint(_points({}, {"r": -0.5}), checkpoint) is None


def test_lowest_average_loss():
    summary = pd.DataFrame({"average_loss_mean": {"a": 2.0, "b": 1.5, "c": 1.5, "d": math.nan}})
    assert lowest_average_loss(summary, ["d", "a", "b", "c"]).method == "b"
    assert lowest_average_loss(summary, ["c", "b"]).average_loss == 1.5


def test_consecutive_agreement():
    assert consecutive_agreement(pd.DataFrame(columns=["comparison"])) is None
    stability = pd.DataFrame(
        {
            "comparison": ["consecutive", "consecutive", "consecutive", "final"],
            "spearman_rho": [0.5, 1.0, math.nan, -1.0],
            "kendall_tau": [0.2, 0.4, math.nan, -1.0],
        }
    )
    agreement = consecutive_agreement(stability)
    assert agreement.n_comparisons == 3
    assert (agreement.mean_spearman, agreement.mean_kendall) == (0.75, pytest.approx(0.3))


def test_additivity_overview():
    summary = pd.DataFrame(
        {
            "pearson_r": [0.4, 0.9],
            "n_outliers": [1, 2],
            "noise_ceiling": [math.nan, math.nan],
        },
        index=pd.Index(["a", "b"], name="task"),
    )
    overview = additivity_overview(summary)
    assert (overview.n_tasks, overview.lowest_r, overview.highest_r) == (2, 0.4, 0.9)
    assert overview.n_outliers == 3 and overview.noise_ceiling == {}
    with_ceiling = additivity_overview(summary.assign(noise_ceiling=[0.5, math.nan]))
    assert with_ceiling.noise_ceiling["a"] == (0.4, 0.5)
    assert math.isnan(with_ceiling.noise_ceiling["b"][1])


def test_paper_numbers_import_nothing_of_the_workflow():
    code = (
        "import sys, tikmix.core.paper; "
        "bad = sorted(m for m in sys.modules if m == 'torch' or (m.startswith('tikmix.') "
        "and not m.startswith('tikmix.core'))); print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert paper.billions(paper.ADDITIVITY_TOKENS_PER_MIXTURE) == "0.1B"
    assert paper.billions(paper.FIGURE4_TOKENS) == "500B"
    assert f"{paper.TIKMIX_D_TO_REGMIX_FLOPS:.2f}" == "0.19"
