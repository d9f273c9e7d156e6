"""RegMix and DoReMi-lite baselines: samplers, regression, weight updates, planted preferences."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from tikmix.core.mixture import MixtureInputError
from tikmix.core.settings import DirichletSettings, DoremiSettings, ProxyModel, RegmixSettings
from tikmix.mixing.availability import Availability
from tikmix.mixing.documents import baseline_document
from tikmix.mixing.doremi import exponentiated_gradient_step
from tikmix.mixing.regmix import fit_regmix, sample_regmix_mixtures
from tikmix.models.checkpoint import save_checkpoint
from tikmix.models.llama import ModelConfig, TinyLlama, model_flops_per_token
from tikmix.models.proxies import doremi_mixture, regmix_mixture, run_doremi
from tikmix.models.train import train

VOCAB, SEQ = 24, 16
PROXY = {"d_model": 16, "n_layers": 1, "n_heads": 2}
PROXY_MODEL = ProxyModel(**PROXY)


def counting(n: int = 6000) -> np.ndarray:
    return (1 + np.arange(n) % 5).astype(np.uint16)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A learnable domain (counting 1..5), two unlearnable noise domains, a counting task."""
    root = tmp_path_factory.mktemp("baselines")
    rng = np.random.default_rng(0)
    streams = {
        "counting": counting(),
        "noise_a": rng.integers(1, VOCAB, size=6000).astype(np.uint16),
        "noise_b": rng.integers(1, VOCAB, size=6000).astype(np.uint16),
    }
    dirs = {}
    for name, stream in streams.items():
        dirs[name] = root / name
        dirs[name].mkdir()
        np.save(dirs[name] / "train.npy", stream)
    ids = np.stack([counting(100)[i : i + SEQ + 1] for i in range(10)]).astype(np.int32)
    np.savez(root / "task.npz", input_ids=ids, loss_mask=np.ones_like(ids, dtype=np.uint8))
    return {"root": root, "dirs": dirs, "streams": streams, "task": root / "task.npz"}


# --- RegMix ------------------------------------------------------------------------------


def test_regmix_sampler_respects_bounds_minimum_and_seed():
    prior = pd.Series({"a": 0.7, "b": 0.2, "c": 0.1})
    settings = DirichletSettings(max_usage=2.0, minimum=0.01)
    mixtures = sample_regmix_mixtures(prior, 500, settings, seed=3)
    assert mixtures.shape == (500, 3) and list(mixtures.columns) == ["a", "b", "c"]
    np.testing.assert_allclose(mixtures.sum(axis=1), 1.0, atol=1e-12)
    # Weights below `minimum` were zeroed before the renormalisation (which only raises them).
    assert ((mixtures.to_numpy() == 0) | (mixtures.to_numpy() >= 0.01)).all()
    # Rejection bound w <= 2 · prior, up to the renormalisation after zeroing small weights.
    assert (mixtures.to_numpy() <= 2.0 * prior.to_numpy() / (1 - 0.02) + 1e-12).all()
    pd.testing.assert_frame_equal(mixtures, sample_regmix_mixtures(prior, 500, settings, seed=3))


def test_regmix_sampler_centres_on_the_tempered_prior():
    """With a huge concentration the draws sit at prior^T renormalised (RegMix's temperature)."""
    prior = pd.Series({"a": 0.64, "b": 0.32, "c": 0.04})
    settings = DirichletSettings(
        temperature=0.5, min_strength=1e5, max_strength=1e5, max_usage=None, minimum=0.0
    )
    mean = sample_regmix_mixtures(prior, 200, settings, seed=0).mean()
    tempered = np.sqrt(prior) / np.sqrt(prior).sum()
    np.testing.assert_allclose(mean, tempered, atol=2e-3)


def test_regmix_sampler_rejects_impossible_bounds():
    prior = pd.Series({"a": 0.5, "b": 0.5})
    settings = DirichletSettings(max_usage=1.0001, min_strength=0.1, max_strength=0.1)
    with pytest.raises(MixtureInputError, match="usage bound"):
        sample_regmix_mixtures(prior, 50, settings, seed=0, max_batches=2)
    with pytest.raises(MixtureInputError, match="min_strength <= max_strength"):
        sample_regmix_mixtures(prior, 5, DirichletSettings(min_strength=2.0, max_strength=1.0))
    with pytest.raises(MixtureInputError, match="minimum must be in"):
        fit_regmix(pd.DataFrame(), prior, RegmixSettings(dirichlet=DirichletSettings(minimum=1)))


