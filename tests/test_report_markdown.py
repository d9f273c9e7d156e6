"""report.md on a small constructed results tree: every section, numbers equal to their files."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import t as student_t

from tikmix.analysis.additivity import additivity_statistics
from tikmix.analysis.evaluation import write_evaluation_tables
from tikmix.analysis.ranking import ranking_stability
from tikmix.analysis.recommendation import PILOT, Recommendation
from tikmix.core.atomic import write_json_atomic
from tikmix.core.mixture import mixture_document, write_mixture
from tikmix.report.markdown import (
    EvaluationFiles,
    ReportInputs,
    format_number,
    markdown_table,
    write_report,
)

DOMAINS = ["news", "fiction", "lore"]
TASKS = ["mmlu", "trivia"]
SURROGATE_SOLVER = {
    "surrogate_quality": {
        "spearman": 0.31,
        "pearson": 0.42,
        "rmse": 0.05,
        "n_samples": 64,
        "n_folds": 5,
    },
    "response": "curvature",
    "surrogate": "lightgbm",
    "linear_cv_r2": 0.6173,
    "linear_r2_threshold": 0.99,
    "surrogate_reason": "the linear fit's cross-validated R² 0.6173 is not above 0.99",
    "predicted_start": 1.25,
    "predicted_proposal": 1.5,
    "gate_passed": False,
    "gate_reason": "the surrogate's cross-validated Spearman 0.310 is below 0.5",
    "decision": {
        "chosen": "start",
        "reason": "gate: the surrogate's cross-validated Spearman 0.310 is below 0.5",
        "start_response": 1.2,
        "proposal_response": 1.3,
    },
    "curvature_vs_linear": {
        "mmlu": {"pearson_r": 0.999, "relative_rms": 0.02},
        "trivia": {"pearson_r": 0.98, "relative_rms": 0.1},
    },
}


@pytest.fixture
def results(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "results"
    influence, dirs = {}, {}
    for k, ckpt in enumerate(["stage1-050", "stage1-100"]):
        matrix = pd.DataFrame(rng.normal(size=(2, 3)) * 1e-3, index=TASKS, columns=DOMAINS)
        matrix.index.name = "task"
        influence[ckpt] = root / "influence" / ckpt / "influence.csv"
        influence[ckpt].parent.mkdir(parents=True)
        matrix.to_csv(influence[ckpt])
        dirs[ckpt] = root / "checkpoints" / ckpt
        dirs[ckpt].mkdir(parents=True)
        (dirs[ckpt] / "tikmix.json").write_text(
            json.dumps({"step": 10 * (k + 1), "tokens_seen": 40960 * (k + 1)})
        )
        (dirs[ckpt] / "config.json").write_text(
            json.dumps({"d_model": 64, "n_layers": 2, "n_heads": 4, "vocab_size": 2048})
        )
    mixtures = {}
    for method, w in [
        ("continue", [0.5, 0.3, 0.2]),
        ("natural", [0.5, 0.3, 0.2]),
        ("tikmix_d", [0.2, 0.2, 0.6]),
        ("tikmix_m", [0.25, 0.15, 0.6]),
    ]:
        mixtures[method] = root / "mixtures" / "stage1-100" / f"{method}.json"
        solver = SURROGATE_SOLVER if method == "tikmix_m" else None
        provenance = {"note": "stage 1's own mixture (stage1.prior: natural)"}
        write_mixture(
            mixtures[method],
            mixture_document(
                pd.Series(w, index=DOMAINS),
                method=method,
                solver=solver,
                provenance=provenance if method == "continue" else None,
            ),
        )
    x = rng.normal(size=20)
    summary, _ = additivity_statistics(
        pd.DataFrame({t: x for t in TASKS}),
        pd.DataFrame({t: x + 0.1 * rng.normal(size=20) for t in TASKS}),
    )
    additivity = root / "checks" / "stage1-100" / "additivity_summary.csv"
    additivity.parent.mkdir(parents=True)
    summary.to_csv(additivity, index=False)
    ranking = root / "checks" / "ranking.csv"
    ranking_stability({c: pd.read_csv(p, index_col=0) for c, p in influence.items()}).to_csv(
        ranking, index=False
    )
    compute = root / "checks" / "compute.csv"
    pd.DataFrame(
        {"method": ["natural", "tikmix_d"], "tokens": [0, 5e5], "flops": [0.0, 1.234567e12]}
    ).to_csv(compute, index=False)
    components = root / "checks" / "compute_components.csv"
    pd.DataFrame(
        {
            "method": ["tikmix_d"],
            "component": ["domain gradients"],
            "n_records": [3],
            "tokens": [5e5],
            "flops": [1.234567e12],
        }
    ).to_csv(components, index=False)
    metrics = root / "stage1" / "metrics.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text(
        json.dumps({"n_parameters": 412345, "tokens": 81920, "tokens_per_second": 12345.6})
    )
    figure = root / "report" / "figures" / "influence_stage1-100.png"
    figure.parent.mkdir(parents=True)
    figure.write_bytes(b"png")
    splits = {}
    for task, (steering, evaluation) in zip(TASKS, [(141, 141), (9, 10)], strict=True):
        splits[task] = root / "data" / "tasks" / task / "split.json"
        splits[task].parent.mkdir(parents=True)
        record = {"task": task, "fraction": 0.5, "items": steering + evaluation}
        record.update(steering_items=steering, evaluation_items=evaluation)
        splits[task].write_text(json.dumps(record))
    return ReportInputs(
        influence=influence,
        checkpoint_dirs=dirs,
        mixture_checkpoint="stage1-100",
        mixtures=mixtures,
        additivity={"stage1-100": additivity},
        ranking=ranking,
        compute=compute,
        compute_components=components,
        task_splits=splits,
        figures={"influence": [figure]},
        stage1_metrics=metrics,
    )


def _section(text, heading):
    return text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def _table_row(text, first_cell):
    for line in text.splitlines():
        if line.startswith(f"| {first_cell} |"):
            return [c.strip() for c in line.strip("|").split("|")]
    raise AssertionError(f"no table row starting with {first_cell!r}")


def test_report_has_every_section_and_numbers_from_the_files(results, tmp_path):
    path = write_report(tmp_path / "results" / "report" / "report.md", results)
    text = path.read_text()
    for heading in [
        "# TiKMiX results",
        "## Setup",
        "## Validation tasks",
        "## Group influence",
        "## Mixtures",
        "## Additivity of group influence",
        "## Ranking invariance over training",
        "## Compute",
    ]:
        assert heading in text
    assert "## Stage-2 evaluation" not in text  # no table.csv yet: no section, no placeholder
    assert "B = −I" in text and "larger is better" in text
    summary = pd.read_csv(results.additivity["stage1-100"]).set_index("task")
    additivity = _section(text, "Additivity of group influence")
    header = _table_row(additivity, "task")
    row = _table_row(additivity, "trivia")
    r = float(row[header.index("pearson_r")])
    assert r == pytest.approx(summary.loc["trivia", "pearson_r"], rel=5e-4)
    assert row[header.index("pearson_r")] == format_number(summary.loc["trivia", "pearson_r"])
    B = pd.read_csv(results.influence["stage1-100"], index_col=0)
    mmlu = _table_row(_section(text, "Group influence"), "mmlu")
    assert float(mmlu[1 + DOMAINS.index("lore")]) == pytest.approx(B.loc["mmlu", "lore"], rel=5e-4)
    assert _table_row(text, "parameters")[1] == "412345"
    tasks = _section(text, "Validation tasks")
    assert "`data.steering_fraction` 0.5" in tasks
    assert _table_row(tasks, "trivia") == ["trivia", "19", "9", "10"]
    assert "0.845" in text and "0.931" in text  # the paper's values, labelled as the paper's
    assert "](figures/influence_stage1-100.png)" in text
    predicted = _section(text, "Mixtures").split("predicted benefit", 1)[1]
    tikmix_d = _table_row(predicted, "TiKMiX-D")
    assert float(tikmix_d[-1]) == pytest.approx((B.to_numpy() @ [0.2, 0.2, 0.6]).sum(), rel=5e-4)
    compute = _section(text, "Compute")
    assert _table_row(compute, "TiKMiX-D")[2] == "1.235e+12"
    ranking = _section(text, "Ranking invariance over training")
    stability = pd.read_csv(results.ranking)
    first = stability.iloc[0]
    assert f"| {first['task']} | {first['comparison']} |" in ranking
    assert format_number(first["spearman_rho"]) in _table_row(ranking, first["task"])


def test_checks_switched_off_are_named_as_not_run_instead_of_failing(results, tmp_path):
    """A mixtures-only study with every check off: the report lists what was not run and why."""
    off = dataclasses.replace(results, additivity={}, ranking=None, projection=None)
    text = write_report(tmp_path / "results" / "report" / "report.md", off).read_text()
    assert "## Additivity of group influence" not in text
    assert "## Ranking invariance over training" not in text
    assert "## Mixtures" in text and "## Compute" in text
    not_run = _section(text, "Not run")
    for setting in [
        "`checks.additivity.enabled: false`",
        "`checks.ranking.enabled: false`",
        "`checks.projection.ranks: []`",
        "`stage2.methods: []`",
    ]:
        assert setting in not_run
    full = write_report(tmp_path / "full.md", results).read_text()
    assert "`checks.additivity.enabled: false`" not in full


def _stage2_results(root, before=3.0):
    """Stage-2 records of three methods and two random mixtures, two seeds, through the
    library's writer (``before``: the checkpoint's average loss); returns the files and the
    records' average losses."""
    losses = {  # method -> seed -> (mmlu loss, trivia loss)
        "natural": [(3.0, 2.0), (3.2, 2.2)],
        "tikmix_d": [(2.8, 2.1), (2.9, 2.1)],
        "regmix": [(2.9, 1.9), (3.0, 1.8)],
        "random0": [(3.3, 2.4), (3.3, 2.5)],
        "random1": [(3.1, 2.3), (3.2, 2.2)],
    }
    weights = {
        "natural": [0.5, 0.3, 0.2],
        "tikmix_d": [0.2, 0.2, 0.6],
        "regmix": [0.3, 0.3, 0.4],
        "random0": [0.7, 0.2, 0.1],
        "random1": [0.1, 0.8, 0.1],
    }
    flops = {"natural": 0.0, "tikmix_d": 7.0e11, "regmix": 3.5e12}
    records = []
    for method, runs in losses.items():
        for seed, (mmlu, trivia) in enumerate(runs):
            records.append(root / "evaluation" / method / f"seed{seed}.json")
            records[-1].parent.mkdir(parents=True, exist_ok=True)
            tasks = {
                "mmlu": {"loss": mmlu, "accuracy": 0.25 + 0.1 * seed},
                "trivia": {"loss": trivia},
            }
            records[-1].write_text(
                json.dumps(
                    {
                        "method": method,
                        "seed": seed,
                        "weights": dict(zip(DOMAINS, weights[method], strict=True)),
                        "tasks": tasks,
                        "average_loss": (mmlu + trivia) / 2,
                        "before": {"average_loss": before},
                    }
                )
            )
    mixtures = {}
    for method, total in flops.items():
        mixtures[method] = root / "evaluation" / "mixtures" / f"{method}.json"
        mixtures[method].parent.mkdir(parents=True, exist_ok=True)
        mixtures[method].write_text(
            json.dumps(
                {
                    "method": method,
                    "weights": dict(zip(DOMAINS, weights[method], strict=True)),
                    "compute": {"tokens": 0, "flops": 1.0},
                    "total_compute": {"tokens": 0, "flops": total},
                }
            )
        )
    names = ("t.csv", "s.csv", "f.csv", "f.json", "p.csv", "p.json")
    files = EvaluationFiles(*(root / "evaluation" / n for n in names))
    points, stats = write_evaluation_tables(
        records,
        mixtures,
        root / "influence" / "stage1-100" / "influence.csv",
        table_path=files.table,
        summary_path=files.summary,
        figure4_path=files.figure4,
        figure4_stats_path=files.figure4_stats,
        paired_path=files.paired,
        paired_stats_path=files.paired_stats,
        random_mixtures=["random0", "random1"],
    )
    return files, points, stats


