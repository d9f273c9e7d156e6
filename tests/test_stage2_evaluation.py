"""Table 1 and Figure 4 data from stage-2 records, against hand-computed values."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import nct, pearsonr
from scipy.stats import t as student_t

from tikmix.analysis.evaluation import (
    EvaluationInputError,
    benefit_vs_improvement,
    evaluation_table,
    load_records,
    method_summary,
    minimum_detectable_effect,
    mixture_flops,
    paired_comparisons,
    random_mixture_name,
    write_evaluation_tables,
    write_random_mixture,
)
from tikmix.core.mixture import read_mixture


def record(method, seed, losses, accuracy=None, before=3.0, weights=None):
    tasks = {task: {"loss": loss} for task, loss in losses.items()}
    if accuracy is not None:
        tasks["qa"]["accuracy"] = accuracy
    return {
        "method": method,
        "seed": seed,
        "weights": weights or {"x": 0.5, "y": 0.5},
        "tasks": tasks,
        "average_loss": float(np.mean(list(losses.values()))),
        "before": {"average_loss": before},
    }


# Two methods, two seeds, three tasks. Method "a" is best on text and qa, "b" on code.
RECORDS = [
    record("a", 0, {"text": 2.0, "code": 3.0, "qa": 1.0}, accuracy=0.50),
    record("a", 1, {"text": 2.2, "code": 3.2, "qa": 1.2}, accuracy=0.70),
    record("b", 0, {"text": 2.5, "code": 2.0, "qa": 1.5}, accuracy=0.75),
    record("b", 1, {"text": 2.5, "code": 2.4, "qa": 1.3}, accuracy=0.75),
]


def cell(table, metric, task, method):
    row = table[(table.metric == metric) & (table.task == task) & (table.method == method)]
    assert len(row) == 1
    return row.iloc[0]


def test_table_mean_std_and_best_against_hand_values():
    table = evaluation_table(RECORDS)
    a_text = cell(table, "loss", "text", "a")
    assert a_text["mean"] == pytest.approx(2.1)
    assert a_text["std"] == pytest.approx(math.sqrt(0.02))  # sample std of (2.0, 2.2)
    assert a_text["n_seeds"] == 2 and a_text["best"]
    assert cell(table, "loss", "text", "b")["std"] == 0.0
    assert not cell(table, "loss", "text", "b")["best"]
    assert cell(table, "loss", "code", "b")["best"] and not cell(table, "loss", "code", "a")["best"]
    # The average column: a = (2 + 3 + 1 + 2.2 + 3.2 + 1.2) / 6, b = (2.5 + 2 + 1.5 + 2.5 + 2.4 + 1.3) / 6.
    assert cell(table, "loss", "average", "a")["mean"] == pytest.approx(12.6 / 6)
    assert cell(table, "loss", "average", "b")["mean"] == pytest.approx(12.2 / 6)
    assert cell(table, "loss", "average", "b")["best"]
    # Accuracy: higher is better, so b (0.75) beats a (0.6).
    assert cell(table, "accuracy", "qa", "a")["mean"] == pytest.approx(0.6)
    assert cell(table, "accuracy", "qa", "b")["best"]
    # Order: loss first, tasks as first seen, average last.
    loss_tasks = list(dict.fromkeys(table[table.metric == "loss"]["task"]))
    assert loss_tasks == ["text", "code", "qa", "average"]


def test_summary_best_on_k_of_n_and_total_flops(tmp_path):
    for method, flops in (("a", 7.2e17), ("b", None)):
        # `compute` is the last step only (e.g. TiKMiX-D's solve); `total_compute` is the cost.
        doc = {"method": method, "weights": {"x": 1.0}, "compute": {"tokens": 0, "flops": 5.0}}
        if flops is not None:
            doc["total_compute"] = {"tokens": 0, "flops": flops}
        (tmp_path / f"{method}.json").write_text(json.dumps(doc))
    flops = mixture_flops({m: tmp_path / f"{m}.json" for m in ("a", "b")})
    summary = method_summary(evaluation_table(RECORDS), flops)
    assert summary.loc["a", "best_on_text"] == "2/3" and summary.loc["b", "best_on_text"] == "1/3"
    assert summary.loc["a", "mixture_flops"] == 7.2e17
    assert math.isnan(summary.loc["b", "mixture_flops"])
    assert summary.loc["b", "average_loss_mean"] == pytest.approx(12.2 / 6)


def test_ties_count_as_best_for_every_tied_method():
    tied = [record("a", 0, {"t": 1.0}), record("b", 0, {"t": 1.0}), record("c", 0, {"t": 2.0})]
    summary = method_summary(evaluation_table(tied))
    assert summary["best_on"].to_dict() == {"a": 1, "b": 1, "c": 0}
    assert math.isnan(summary.loc["a", "average_loss_std"])  # one seed: no spread


def test_benefit_vs_improvement_against_scipy_and_hand_values():
    B = pd.DataFrame({"x": [1.0, 0.0], "y": [0.0, 2.0]}, index=["t1", "t2"])
    mixtures = {"m1": (1.0, 0.0), "m2": (0.5, 0.5), "m3": (0.2, 0.8), "m4": (0.0, 1.0)}
    measured = {"m1": [2.9, 2.7], "m2": [2.6, 2.6], "m3": [2.0, 2.2], "m4": [2.4, 2.5]}
    records = [
        record(m, s, {"t1": loss, "t2": loss}, before=3.0, weights=dict(zip("xy", w, strict=True)))
        for m, w in mixtures.items()
        for s, loss in enumerate(measured[m])
    ]
    points, stats = benefit_vs_improvement(records, B)
    # P̂ rows: t1 = (1, 0) / 1, t2 = (0, 2) / 2, so ΣP̂(w) = w_x + w_y = 1 for every mixture...
    assert points["predicted_benefit"].to_numpy() == pytest.approx(np.ones(4))
    # ... hence a non-uniform matrix to get a real correlation.
    B = pd.DataFrame({"x": [1.0, 0.5], "y": [0.0, 2.0]}, index=["t1", "t2"])
    points, stats = benefit_vs_improvement(records, B)
    predicted = {m: w[0] + (0.5 * w[0] + 2 * w[1]) / 2 for m, w in mixtures.items()}
    assert points["predicted_benefit"].to_dict() == pytest.approx(predicted)
    improvement = {m: 3.0 - np.mean(v) for m, v in measured.items()}
    assert points["improvement_mean"].to_dict() == pytest.approx(improvement)
    assert points.loc["m1", "improvement_std"] == pytest.approx(np.std([2.9, 2.7], ddof=1))
    expected = pearsonr(list(predicted.values()), list(improvement.values()))
    assert stats["pearson"] == pytest.approx(expected.statistic)
    assert stats["p_value"] == pytest.approx(expected.pvalue)
    # Relative to a reference method: improvement = its mean loss - the method's loss.
    points, stats = benefit_vs_improvement(records, B, reference="m1")
    assert points.loc["m3", "improvement_mean"] == pytest.approx(2.8 - 2.1)
    assert stats["reference"] == "m1"


def test_benefit_vs_improvement_rejects_inconsistent_input():
    B = pd.DataFrame({"x": [1.0]}, index=["t"])
    with pytest.raises(EvaluationInputError, match="domain.*'z'"):
        benefit_vs_improvement([record("a", 0, {"t": 1.0}, weights={"z": 1.0})], B)
    mixed = [
        record("a", 0, {"t": 1.0}, weights={"x": 1.0}),
        record("a", 1, {"t": 1.0}, weights={"x": 0.5, "y": 0.5}),
    ]
    with pytest.raises(EvaluationInputError, match="different weights|domain"):
        benefit_vs_improvement(mixed, pd.DataFrame({"x": [1.0], "y": [0.0]}, index=["t"]))
    with pytest.raises(EvaluationInputError, match="reference method 'natural'"):
        benefit_vs_improvement(mixed[:1], B, reference="natural")
    points, stats = benefit_vs_improvement(mixed[:1], B)
    assert math.isnan(stats["pearson"]) and stats["n_mixtures"] == 1


def test_load_records_names_the_bad_file(tmp_path):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(RECORDS[0]))
    bad.write_text(json.dumps({"method": "a"}))
    assert load_records([good])[0]["method"] == "a"
    with pytest.raises(EvaluationInputError, match=r"bad\.json.*lacks key"):
        load_records([good, bad])
    with pytest.raises(EvaluationInputError, match="two records for method 'a', seed 0"):
        evaluation_table(load_records([good, good]))


def test_random_mixtures_enter_figure_4_but_not_table_1():
    # A random mixture with the lowest loss everywhere: it must not take "best" from a or b.
    random = record("random0", 0, {"text": 0.1, "code": 0.1, "qa": 0.1}, accuracy=1.0)
    table = evaluation_table([*RECORDS, random], methods=["a", "b"])
    assert set(table["method"]) == {"a", "b"}
    assert table.equals(evaluation_table(RECORDS, methods=["a", "b"]))
    assert cell(table, "loss", "text", "a")["best"]
    with pytest.raises(EvaluationInputError, match=r"method\(s\) \['c'\]"):
        evaluation_table(RECORDS, methods=["a", "c"])
    B = pd.DataFrame({"x": [1.0, 0.5], "y": [0.0, 2.0]}, index=["t1", "t2"])
    spread = {"a": {"x": 0.2, "y": 0.8}, "b": {"x": 0.6, "y": 0.4}, "random0": {"x": 1.0}}
    records = [{**r, "weights": spread[r["method"]]} for r in [*RECORDS, random]]
    points, stats = benefit_vs_improvement(records, B, random_mixtures={"random0"})
    assert points["kind"].to_dict() == {"a": "method", "b": "method", "random0": "random"}
    assert stats["n_mixtures"] == 3 and stats["n_random"] == 1
    # ρ is over every point, random ones included (the paper's figure 4 pools its mixtures).
    expected = pearsonr(points["predicted_benefit"], points["improvement_mean"])
    assert stats["pearson"] == pytest.approx(expected.statistic)


def test_random_mixture_is_a_seeded_dirichlet_draw_with_predicted_benefit(tmp_path):
    domains = ["x", "y", "z"]
    influence = tmp_path / "influence.csv"
    B = pd.DataFrame(
        {"x": [1.0, 0.0], "y": [0.0, 2.0], "z": [-1.0, 0.5]},
        index=pd.Index(["t1", "t2"], name="task"),
    )
    B.to_csv(influence)
    docs = [
        write_random_mixture(
            tmp_path / f"r{k}.json", domains, seed=7, index=k, influence_csv=influence
        )
        for k in range(3)
    ]
    again = write_random_mixture(
        tmp_path / "again.json", domains, seed=7, index=1, influence_csv=influence
    )
    assert again["weights"] == docs[1]["weights"]  # (seed, index) alone fixes the draw
    weights = [pd.Series(d["weights"]) for d in docs]
    assert not np.allclose(weights[0], weights[1]) and not np.allclose(weights[1], weights[2])
    for k, (doc, w) in enumerate(zip(docs, weights, strict=True)):
        assert doc["method"] == random_mixture_name(k) == f"random{k}"
        assert list(w.index) == domains and w.sum() == pytest.approx(1.0) and (w > 0).all()
        assert doc["total_compute"] == {"tokens": 0, "flops": 0.0}
        expected = B.to_numpy() @ w.to_numpy()
        assert list(doc["predicted"]["benefit"].values()) == pytest.approx(expected)
        assert read_mixture(tmp_path / f"r{k}.json", domains).to_numpy() == pytest.approx(w)
    # A different base seed gives a different draw.
    other = write_random_mixture(
        tmp_path / "o.json", domains, seed=8, index=0, influence_csv=influence
    )
    assert not np.allclose(pd.Series(other["weights"]), weights[0])


def test_write_evaluation_tables_round_trip(tmp_path):
    paths = []
    random = record("random0", 0, {"text": 2.0, "code": 2.0, "qa": 2.0}, weights={"x": 1.0})
    for k, rec in enumerate([*RECORDS, random]):
        paths.append(tmp_path / f"r{k}.json")
        weights = (
            {"x": 0.2 + 0.2 * (k // 2), "y": 0.8 - 0.2 * (k // 2)} if k < 4 else rec["weights"]
        )
        paths[-1].write_text(json.dumps({**rec, "weights": weights}))
    for method in ("a", "b"):
        (tmp_path / f"{method}.json").write_text(json.dumps({"weights": {"x": 1.0}}))
    influence = tmp_path / "influence.csv"
    pd.DataFrame({"x": [1.0], "y": [0.5]}, index=pd.Index(["t"], name="task")).to_csv(influence)
    names = ("t.csv", "s.csv", "f.csv", "f.json", "p.csv", "p.json")
    out = {name: tmp_path / "out" / name for name in names}
    targets = dict(
        table_path=out["t.csv"],
        summary_path=out["s.csv"],
        figure4_path=out["f.csv"],
        figure4_stats_path=out["f.json"],
        paired_path=out["p.csv"],
        paired_stats_path=out["p.json"],
    )
    mixtures = {m: tmp_path / f"{m}.json" for m in ("a", "b")}
    _, stats = write_evaluation_tables(
        paths, mixtures, influence, random_mixtures=["random0"], **targets
    )
    table = pd.read_csv(out["t.csv"])
    assert len(table) == len(evaluation_table(RECORDS))
    summary = pd.read_csv(out["s.csv"], index_col="method")
    assert summary.loc["a", "best_on_text"] == "2/3"
    points = pd.read_csv(out["f.csv"], index_col="method")
    # ΣP̂ with the single row (1, 0.5) / 1: a = 0.2 + 0.4 = 0.6, b = 0.4 + 0.3 = 0.7, random0 = 1.
    assert points["predicted_benefit"].to_dict() == pytest.approx(
        {"a": 0.6, "b": 0.7, "random0": 1.0}
    )
    assert points.loc["random0", "kind"] == "random"
    assert json.loads(out["f.json"].read_text())["n_mixtures"] == 3 == stats["n_mixtures"]
    # A record that is neither a method of table 1 nor a declared random mixture is named.
    with pytest.raises(EvaluationInputError, match=r"r4\.json.*'random0'"):
        write_evaluation_tables(paths, mixtures, influence, **targets)


def test_constant_predicted_benefit_gives_no_correlation():
    """Equal predicted benefits are no evidence either way: NaN, not rounding noise."""
    B = pd.DataFrame({"x": [1.0], "y": [1.0]}, index=["t"])
    records = [
        record(m, 0, {"t": loss}, weights={"x": w, "y": 1 - w})
        for m, w, loss in (("a", 0.1, 2.0), ("b", 0.5, 2.5), ("c", 0.9, 2.2))
    ]
    points, stats = benefit_vs_improvement(records, B)
    assert points["predicted_benefit"].to_numpy() == pytest.approx([1.0] * 3)
    assert math.isnan(stats["pearson"]) and stats["n_mixtures"] == 3


def _loss_records(losses_by_method, same_mixture_as=None):
    """Records whose average loss per seed is given: method -> {seed: loss}. Every method has
    its own mixture, except those ``same_mixture_as`` maps to another method."""
    same_mixture_as = same_mixture_as or {}
    mixtures = {
        method: {"x": (k + 1) / 10, "y": 1 - (k + 1) / 10}
        for k, method in enumerate(losses_by_method)
    }
    return [
        record(method, seed, {"t": loss}, weights=mixtures[same_mixture_as.get(method, method)])
        for method, by_seed in losses_by_method.items()
        for seed, loss in by_seed.items()
    ]


def test_paired_comparisons_against_hand_values():
    """Reference = the best baseline; d_s, mean, SD, SE and one-sided 95% bounds by hand."""
    losses = {
        "continue": {0: 5.40, 1: 5.50, 2: 5.45},
        "natural": {0: 5.40, 1: 5.50, 2: 5.45},  # the same runs: equal means, continue first
        "uniform": {0: 5.42, 1: 5.53, 2: 5.46},
        "tikmix_m": {0: 5.41, 1: 5.51, 2: 5.462},
    }
    records = _loss_records(losses, same_mixture_as={"natural": "continue"})
    table, stats = paired_comparisons(records, list(losses))
    assert stats["reference"] == "continue" and stats["n_seeds"] == 3
    d = np.array([0.01, 0.01, 0.012])
    row = table.loc["tikmix_m"]
    assert row["mean_difference"] == pytest.approx(d.mean())
    assert row["sd"] == pytest.approx(d.std(ddof=1))
    assert row["se"] == pytest.approx(d.std(ddof=1) / math.sqrt(3))
    half = student_t.ppf(0.95, 2) * row["se"]
    assert row["lower_95"] == pytest.approx(d.mean() - half)
    assert row["upper_95"] == pytest.approx(d.mean() + half)
    assert row["verdict"] == "worse"  # lower bound 0.0107 - 2.92 * 0.00067 > 0
    assert table.loc["natural", "mean_difference"] == 0
    assert table.loc["natural", "verdict"] == "same mixture"
    assert "continue" not in table.index
    # σ pools uniform's and TiKMiX-M's differences, not natural's zeros (the same mixture).
    uniform = np.array([0.02, 0.03, 0.01])
    assert stats["sigma"] == pytest.approx(
        math.sqrt((uniform.var(ddof=1) + d.var(ddof=1)) / 2)
    )


def test_paired_comparisons_pair_by_seed_not_by_position():
    """Seeds move every mixture's loss together by ±0.1 while the method is 0.004 worse on each:
    paired, that is a clear loss; unpaired (the seed spread), it would read as a tie. Records in
    a different seed order must give the same differences."""
    seed_effect = {0: -0.1, 1: 0.0, 2: 0.1, 3: 0.05}
    natural = {s: 5.4 + e for s, e in seed_effect.items()}
    method = {s: 5.404 + e + 0.0005 * (s % 2) for s, e in seed_effect.items()}
    records = _loss_records({"natural": natural, "regmix": method})
    shuffled = records[::-1]
    table, stats = paired_comparisons(shuffled, ["natural", "regmix"])
    row = table.loc["regmix"]
    assert row["mean_difference"] == pytest.approx(0.00425)
    assert row["sd"] == pytest.approx(np.std([0.004, 0.0045, 0.004, 0.0045], ddof=1))
    assert row["verdict"] == "worse"
    # What an unpaired comparison would see: a spread two orders of magnitude larger.
    unpaired_sd = np.std(list(method.values()), ddof=1)
    assert unpaired_sd > 100 * row["sd"]
    assert stats["sigma"] == pytest.approx(row["sd"])


def test_minimum_detectable_effect_has_80_percent_power():
    """At the MDE, a one-sided paired t-test at 5% rejects with ~80% probability (noncentral t)."""
    for n in (3, 7, 12):
        sigma = 0.0045
        mde = minimum_detectable_effect(sigma, n)
        critical = student_t.ppf(0.95, n - 1)
        power = 1 - nct.cdf(critical, n - 1, mde / sigma * math.sqrt(n))
        assert 0.75 < power < 0.85, (n, power)
    assert minimum_detectable_effect(0.0045, 7) < minimum_detectable_effect(0.0045, 3)
    assert math.isnan(minimum_detectable_effect(0.0045, 1))


def test_paired_comparisons_without_a_baseline_are_empty():
    table, stats = paired_comparisons(_loss_records({"a": {0: 1.0}, "b": {0: 2.0}}), ["a", "b"])
    assert table.empty and stats["reference"] is None


def test_a_mixture_reuses_the_runs_of_an_identical_mixture_only(tmp_path):
    from tikmix.models.stage2 import records_of_the_same_mixture

    weights = {"x": 0.25, "y": 0.75}
    for name, w in (("natural", weights), ("continue", weights), ("other", {"x": 0.5, "y": 0.5})):
        (tmp_path / f"{name}.json").write_text(json.dumps({"weights": w}))
    sources = []
    for seed in (0, 1):
        sources.append(tmp_path / f"natural-seed{seed}.json")
        sources[-1].write_text(
            json.dumps(record("natural", seed, {"t": 5.0 + seed}, weights=weights))
        )
    outs = [tmp_path / f"continue-seed{seed}.json" for seed in (0, 1)]
    records = records_of_the_same_mixture(
        method="continue",
        mixture_path=tmp_path / "continue.json",
        source_mixture_path=tmp_path / "natural.json",
        source_records=sources,
        out_paths=outs,
    )
    written = [json.loads(p.read_text()) for p in outs]
    assert written == records
    assert [r["method"] for r in written] == ["continue"] * 2
    assert [r["average_loss"] for r in written] == [5.0, 6.0]
    assert written[0]["same_runs_as"] == "natural"
    with pytest.raises(ValueError, match="different mixtures"):
        records_of_the_same_mixture(
            method="continue",
            mixture_path=tmp_path / "other.json",
            source_mixture_path=tmp_path / "natural.json",
            source_records=sources,
            out_paths=outs,
        )