def test_fit_regmix_prefers_the_domain_that_lowers_the_loss():
    prior = pd.Series({"a": 0.4, "b": 0.3, "c": 0.3})
    runs = sample_regmix_mixtures(prior, 32, seed=1)
    noise = np.random.default_rng(0).normal(0, 0.01, size=len(runs))
    runs["average_loss"] = 3.0 - 1.5 * runs["b"] + noise
    weights, quality, predicted = fit_regmix(
        runs, prior, RegmixSettings(n_simulations=5000, top_k=50), seed=0
    )
    assert weights.idxmax() == "b" and weights["b"] > 0.6
    assert weights.sum() == pytest.approx(1.0)
    assert quality.spearman > 0.8
    assert predicted < runs["average_loss"].median()


def test_fit_regmix_needs_enough_runs_and_columns():
    prior = pd.Series({"a": 0.5, "b": 0.5})
    runs = sample_regmix_mixtures(prior, 6, seed=0).assign(average_loss=1.0)
    with pytest.raises(MixtureInputError, match="at least 8"):
        fit_regmix(runs, prior)
    with pytest.raises(MixtureInputError, match="average_loss"):
        fit_regmix(runs.drop(columns="average_loss"), prior)


def test_regmix_end_to_end_puts_most_weight_on_the_useful_domain(corpus):
    config = ModelConfig(vocab_size=VOCAB, max_seq_len=SEQ, **PROXY)
    tokens = 24 * 8 * SEQ
    result = regmix_mixture(
        corpus["dirs"],
        {"counting_task": corpus["task"]},
        pd.Series(1 / 3, index=list(corpus["dirs"])),
        RegmixSettings(
            n_proxies=8,
            tokens=tokens,
            batch_size=8,
            lr=1e-2,
            model=PROXY_MODEL,
            n_simulations=5000,
            top_k=50,
        ),
        vocab_size=VOCAB,
        seq_len=SEQ,
        seed=0,
    )
    assert result.weights.idxmax() == "counting"
    assert result.weights.sum() == pytest.approx(1.0)
    assert len(result.runs) == 8
    # Proxies that saw more counting text have lower task loss.
    assert np.corrcoef(result.runs["counting"], result.runs["average_loss"])[0, 1] < -0.5
    per_token = model_flops_per_token(config, SEQ)
    task_tokens = 10 * SEQ
    assert result.flops == 8 * (per_token * tokens + per_token // 3 * task_tokens)
    availability = Availability(pd.Series(1000.0, index=result.weights.index), None, "unknown", 1000, 4.0)
    document = baseline_document(result, method="regmix", availability=availability)
    assert document["method"] == "regmix" and document["compute"]["flops"] == result.flops
    assert document["planned_epochs"] == pytest.approx(result.weights.to_dict())  # T = U
    assert document["solver"]["n_proxies"] == 8
    json.dumps(document, allow_nan=False)  # NaN fold correlations are written as null


# --- DoReMi ------------------------------------------------------------------------------


def test_exponentiated_gradient_step_matches_hand_computation():
    alpha = exponentiated_gradient_step(
        np.array([0.5, 0.5]), np.array([1.0, 0.0]), eta=1.0, smoothing=0.1
    )
    e = np.e
    np.testing.assert_allclose(alpha, [0.9 * e / (e + 1) + 0.05, 0.9 / (e + 1) + 0.05])
    # Zero excess leaves the weights alone except for the pull towards uniform.
    same = exponentiated_gradient_step(np.array([0.7, 0.3]), np.zeros(2), eta=5, smoothing=0.0)
    np.testing.assert_allclose(same, [0.7, 0.3])


@pytest.fixture(scope="module")
def reference(corpus):
    """A model that learned the counting domain (noise is unlearnable for everyone)."""
    torch.manual_seed(0)
    model = TinyLlama(ModelConfig(vocab_size=VOCAB, max_seq_len=SEQ, d_model=32, n_layers=1))
    stream = corpus["streams"]["counting"]
    windows = np.stack([stream[i : i + SEQ + 1] for i in range(0, 4000, 5)])
    train(model, (windows[i : i + 8] for i in range(0, 800, 8)), total_steps=60, lr=1e-2)
    return model


def test_doremi_moves_weight_to_the_domain_with_excess_loss(corpus, reference):
    smoothing = 1e-3
    result = run_doremi(
        reference,
        corpus["streams"],
        ModelConfig(vocab_size=VOCAB, max_seq_len=SEQ, **PROXY),
        DoremiSettings(proxy_tokens=30 * 9 * SEQ, batch_size=9, lr=1e-2, smoothing=smoothing),
        seq_len=SEQ,
        seed=0,
    )
    w = result.weights
    assert w.sum() == pytest.approx(1.0)
    assert (w >= smoothing / 3).all()
    assert w.idxmax() == "counting" and w["counting"] > 0.5
    trace = result.trace
    assert len(trace) == 30
    np.testing.assert_allclose(trace.filter(like="weight:").sum(axis=1), 1.0)
    assert (trace.filter(like="weight:").to_numpy() >= smoothing / 3 - 1e-15).all()
    mean_excess = trace.filter(like="excess:").mean()
    assert mean_excess.idxmax() == "excess:counting"
    np.testing.assert_allclose(w, trace.filter(like="weight:").mean().to_numpy())


def test_doremi_mixture_counts_reference_training_and_proxy_compute(corpus):
    config = ModelConfig(vocab_size=VOCAB, max_seq_len=SEQ, **PROXY)
    result = doremi_mixture(
        corpus["dirs"],
        pd.Series(1 / 3, index=list(corpus["dirs"])),
        DoremiSettings(
            reference="train",
            reference_tokens=10 * 9 * SEQ,
            proxy_tokens=5 * 9 * SEQ,
            batch_size=9,
            model=PROXY_MODEL,
        ),
        vocab_size=VOCAB,
        seq_len=SEQ,
        seed=0,
    )
    per_token = model_flops_per_token(config, SEQ)
    assert result.flops == {
        "reference_train_flops": per_token * 10 * 9 * SEQ,
        "proxy_train_flops": per_token * 5 * 9 * SEQ,
        "reference_forward_flops": per_token // 3 * 5 * 9 * SEQ,
    }
    availability = Availability(pd.Series(500.0, index=result.weights.index), None, "unknown", 1000, 4.0)
    document = baseline_document(result, method="doremi", availability=availability)
    assert document["method"] == "doremi" and document["stage_tokens"] == 1000
    assert document["planned_epochs"] == pytest.approx((2 * result.weights).to_dict())
    assert document["compute"]["flops"] == sum(result.flops.values())
    assert sum(document["weights"].values()) == pytest.approx(1.0)
    assert document["solver"]["settings"]["reference"] == "train"


def test_doremi_mixture_with_the_checkpoint_as_reference(corpus, reference, tmp_path):
    checkpoint = save_checkpoint(
        tmp_path / "ckpt",
        reference,
        step=60,
        tokens_seen=0,
        mixture={"counting": 1.0},
        tokenizer="none",
        seed=0,
    )
    doremi = DoremiSettings(proxy_tokens=20 * 9 * SEQ, batch_size=9, lr=1e-2, model=PROXY_MODEL)
    kwargs = dict(vocab_size=VOCAB, seq_len=SEQ)
    result = doremi_mixture(corpus["dirs"], None, doremi, checkpoint_dir=checkpoint, **kwargs)
    assert result.weights.idxmax() == "counting"
    assert result.flops["reference_train_flops"] == 0  # the checkpoint's training is sunk
    with pytest.raises(MixtureInputError, match="needs checkpoint_dir"):
        doremi_mixture(corpus["dirs"], None, doremi, **kwargs)
    with pytest.raises(MixtureInputError, match="reference must be"):
        doremi_mixture(corpus["dirs"], None, DoremiSettings(reference="oracle"), **kwargs)