def test_stage2_section_renders_table_1_and_figure_4_from_the_files(results, tmp_path):
    results.evaluation, points, stats = _stage2_results(tmp_path / "results")
    text = write_report(tmp_path / "report.md", results).read_text()
    section = _section(text, "Stage-2 evaluation")
    header = _table_row(section, "task")
    # No random mixtures; TiKMiX-M kept w_D, so TiKMiX-D's mixture is the recommended one.
    assert header[1:] == ["Natural", "TiKMiX-D (recommended)", "RegMix"]
    # Paired by seed against natural (the only baseline): TiKMiX-D's average loss differs by
    # (2.45 - 2.5, 2.5 - 2.7) = (-0.05, -0.2): mean -0.125, SE 0.075; with two seeds the
    # one-sided 95% bound (t = 6.31) spans 0, so a tie.
    paired = _table_row(section, "TiKMiX-D (recommended)")
    assert paired[1:3] == ["-0.125", "0.075"] and paired[-1] == "tie"
    assert _table_row(section, "RegMix")[1] == "-0.2"
    sigma = math.sqrt((np.var([-0.05, -0.2], ddof=1) + np.var([-0.1, -0.3], ddof=1)) / 2)
    mde = (student_t.ppf(0.95, 1) + student_t.ppf(0.8, 1)) * sigma / math.sqrt(2)
    assert f"σ = {format_number(sigma)} nats" in section
    assert f"minimum detectable effect (one-sided 5% test, 80% power) is {format_number(mde)}" in (
        section
    )
    # mmlu: natural 3.1 ± 0.14, TiKMiX-D 2.85 ± 0.071 (best, bold), RegMix 2.95 ± 0.071.
    mmlu = _table_row(section, "mmlu")
    assert mmlu[1] == f"3.1 ± {np.std([3.0, 3.2], ddof=1):.2g}"
    assert mmlu[2] == f"**2.85 ± {np.std([2.8, 2.9], ddof=1):.2g}**"
    # trivia: RegMix 1.85 is best; average: natural 2.6, TiKMiX-D 2.475, RegMix 2.4 (best).
    assert _table_row(section, "trivia")[3].startswith("**1.85 ± ")
    average = _table_row(section, "average")
    assert average[3].startswith("**2.4 ± ") and average[2].startswith("2.475 ± ")
    assert _table_row(section, "best on (loss)")[1:] == ["0/2", "1/2", "1/2"]
    assert _table_row(section, "FLOPs to determine the mixture")[1:] == ["0", "7e+11", "3.5e+12"]
    # Accuracy table: equal means everywhere, so every method is bold.
    accuracy = _table_row(section, "mmlu (accuracy)")
    assert accuracy[1] == f"**0.3 ± {np.std([0.25, 0.35], ddof=1):.2g}**"
    assert (
        "0.2 times RegMix's 3.5e+12" in section
        and "(the paper: 7.2e+17 / 3.7e+18 = 0.19)" in section
    )
    assert "RegMix has the lowest average loss (2.4)." in section
    assert "Every stage-2 run ended worse" not in section
    # compute.csv sums 1.235e12 for TiKMiX-D, its mixture file 7e11: the report says so.
    assert "TiKMiX-D's mixture file records 7e+11 FLOPs but the compute table sums 1.235e+12" in (
        section
    )
    assert "Natural's mixture file" not in section  # 0 and 0 agree
    # Figure 4: every mixture, random ones included, and ρ from the statistics file.
    assert _table_row(section, "random1")[1] == "random"
    figure4 = section.split("figure 4)", 1)[1]
    row = _table_row(figure4, "TiKMiX-D")
    assert float(row[2]) == pytest.approx(points.loc["tikmix_d", "predicted_benefit"], rel=5e-4)
    assert row[3].startswith(format_number(3.0 - 2.475))
    assert stats["n_mixtures"] == 5 and f"ρ = {format_number(stats['pearson'])}" in figure4
    assert "0.789" in figure4


