"""Additivity check (appendix D): statistics against scipy, and the check on a trained model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from tikmix.analysis.additivity import (
    additivity_check,
    additivity_statistics,
    predicted_benefits,
    run_additivity_check,
    studentized_residuals,
    write_additivity,
)
from tikmix.core.mixture import MixtureInputError, mixture_document, write_mixture
from tikmix.data.domains import tokenize_domain
from tikmix.data.sampler import load_streams, plan_mixture, sample_mixture
from tikmix.data.sources import DomainSource
from tikmix.data.synthetic import make_synthetic_corpus
from tikmix.data.tasks import tokenize_task
from tikmix.data.tokenizer import train_tokenizer, vocab_size
from tikmix.influence import (
    DEFAULT_MODULE_PATTERN,
    domain_gradient,
    fit_ekfac,
    influence_matrix,
    precondition,
    save_factors,
    save_gradients,
    select_modules,
    task_gradient,
)
from tikmix.influence.stages import precondition_task_gradients
from tikmix.mixing.tikmix_d import solve_tikmix_d
from tikmix.models.checkpoint import save_checkpoint
from tikmix.models.flops import training_flops_per_token
from tikmix.models.llama import ModelConfig, TinyLlama
from tikmix.models.train import train
from tikmix.seeds import derive_seed


def _line_with_outlier(n=40, outlier=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = 2.0 * x + 1.0 + 0.1 * rng.normal(size=n)
    y[outlier] += 3.0  # 30 noise standard deviations
    return x, y


def test_statistics_match_scipy_and_the_outlier_is_flagged_but_kept():
    x, y = _line_with_outlier()
    summary, points = additivity_statistics(
        pd.DataFrame({"arc": x}), pd.DataFrame({"arc": y}), outlier_threshold=3.0
    )
    row = summary.set_index("task").loc["arc"]
    reference = stats.pearsonr(x, y)  # all 40 points, the outlier included
    assert row["n_mixtures"] == 40
    assert row["pearson_r"] == pytest.approx(reference.statistic, rel=1e-12)
    assert row["pearson_p"] == pytest.approx(reference.pvalue, rel=1e-9)
    spearman = stats.spearmanr(x, y)
    assert row["spearman_rho"] == pytest.approx(spearman.statistic, rel=1e-12)
    assert row["spearman_p"] == pytest.approx(spearman.pvalue, rel=1e-9)
    slope, intercept = np.polyfit(x, y, 1)
    assert (row["slope"], row["intercept"]) == pytest.approx((slope, intercept), rel=1e-10)
    assert row["r_squared"] == pytest.approx(reference.statistic**2, rel=1e-12)
    assert points["outlier"].tolist() == [i == 5 for i in range(40)]
    assert row["n_outliers"] == 1
    kept = np.arange(40) != 5
    assert row["pearson_r_without_outliers"] == pytest.approx(
        stats.pearsonr(x[kept], y[kept]).statistic, rel=1e-12
    )
    assert row["pearson_r_without_outliers"] > row["pearson_r"]
    assert len(points) == 40 and points["mixture"].tolist() == list(range(40))
    np.testing.assert_allclose(points["residual"], y - (intercept + slope * x), atol=1e-12)


def test_studentized_residuals_equal_leave_one_out_prediction_errors():
    x, y = _line_with_outlier(n=12, outlier=3, seed=1)
    expected = []
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        xs, ys = x[keep], y[keep]
        slope, intercept = np.polyfit(xs, ys, 1)
        s = np.sqrt(np.sum((ys - intercept - slope * xs) ** 2) / (len(xs) - 2))
        sxx = np.sum((xs - xs.mean()) ** 2)
        se = s * np.sqrt(1 + 1 / len(xs) + (x[i] - xs.mean()) ** 2 / sxx)
        expected.append((y[i] - intercept - slope * x[i]) / se)
    np.testing.assert_allclose(studentized_residuals(x, y), expected, rtol=1e-9)


def test_predicted_benefit_is_the_weighted_sum_of_domain_benefits():
    B = pd.DataFrame(
        [[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]], index=["t1", "t2"], columns=["a", "b", "c"]
    )
    mixtures = pd.DataFrame([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]], columns=["c", "a", "b"])
    predicted = predicted_benefits(B, mixtures)
    assert predicted.loc[0, "t1"] == pytest.approx(0.3 * 1.0 + 0.5 * -2.0 + 0.2 * 0.5)
    assert predicted.loc[1, "t2"] == pytest.approx(1.0)
    with pytest.raises(MixtureInputError, match=r"missing \['c'\]"):
        predicted_benefits(B, mixtures.drop(columns="c"))


def test_statistics_reject_bad_input():
    x, y = _line_with_outlier(n=6)
    with pytest.raises(ValueError, match="same predicted benefit"):
        additivity_statistics(pd.DataFrame({"t": np.ones(6)}), pd.DataFrame({"t": y}))
    with pytest.raises(ValueError, match="same tasks"):
        additivity_statistics(pd.DataFrame({"t": x}), pd.DataFrame({"u": y}))
    with pytest.raises(ValueError, match="at least 4 mixtures"):
        additivity_statistics(pd.DataFrame({"t": x[:3]}), pd.DataFrame({"t": y[:3]}))
    with pytest.raises(ValueError, match="non-finite"):
        additivity_statistics(pd.DataFrame({"t": x}), pd.DataFrame({"t": y * np.nan}))


def test_measurement_seeds_are_distinct_per_mixture_and_design():
    seeds = {derive_seed(0, "measure", "additivity", i) for i in range(256)}
    assert len(seeds) == 256
    assert derive_seed(0, "measure", "additivity", 3) != derive_seed(1, "measure", "additivity", 3)
    assert derive_seed(0, "measure", "additivity", 3) != derive_seed(0, "measure", "tikmix_m", 3)
    assert derive_seed(0, "measure", "additivity", 3) != derive_seed(0, "domain_gradients", 3)


SEQ_LEN = 32


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A tiny Llama trained on the synthetic corpus, its EK-FAC benefit matrix and TiKMiX-D."""
    # Module-scoped fixtures run before conftest's per-test one-thread setting; a tiny model is
    # fastest on one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("additivity")
    corpus = make_synthetic_corpus(root / "corpus", docs_per_domain=120, seed=0)
    texts = [
        json.loads(line)["text"]
        for path in corpus.domain_files.values()
        for line in path.read_text().splitlines()
    ]
    tokenizer = train_tokenizer(texts, 512, root / "tokenizer.json")
    dirs = {}
    for name, path in corpus.domain_files.items():
        dirs[name] = root / "domains" / name
        tokenize_domain(
            DomainSource(name, (str(path),)),
            root / "tokenizer.json",
            dirs[name],
            heldout_fraction=0.1,
        )
    tasks = {}
    for name, path in corpus.task_files.items():
        tokenize_task(path, tokenizer, root / f"{name}.npz", SEQ_LEN)
        tasks[name] = np.load(root / f"{name}.npz")
    streams = load_streams(dirs)
    prior = {d: 1 / len(dirs) for d in dirs}

    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=vocab_size(tokenizer), max_seq_len=SEQ_LEN, d_model=32, n_layers=2, n_heads=2
    )
    model = TinyLlama(config)
    steps = 120_000 // (16 * SEQ_LEN)
    plan = plan_mixture(
        {d: len(s) for d, s in streams.items()}, prior, steps * 16 * SEQ_LEN, SEQ_LEN, seed=0
    )
    train(model, plan.iter_batches(streams, 16), total_steps=steps, lr=0.01, seed=0)

    def batches(ids):
        return [torch.from_numpy(ids[i : i + 16]) for i in range(0, len(ids), 16)]

    modules = select_modules(model)
    factors = fit_ekfac(
        model, batches(sample_mixture(streams, prior, 16384, SEQ_LEN, 1).ids), modules=modules
    )
    task_grads = {
        t: task_gradient(model, d["input_ids"], d["loss_mask"], modules) for t, d in tasks.items()
    }
    preconditioned = precondition(factors, task_grads)
    domain_grads = {
        d: domain_gradient(
            model, batches(sample_mixture(streams, {d: 1.0}, 16384, SEQ_LEN, 2).ids), modules
        )
        for d in dirs
    }
    B, _ = influence_matrix(preconditioned, domain_grads)
    w_d = solve_tikmix_d(B, pd.Series(prior)).weights
    torch.set_num_threads(threads)
    return dict(
        model=model,
        modules=modules,
        streams=streams,
        B=B,
        w_d=w_d,
        preconditioned=preconditioned,
        truth=corpus.ground_truth,
        config=config,
        factors=factors,
        task_grads=task_grads,
        dirs=dirs,
    )


