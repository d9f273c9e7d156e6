"""One training entry point: stage 1, stage 2, RegMix's proxies and DoReMi all train through
:func:`~tikmix.models.train.train_on_mixture`, and a run through it is the bare loop's run."""

import importlib

import numpy as np
import pandas as pd
import pytest
import torch

import tikmix.mixing.doremi
import tikmix.mixing.regmix
from tikmix.core.settings import DoremiSettings, ProxyModel, Stage2Settings
from tikmix.data.sampler import load_streams, mixture_batches
from tikmix.data.tokenizer import train_tokenizer
from tikmix.models import proxies, stage1, stage2
from tikmix.models.checkpoint import load_checkpoint, load_optimizer_state
from tikmix.models.llama import ModelConfig, TinyLlama
from tikmix.models.train import TrainSettings, train, train_on_mixture
from tikmix.seeds import derive_seed

# ``tikmix.models.train`` the attribute is the loop function; the module is imported by name.
train_module = importlib.import_module("tikmix.models.train")
SEQ = 16
PROXY = {"d_model": 16, "n_layers": 1, "n_heads": 2}
STAGE1 = dict(batch_size=4, lr=1e-2, weight_decay=0.1, schedule="cosine", warmup_fraction=0.05)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Three domains (one learnable), a task, a tokenizer and a stage-1 checkpoint."""
    root = tmp_path_factory.mktemp("entry")
    rng = np.random.default_rng(0)
    streams = {
        "counting": (1 + np.arange(3000) % 5).astype(np.uint16),
        "noise_a": rng.integers(1, 24, size=3000).astype(np.uint16),
        "noise_b": rng.integers(1, 24, size=3000).astype(np.uint16),
    }
    dirs = {}
    for name, stream in streams.items():
        dirs[name] = root / name
        dirs[name].mkdir()
        np.save(dirs[name] / "train.npy", stream)
        np.save(dirs[name] / "heldout.npy", stream[:600].copy())
    ids = np.stack([streams["counting"][i : i + SEQ + 1] for i in range(8)]).astype(np.int32)
    np.savez(root / "task.npz", input_ids=ids, loss_mask=np.ones_like(ids, dtype=np.uint8))
    tokenizer = root / "tokenizer.json"
    train_tokenizer(["abc def ghi jkl mno pqr stu vwx yz " * 20], 300, tokenizer)
    checkpoint = root / "ckpt"
    stage1.train_stage1(
        domain_dirs=dirs,
        weights={"counting": 0.5, "noise_a": 0.25, "noise_b": 0.25},
        tokenizer_path=tokenizer,
        model_options=PROXY,
        stage1={**STAGE1, "tokens": 6 * 4 * SEQ},
        seq_len=SEQ,
        seed=0,
        checkpoints={"last": (1.0, checkpoint)},
        metrics_path=root / "stage1.json",
        device="cpu",
    )
    return {"dirs": dirs, "task": root / "task.npz", "checkpoint": checkpoint, "root": root}


def test_every_training_goes_through_the_entry_point(corpus, monkeypatch):
    labels, loops = [], []
    entry, loop = train_module.train_on_mixture, train_module.train

    def spy_entry(*args, **kwargs):
        labels.append(kwargs["label"])
        return entry(*args, **kwargs)

    def spy_loop(*args, **kwargs):
        loops.append(kwargs["total_steps"])
        return loop(*args, **kwargs)

    for module in (stage1, stage2, proxies):
        monkeypatch.setattr(module, "train_on_mixture", spy_entry)
    monkeypatch.setattr(train_module, "train", spy_loop)
    root = corpus["root"]
    stage1.run_stage1(
        prior_path=_mixture_file(root / "prior.json"),
        tokenizer_path=root / "tokenizer.json",
        checkpoint_dirs=[root / "spy-ckpt"],
        metrics_path=root / "spy-stage1.json",
        domain_dirs=corpus["dirs"],
        checkpoints={"last": 1.0},
        model=PROXY,
        stage1={**STAGE1, "tokens": 2 * 4 * SEQ},
        seq_len=SEQ,
        seed=0,
        device="cpu",
    )
    stage2.continue_training(
        corpus["checkpoint"],
        corpus["dirs"],
        {"counting": 1.0},
        Stage2Settings(tokens=2 * 4 * SEQ, batch_size=4, lr=1e-3),
        seq_len=SEQ,
        seed=0,
    )
    config = ModelConfig(vocab_size=24, max_seq_len=SEQ, **PROXY)
    proxies.train_proxy(
        load_streams(corpus["dirs"]),
        {"counting": 0.5, "noise_a": 0.5, "noise_b": 0.0},
        {"task": corpus["task"]},
        config,
        tokens=2 * 4 * SEQ,
        batch_size=4,
        seq_len=SEQ,
        lr=1e-2,
        seed=1,
    )
    proxies.doremi_mixture(
        corpus["dirs"],
        pd.Series(1 / 3, index=list(corpus["dirs"])),
        DoremiSettings(
            reference="train",
            reference_tokens=2 * 3 * SEQ,
            proxy_tokens=2 * 3 * SEQ,
            batch_size=3,
            model=ProxyModel(**PROXY),
        ),
        vocab_size=24,
        seq_len=SEQ,
    )
    assert labels == ["stage 1", "stage 2", "RegMix proxy", "DoReMi reference", "DoReMi proxy"]
    assert loops == [2, 2, 2, 2, 2]  # each entry runs the one loop once, nothing else does
    # No module trains with a loop (or an optimizer) of its own.
    for module in (stage1, stage2, proxies, tikmix.mixing.regmix, tikmix.mixing.doremi):
        assert not {"train", "build_optimizer", "learning_rate"} & set(vars(module)), module


def _mixture_file(path):
    path.write_text('{"weights": {"counting": 0.5, "noise_a": 0.25, "noise_b": 0.25}}')
    return path


def test_stage2_run_is_the_bare_loop_on_the_mixture(corpus):
    """continue_training == train_on_mixture == train(mixture_batches(...)) by hand, bitwise."""
    weights = {"counting": 0.25, "noise_a": 0.5, "noise_b": 0.25}
    kwargs = dict(tokens=5 * 4 * SEQ, batch_size=4, lr=2e-3, warmup_fraction=0.1)
    run = stage2.continue_training(
        corpus["checkpoint"], corpus["dirs"], weights, Stage2Settings(**kwargs), seq_len=SEQ, seed=3
    )
    via_entry = train_on_mixture(
        corpus["checkpoint"],
        weights,
        load_streams(corpus["dirs"]),
        TrainSettings(seq_len=SEQ, **kwargs),
        seed=derive_seed(3, "stage2"),
        optimizer_policy="resume",
    )
    model, _ = load_checkpoint(corpus["checkpoint"], dtype=torch.float32)
    run_seed = derive_seed(3, "stage2")
    by_hand = train(
        model,
        mixture_batches(load_streams(corpus["dirs"]), weights, 5, 4, SEQ, run_seed),
        total_steps=5,
        lr=2e-3,
        warmup_fraction=0.1,
        seed=run_seed,
        optimizer_state=load_optimizer_state(corpus["checkpoint"]),
    )
    assert run.steps == via_entry.steps == by_hand.steps == 5
    assert run.train_losses == via_entry.losses == by_hand.losses
    assert run.optimizer_policy["resumed_moments"] and via_entry.resumed_moments
    for other in (via_entry.model, model):
        for a, b in zip(run.model.state_dict().values(), other.state_dict().values(), strict=True):
            assert torch.equal(a, b)
    assert via_entry.compute.to_dict() == {"tokens": 5 * 4 * SEQ, "flops": float(run.flops)}


def test_scratch_run_is_the_bare_loop_with_the_seeded_initialisation(corpus):
    config = ModelConfig(vocab_size=24, max_seq_len=SEQ, **PROXY)
    weights = {"counting": 0.5, "noise_a": 0.5, "noise_b": 0.0}
    streams = load_streams(corpus["dirs"])
    settings = TrainSettings(tokens=4 * 4 * SEQ + 5, batch_size=4, seq_len=SEQ, lr=1e-2)
    run = train_on_mixture(config, weights, streams, settings, seed=7, data_seed=8)
    torch.manual_seed(7)
    model = TinyLlama(config)
    by_hand = train(
        model, mixture_batches(streams, weights, 4, 4, SEQ, 8), total_steps=4, lr=1e-2, seed=7
    )
    assert settings.steps == run.steps == 4 and run.losses == by_hand.losses
    for a, b in zip(run.model.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_entry_point_errors(corpus):
    config = ModelConfig(vocab_size=24, max_seq_len=SEQ, **PROXY)
    settings = TrainSettings(tokens=SEQ, batch_size=1, seq_len=SEQ, lr=1e-3)
    with pytest.raises(ValueError, match="optimizer_policy"):
        train_on_mixture(corpus["checkpoint"], None, None, settings, seed=0, optimizer_policy="x")
    with pytest.raises(ValueError, match="from scratch"):
        train_on_mixture(config, None, None, settings, seed=0, optimizer_policy="resume")
    with pytest.raises(ValueError, match="needs a mixture"):
        train_on_mixture(config, None, None, settings, seed=0)