def test_mixture_section_says_where_the_continue_mixture_comes_from(results, tmp_path):
    section = _section(write_report(tmp_path / "report.md", results).read_text(), "Mixtures")
    assert _table_row(section, "domain")[1:3] == ["Continue stage 1", "Natural"]
    assert (
        "*Continue stage 1* (`continue`) is the do-nothing baseline: stage 1's own mixture "
        "(stage1.prior: natural), continued unchanged." in section
    )


def test_stage2_runs_all_worse_than_the_checkpoint_are_stated_with_the_likely_cause(
    results, tmp_path
):
    """Checkpoint at 2.0 nats, every method ends at 2.4-2.6: the report says so plainly."""
    results.evaluation, _, _ = _stage2_results(tmp_path / "results", before=2.0)
    section = _section(
        write_report(tmp_path / "report.md", results).read_text(), "Stage-2 evaluation"
    )
    assert "**Every stage-2 run ended worse than the checkpoint it continued**" in section
    assert "rose by 0.4 to 0.6 nats" in section
    assert "`stage2.lr`" in section and "optimizer.pt" in section
    assert "RegMix has the lowest average loss (2.4), i.e. it hurt the model least." in section


def test_missing_result_file_is_named(results, tmp_path):
    results.ranking.unlink()
    with pytest.raises(FileNotFoundError, match="ranking.csv"):
        write_report(tmp_path / "report.md", results)


