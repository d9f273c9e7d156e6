"""The recommendation gate (tikmix.analysis.recommendation): training decides, not the proxy.

Pilot records are simulated from a planted truth, ``loss(w, s) = base_s + Δ(w) + noise``: a
seed effect every mixture shares (it cancels in the paired differences) and independent noise.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import t as student_t

from tikmix.analysis.evaluation import SAME_MIXTURE
from tikmix.analysis.recommendation import (
    NO_HEADROOM,
    PILOT,
    PROXY,
    REFERENCE,
    RecommendationError,
    read_recommendation,
    recommend_from_pilots,
    recommend_from_proxy,
    recommendation_job,
)
from tikmix.core.atomic import write_json_atomic

DOMAINS = ("a", "b", "c")
P = np.array([0.6, 0.3, 0.1])
# Three tasks, each pulled by one domain: the linear term rewards leaving p for b and c.
B = np.array([[0.2, 1.0, -0.4], [-0.3, 0.1, 1.2], [0.5, -0.2, 0.1]])
MIXTURES = {
    REFERENCE: P,
    "natural": np.array([0.5, 0.3, 0.2]),
    "tikmix_d": np.array([0.2, 0.4, 0.4]),
    "tikmix_m": np.array([0.05, 0.45, 0.5]),
}


def _kl(w: np.ndarray, p: np.ndarray) -> float:
    return float(np.sum(w * np.log(w / p)))


def _truth(w: np.ndarray, a: float, c: float) -> float:
    """Mean over tasks of Δloss = −a·B_v(w − p) + c·KL(w‖p) (a loss: negative is better)."""
    return float(np.mean(-a * B @ (w - P)) + c * _kl(w, P))


def _records(deltas: dict[str, float], seeds: int, noise: float, rng) -> list[dict]:
    """One pilot record per (mixture, seed): a shared seed effect plus independent noise."""
    records = []
    for seed in range(seeds):
        base = 3.0 + rng.normal(0, 0.1)
        for method, delta in deltas.items():
            loss = base + delta + rng.normal(0, noise)
            records.append(
                {
                    "method": method,
                    "seed": 100 + seed,
                    "weights": dict(zip(DOMAINS, map(float, MIXTURES[method]), strict=True)),
                    "tasks": {"task": {"loss": loss}},
                    "average_loss": loss,
                    "tokens": 4096,
                }
            )
    return records


def _weights(methods=MIXTURES) -> dict[str, dict[str, float]]:
    return {m: dict(zip(DOMAINS, map(float, MIXTURES[m]), strict=True)) for m in methods}


def test_reality_linear_minus_kl_cost_gives_continue() -> None:
    """The proxy's linear term says every candidate gains, but the KL cost of leaving p makes
    each one worse in training: the gate must answer `continue`, with the words and the MDE."""
    a, c = 0.01, 0.2
    deltas = {m: _truth(w, a, c) for m, w in MIXTURES.items()}
    linear_gain = {m: float(np.mean(a * B @ (w - P))) for m, w in MIXTURES.items()}
    assert all(linear_gain[m] > 0 for m in ("tikmix_d", "tikmix_m"))  # the proxy's promise
    assert all(deltas[m] > 0 for m in ("tikmix_d", "tikmix_m"))  # ... and the truth
    rng = np.random.default_rng(0)
    for _ in range(20):
        result = recommend_from_pilots(_records(deltas, 4, 0.004, rng), _weights())
        assert result.method == REFERENCE and result.basis == PILOT
        assert result.reason.startswith(NO_HEADROOM) and f"{result.mde:.4f}" in result.reason
        assert not result.headroom


def test_planted_headroom_is_recommended() -> None:
    """Where the prior is poor (c small), the best candidate beats `continue` on every seed and
    is recommended, with its paired difference in the reason."""
    a, c = 0.05, 0.002
    deltas = {m: _truth(w, a, c) for m, w in MIXTURES.items()}
    best = min(("natural", "tikmix_d", "tikmix_m"), key=deltas.get)
    records = _records(deltas, 4, 0.002, np.random.default_rng(1))
    result = recommend_from_pilots(records, _weights())
    assert result.method == best and result.headroom
    assert result.weights == _weights()[best]
    row = next(r for r in result.comparisons if r["method"] == best)
    assert row["verdict"] == "better" and row["upper_bound"] < 0
    assert row["mean_difference"] == pytest.approx(deltas[best], abs=4 * 0.002)
    assert f"{-row['mean_difference']:.4f}" in result.reason


def test_family_wise_false_recommendations_stay_near_five_percent() -> None:
    """Under the null (no candidate differs from `continue` in truth) the gate recommends
    something else in at most ~5% of studies: the bound is Bonferroni-corrected over the three
    candidates. The uncorrected one-sided 95% test would pick a winner far more often."""
    deltas = {m: 0.0 for m in MIXTURES}
    rng = np.random.default_rng(2)
    studies = 600
    wrong = uncorrected = 0
    # half-width at the plain 95% level from the corrected one (df = 3 for four seeds)
    plain = student_t.ppf(0.95, 3) / student_t.ppf(1 - 0.05 / 3, 3)
    for _ in range(studies):
        result = recommend_from_pilots(_records(deltas, 4, 0.005, rng), _weights())
        wrong += result.method != REFERENCE
        assert result.confidence == pytest.approx(1 - 0.05 / 3)
        # the same studies at the plain 95% level, per candidate
        uncorrected += any(
            row["mean_difference"] + (row["upper_bound"] - row["mean_difference"]) * plain < 0
            for row in result.comparisons
        )
    # binomial SE of 5% over 600 studies is 0.9%: 8% is over three SEs above
    assert wrong / studies < 0.08
    assert uncorrected / studies > 0.09


def test_a_candidate_with_continues_mixture_needs_no_pilot() -> None:
    """The demo's natural is `continue`'s mixture: it is 'same mixture', trains nothing, and does
    not count towards the Bonferroni correction."""
    weights = _weights()
    weights["natural"] = dict(weights[REFERENCE])
    deltas = {m: 0.0 for m in (REFERENCE, "tikmix_d", "tikmix_m")}
    records = _records(deltas, 3, 0.004, np.random.default_rng(3))
    result = recommend_from_pilots(records, weights)
    natural = next(r for r in result.comparisons if r["method"] == "natural")
    assert natural["verdict"] == SAME_MIXTURE and natural["n_seeds"] == 0
    assert result.confidence == pytest.approx(1 - 0.05 / 2)
    assert result.pilot_seeds == [100, 101, 102] and result.pilot_tokens == 4096


def test_identical_runs_of_an_identical_mixture_are_not_a_win() -> None:
    """A candidate whose optimiser returned p (no headroom) trains the same runs as `continue`:
    zero differences, never 'better'."""
    weights = _weights()
    weights["tikmix_d"] = dict(weights[REFERENCE])
    deltas = {REFERENCE: 0.0, "natural": 0.01, "tikmix_m": 0.01, "tikmix_d": 0.0}
    records = _records(deltas, 3, 0.004, np.random.default_rng(4))
    result = recommend_from_pilots(records, weights)
    assert result.method == REFERENCE


def test_missing_pilot_records_are_named() -> None:
    deltas = {REFERENCE: 0.0, "natural": 0.0}
    records = _records(deltas, 3, 0.004, np.random.default_rng(5))
    with pytest.raises(RecommendationError, match="tikmix_d"):
        recommend_from_pilots(records, _weights())
    with pytest.raises(RecommendationError, match="continue"):
        recommend_from_pilots(records, _weights(["natural", "tikmix_d"]))


def _tikmix_m_document(chosen: str) -> dict:
    quality = {"spearman": 0.9, "pearson": 0.9, "rmse": 0.1, "n_samples": 64, "n_folds": 5}
    return {
        "solver": {
            "surrogate_quality": quality,
            "decision": {
                "chosen": chosen,
                "reason": "the response confirmed the proposal",
                "start_response": 1.0,
                "proposal_response": 1.2,
            },
            "gate_passed": True,
            "gate_reason": "Spearman 0.9 >= 0.5",
            "surrogate": "lightgbm",
            "surrogate_reason": "linear R² 0.9 <= 0.99",
            "linear_cv_r2": 0.9,
            "linear_r2_threshold": 0.99,
            "predicted_start": 1.0,
            "predicted_proposal": 1.2,
        }
    }


def test_without_pilots_the_recommendation_is_labelled_proxy_only(tmp_path) -> None:
    result = recommend_from_proxy(_tikmix_m_document("proposal"), _weights())
    assert result.method == "tikmix_m" and result.basis == PROXY
    assert result.reason.startswith("proxy-only") and not result.headroom
    assert math.isnan(result.mde) and result.comparisons == []


def test_the_job_writes_a_document_that_reads_back(tmp_path) -> None:
    deltas = {m: 0.0 for m in MIXTURES}
    records = _records(deltas, 3, 0.004, np.random.default_rng(6))
    mixtures, paths = {}, []
    for method, weights in _weights().items():
        mixtures[method] = tmp_path / f"{method}.json"
        write_json_atomic(mixtures[method], weights)
    for k, record in enumerate(records):
        paths.append(tmp_path / f"record{k}.json")
        write_json_atomic(paths[-1], record)
    out, table = tmp_path / "recommendation.json", tmp_path / "pilots.csv"
    written = recommendation_job(
        mixtures=mixtures, records=paths, tikmix_m=None, out=out, table=table
    )
    again = read_recommendation(out)
    assert again.method == written.method and again.comparisons == written.comparisons
    assert table.read_text().splitlines()[0] == (
        "method,n_seeds,mean_difference,se,upper_bound,verdict"
    )
    with pytest.raises(RecommendationError, match="neither"):
        recommendation_job(mixtures=mixtures, records=[], tikmix_m=None, out=out, table=table)


def test_an_optimiser_that_returned_p_to_its_tolerance_is_the_same_mixture() -> None:
    """TiKMiX-D and TiKMiX-M return p (to the solver's tolerance) where the Pareto set is p
    alone: they are `continue`'s mixture, not a zero-noise tie that would make σ and the MDE 0."""
    weights = _weights()
    for method in ("tikmix_d", "tikmix_m", "natural"):
        weights[method] = {d: w + 1e-9 for d, w in weights[REFERENCE].items()}
    deltas = {m: 0.0 for m in MIXTURES}
    records = _records(deltas, 2, 0.004, np.random.default_rng(7))
    result = recommend_from_pilots(records, weights)
    assert result.method == REFERENCE and result.reason.startswith(NO_HEADROOM)
    assert "every candidate's mixture is continue's" in result.reason
    assert {row["verdict"] for row in result.comparisons} == {SAME_MIXTURE}
    assert math.isnan(result.mde) and result.pilot_seeds == [100, 101]