def test_additivity_holds_on_the_planted_corpus(planted):
    """Acceptance (issue 6): Pearson r >= 0.8 on every task; direct values are measured."""
    model, B, truth = planted["model"], planted["B"], planted["truth"]
    for task, sources in truth.items():  # the structure the benefits must carry
        assert B.loc[task].idxmax() in sources
    result = additivity_check(
        model,
        planted["modules"],
        planted["streams"],
        B,
        planted["w_d"],
        planted["preconditioned"],
        n_mixtures=64,
        tokens=8192,
        seq_len=SEQ_LEN,
        batch_size=32,
        seed=7,
    )
    summary = result.summary.set_index("task")
    assert list(summary.index) == list(B.index)
    assert (summary["n_mixtures"] == 64).all()
    assert (summary["pearson_r"] >= 0.8).all(), summary["pearson_r"].to_dict()
    assert (summary["pearson_p"] < 1e-6).all()
    # The direct values come from gradient passes over freshly sampled data, not from B.
    direct, predicted = result.points["direct"], result.points["predicted"]
    assert not np.allclose(direct, predicted, rtol=1e-6, atol=0)
    np.testing.assert_allclose(result.mixtures.sum(axis=1), 1.0)
    np.testing.assert_allclose(
        result.points.pivot(index="mixture", columns="task", values="predicted")[list(B.index)],
        predicted_benefits(B, result.mixtures),
        rtol=1e-12,
    )
    # 64 mixtures plus 4 replicates of each of the first 4 (the noise ceiling's measurements).
    assert result.compute.tokens == (64 + 16) * (8192 // SEQ_LEN) * SEQ_LEN
    # Sampling noise bounds r: the ceiling it allows is measured, and r stays below it.
    assert (summary["noise_sd"] > 0).all() and (summary["noise_ceiling"] <= 1).all()
    assert (summary["pearson_r"] <= summary["noise_ceiling"] + 0.05).all(), summary.to_dict()
    assert result.compute.flops == result.compute.tokens * training_flops_per_token(model, SEQ_LEN)


def test_run_from_workflow_files(planted, tmp_path):
    save_checkpoint(
        tmp_path / "ckpt",
        planted["model"],
        planted["config"],
        step=1,
        tokens_seen=1,
        mixture={},
        tokenizer="tokenizer.json",
        seed=0,
    )
    save_factors(tmp_path / "ekfac.zarr", planted["factors"], {"checkpoint": "ckpt"})
    task_stores = {
        t: save_gradients(tmp_path / f"task-{t}.zarr", g) for t, g in planted["task_grads"].items()
    }
    precondition_task_gradients(
        factors=tmp_path / "ekfac.zarr",
        task_stores=task_stores,
        damping=None,
        damping_factor=0.1,
        out=tmp_path / "pre.zarr",
    )
    planted["B"].to_csv(tmp_path / "influence.csv")
    write_mixture(tmp_path / "tikmix_d.json", mixture_document(planted["w_d"], method="tikmix_d"))
    options = dict(n_mixtures=6, tokens=1024, seq_len=SEQ_LEN, batch_size=32, seed=1)
    result = run_additivity_check(
        checkpoint=tmp_path / "ckpt",
        domain_dirs=planted["dirs"],
        influence_csv=tmp_path / "influence.csv",
        reference_mixture=tmp_path / "tikmix_d.json",
        preconditioned=tmp_path / "pre.zarr",
        tracked_modules=DEFAULT_MODULE_PATTERN,
        device="cpu",
        **options,
    )
    expected = additivity_check(
        planted["model"],
        planted["modules"],
        planted["streams"],
        planted["B"],
        planted["w_d"],
        planted["preconditioned"],
        **options,
    )
    np.testing.assert_allclose(result.points["direct"], expected.points["direct"], rtol=1e-6)
    out = {k: tmp_path / f"out.{k}" for k in ("points", "summary", "mixtures", "record")}
    write_additivity(result, **out, settings=options)
    record = json.loads(out["record"].read_text())
    assert record["compute"] == result.compute.to_dict() and record["settings"] == options
    assert pd.read_csv(out["summary"])["pearson_r"].tolist() == pytest.approx(
        result.summary["pearson_r"].tolist()
    )
    assert pd.read_csv(out["mixtures"], index_col="mixture").shape == (6, len(planted["dirs"]))