def test_markdown_table_formats_numbers():
    table = pd.DataFrame({"a": [1, 2], "b": [0.123456, float("nan")], "c": ["x|y", True]})
    assert markdown_table(table, index=False).splitlines() == [
        "| a | b | c |",
        "|---|---|---|",
        "| 1 | 0.1235 | x\\|y |",
        "| 2 | – | yes |",
    ]


def test_projection_section_reads_its_table_and_names_the_safe_rank(results, tmp_path):
    table = pd.DataFrame(
        [
            (rank, task, rho, rho)
            for rank, rhos in [
                (8, (0.61, 0.95)),
                (16, (0.8999999999999999, 0.97)),
                (32, (0.98, 0.99)),
            ]
            for task, rho in zip(TASKS, rhos, strict=True)
        ],
        columns=["rank", "task", "spearman", "pearson"],
    )
    path = tmp_path / "projection_agreement.csv"
    table.to_csv(path, index=False)
    results.projection = path
    text = write_report(tmp_path / "results" / "report" / "report.md", results).read_text()
    section = _section(text, "Gradient projection")
    header = _table_row(section, "task")
    assert float(_table_row(section, "mmlu")[header.index("ρ at r = 8")]) == pytest.approx(0.61)
    assert "r = 8: 0.61" in section and "From rank 16 on" in section
    # A failing largest rank is said so, not hidden behind an earlier passing one.
    table.loc[(table["rank"] == 32) & (table["task"] == "mmlu"), "spearman"] = 0.5
    table.to_csv(path, index=False)
    text = write_report(tmp_path / "results" / "report" / "report.md", results).read_text()
    assert "The largest tested rank does not keep" in _section(text, "Gradient projection")


