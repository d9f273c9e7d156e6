"""The training loop: schedules, learning, determinism, resuming, checkpoints and errors."""

import itertools
import logging

import numpy as np
import pytest
import torch

from tikmix.models.checkpoint import load_checkpoint, load_optimizer_state, save_checkpoint
from tikmix.models.llama import ModelConfig, TinyLlama
from tikmix.models.train import build_optimizer, learning_rate, train

VOCAB, SEQ, BATCH = 16, 16, 8


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models are overhead-bound; a second thread only adds contention on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(seed: int = 0) -> TinyLlama:
    torch.manual_seed(seed)
    return TinyLlama(
        ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=1, n_heads=2, max_seq_len=SEQ)
    )


def pattern_batches(seed: int = 0):
    """Endless batches of the period-5 pattern 1 2 3 4 5 1 2 ... at random phases."""
    rng = np.random.default_rng(seed)
    while True:
        phase = rng.integers(0, 5, size=(BATCH, 1))
        yield (np.arange(SEQ + 1)[None, :] + phase) % 5 + 1


def random_batches(seed: int = 0):
    rng = np.random.default_rng(seed)
    while True:
        yield rng.integers(0, VOCAB, size=(BATCH, SEQ + 1), dtype=np.uint16)


def test_cosine_schedule_values():
    def lr(step):
        return learning_rate(
            step, 100, lr=1.0, schedule="cosine", warmup_fraction=0.1, min_lr_ratio=0.1
        )

    assert lr(1) == pytest.approx(0.1)
    assert lr(5) == pytest.approx(0.5)
    assert lr(10) == pytest.approx(1.0)
    assert lr(55) == pytest.approx(0.55)  # half-way through the cosine: (max + min) / 2
    assert lr(100) == pytest.approx(0.1)
    values = [lr(s) for s in range(10, 101)]
    assert all(a > b for a, b in itertools.pairwise(values))


def test_wsd_schedule_values():
    def lr(step):
        return learning_rate(
            step,
            100,
            lr=2.0,
            schedule="wsd",
            warmup_fraction=0.1,
            decay_fraction=0.2,
            min_lr_ratio=0.0,
        )

    assert lr(5) == pytest.approx(1.0)
    assert [lr(s) for s in (10, 50, 80)] == [2.0, 2.0, 2.0]
    assert lr(90) == pytest.approx(1.0)
    assert lr(100) == 0.0


def test_schedule_errors():
    with pytest.raises(ValueError, match="step must be in"):
        learning_rate(0, 10, lr=1.0)
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        learning_rate(5, 10, lr=1.0, schedule="linear")
    with pytest.raises(ValueError, match="warmup_fraction \\+ decay_fraction"):
        learning_rate(5, 10, lr=1.0, schedule="wsd", warmup_fraction=0.5, decay_fraction=0.6)


def test_no_weight_decay_on_norms_and_embeddings():
    model = TinyLlama(ModelConfig(vocab_size=VOCAB, d_model=16, n_heads=2, tie_embeddings=False))
    decay, no_decay = build_optimizer(
        model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95)
    ).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {names[id(p)] for p in no_decay["params"]} == {
        "embed_tokens.weight",
        "norm.weight",
        *(
            f"layers.{i}.{n}_layernorm.weight"
            for i in range(2)
            for n in ("input", "post_attention")
        ),
    }
    assert "lm_head.weight" in {names[id(p)] for p in decay["params"]}
    assert len(decay["params"]) + len(no_decay["params"]) == len(names)


def test_training_learns_a_repeated_pattern():
    model = tiny()
    result = train(
        model, pattern_batches(), total_steps=60, lr=1e-2, warmup_fraction=0.1, log_every=10
    )
    assert len(result.losses) == 60
    assert result.losses[0] > 2.0  # ~ln 16 at initialisation
    assert np.mean(result.losses[-5:]) < 0.3
    assert result.tokens_seen == 60 * BATCH * SEQ


def test_training_is_deterministic_for_a_seed():
    def run():
        model = tiny(seed=1)
        train(model, random_batches(), total_steps=8, lr=1e-2, seed=5)
        return model.state_dict()

    first, second = run(), run()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first["norm.weight"], tiny(seed=1).norm.weight)  # it did train


def test_resuming_optimizer_state_continues_exactly():
    """Constant lr: 6 steps, then 6 more from the saved moments == 12 steps in one go."""
    options = dict(lr=1e-2, warmup_fraction=0.0, min_lr_ratio=1.0, log_every=100)
    straight = tiny()
    train(straight, random_batches(), total_steps=12, **options)

    resumed, batches = tiny(), random_batches()
    first = train(resumed, batches, total_steps=6, **options)
    state = first.optimizer.state_dict()
    second = train(resumed, batches, total_steps=6, optimizer_state=state, **options)
    for (name, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    assert second.optimizer.param_groups[0]["weight_decay"] == 0.1

    fresh = tiny()
    train(fresh, random_batches(), total_steps=6, **options)
    train(fresh, itertools.islice(random_batches(), 6, None), total_steps=6, **options)
    assert not torch.equal(fresh.lm_head.weight, straight.lm_head.weight)  # moments matter


def test_checkpoint_callback_saves_loadable_checkpoints(tmp_path):
    model = tiny()
    saved = []

    def on_checkpoint(step, tokens_seen, optimizer):
        saved.append((step, tokens_seen))
        save_checkpoint(
            tmp_path / f"step{step}",
            model,
            step=step,
            tokens_seen=tokens_seen,
            mixture={"pattern": 1.0},
            tokenizer="t",
            seed=0,
            optimizer=optimizer,
        )

    train(
        model,
        pattern_batches(),
        total_steps=5,
        lr=1e-2,
        checkpoint_steps=[5, 2],
        on_checkpoint=on_checkpoint,
    )
    assert saved == [(2, 2 * BATCH * SEQ), (5, 5 * BATCH * SEQ)]
    loaded, info = load_checkpoint(tmp_path / "step5")
    ids = torch.as_tensor(next(pattern_batches()))
    assert info.step == 5 and torch.equal(loaded(ids[:, :-1]), model.eval()(ids[:, :-1]))
    assert load_optimizer_state(tmp_path / "step2") is not None


def test_progress_log_lines(caplog):
    with caplog.at_level(logging.INFO, logger="tikmix.models.train"):
        train(tiny(), random_batches(), total_steps=4, lr=1e-3, log_every=2)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert (
        lines[-1].startswith("step 4/4  loss ")
        and "tokens/s" in lines[-1]
        and "ETA 0s" in lines[-1]
    )


def test_training_errors():
    with pytest.raises(ValueError, match="ran out after 2 of total_steps=5"):
        train(tiny(), itertools.islice(random_batches(), 2), total_steps=5, lr=1e-3)
    with pytest.raises(ValueError, match="outside \\[0, 16\\)"):
        train(tiny(), iter([np.full((2, 5), 16)]), total_steps=1, lr=1e-3)
    with pytest.raises(ValueError, match="\\[B, L \\+ 1\\]"):
        train(tiny(), iter([np.zeros(5, dtype=np.int64)]), total_steps=1, lr=1e-3)
    with pytest.raises(ValueError, match="checkpoint_steps"):
        train(
            tiny(),
            random_batches(),
            total_steps=3,
            lr=1e-3,
            checkpoint_steps=[4],
            on_checkpoint=print,
        )