def test_mixture_section_states_the_gate_and_recommends_one_mixture(results, tmp_path):
    text = write_report(tmp_path / "results" / "report" / "report.md", results).read_text()
    mixtures = _section(text, "Mixtures")
    assert "fitted on 64 mixtures sampled in the box" in mixtures
    assert "Spearman 0.31, Pearson 0.42 and RMSE 0.05" in mixtures
    assert "from 1.25 at w_D to 1.5" in mixtures
    assert (
        "Gate: kept w_D (the surrogate's cross-validated Spearman 0.310 is below 0.5)" in mixtures
    )
    assert "TiKMiX-M returns w_D" in mixtures
    # Which model TiKMiX-M used, and why: the linear fit's R² against the threshold.
    assert "cross-validated R² 0.6173 against the threshold 0.99" in mixtures
    assert "not above it, so TiKMiX-M's LightGBM surrogate was used" in mixtures
    assert "contain the prior p" in mixtures
    # The curvature response's departure from B·w, per task.
    tikmix_m = _section(text, "TiKMiX-M")  # the "### TiKMiX-M" subsection
    assert _table_row(tikmix_m, "task")[1:] == ["pearson_r", "relative_rms"]
    assert float(_table_row(tikmix_m, "trivia")[1]) == pytest.approx(0.98)
    # Without a recommendation document: TiKMiX-M's own decision, labelled proxy-only.
    assert "### Recommended mixture (proxy-only)" in mixtures
    assert "**TiKMiX-D** is TiKMiX-M's own choice" in mixtures
    assert "Nothing was trained to check it" in mixtures


def test_a_pilot_recommendation_is_shown_with_its_evidence_and_checked_in_stage_2(
    results, tmp_path
):
    """The recommendation document decides the label in Table 1, the mixture section shows the
    pilot table, and the stage-2 part says whether the recommendation held on the evaluation
    half (TiKMiX-D: -0.125 ± 0.075 against natural, not worse beyond one SE)."""
    results.evaluation, _, _ = _stage2_results(tmp_path / "results")
    recommendation = Recommendation(
        method="tikmix_d",
        weights={"a": 0.5, "b": 0.5},
        basis=PILOT,
        reason="tikmix_d beat continue in the pilot by 0.0120 ± 0.0020 nats",
        candidates=["continue", "natural", "tikmix_d"],
        comparisons=[
            {
                "method": "tikmix_d",
                "n_seeds": 4,
                "mean_difference": -0.012,
                "se": 0.002,
                "upper_bound": -0.006,
                "verdict": "better",
            },
            {
                "method": "natural",
                "n_seeds": 0,
                "mean_difference": 0.0,
                "se": math.nan,
                "upper_bound": math.nan,
                "verdict": "same mixture",
            },
        ],
        confidence=0.975,
        sigma=0.004,
        mde=0.009,
        pilot_tokens=100_000,
        pilot_seeds=[1000, 1001, 1002, 1003],
    )
    results.recommendation = tmp_path / "recommendation.json"
    write_json_atomic(results.recommendation, recommendation.to_dict())
    text = write_report(tmp_path / "report.md", results).read_text()
    mixtures = _section(text, "Mixtures")
    assert "**TiKMiX-D** is this study's recommended mixture for the next stage" in mixtures
    assert "decided by training: tikmix_d beat continue" in mixtures
    pilot = mixtures.split("Table: the pilot.", 1)[1]
    assert _table_row(pilot, "TiKMiX-D")[1:] == ["-0.012", "0.002", "-0.006", "better"]
    assert "same four seeds (1000, 1001, 1002, 1003" in mixtures
    assert "one-sided 97.5% upper bound" in mixtures and "(proxy-only)" not in mixtures
    stage2 = _section(text, "Stage-2 evaluation")
    assert "TiKMiX-D (recommended)" in _table_row(stage2, "task")
    assert "measured on the evaluation half: -0.125 ± 0.075 nats against Natural" in stage2
    assert "not worse beyond one standard error" in stage2


def test_mixture_section_says_when_the_linear_program_replaced_the_surrogate(results, tmp_path):
    solver = {
        **SURROGATE_SOLVER,
        "surrogate": "linear",
        "linear_cv_r2": 0.99996,
        "surrogate_reason": "the linear fit's cross-validated R² 1.0000 > 0.99",
    }
    write_mixture(
        results.mixtures["tikmix_m"],
        mixture_document(
            pd.Series([0.25, 0.15, 0.6], index=DOMAINS), method="tikmix_m", solver=solver
        ),
    )
    text = write_report(tmp_path / "results" / "report" / "report.md", results).read_text()
    mixtures = _section(text, "Mixtures")
    # four decimals, as the surrogate's reason writes it: 0.99996 does not read as an exact 1
    assert "cross-validated R² 1.0000 against the threshold 0.99" in mixtures
    assert "LightGBM was skipped" in mixtures and "as a linear program" in mixtures
    assert "LightGBM surrogate was used" not in mixtures
    assert "The linear program moved the linear model's prediction from 1.25" in mixtures
