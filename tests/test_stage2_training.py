"""Stage-2 continuation and task evaluation: determinism, seeds, optimizer policy, accuracy."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from tikmix.core.atomic import write_json_atomic
from tikmix.core.settings import Stage2Settings
from tikmix.data.errors import DataError
from tikmix.models.checkpoint import save_checkpoint
from tikmix.models.evaluate import mean_loss
from tikmix.models.llama import ModelConfig, TinyLlama, model_flops_per_token
from tikmix.models.stage2 import (
    checkpoint_task_metrics,
    continue_training,
    evaluate_tasks,
    read_checkpoint_task_metrics,
    run_stage2,
    run_stage2_seeds,
)
from tikmix.models.train import train
from tikmix.seeds import derive_seed

VOCAB, SEQ = 24, 16
SETTINGS = Stage2Settings(
    tokens=12 * 8 * SEQ,
    batch_size=8,
    lr=3e-3,
    weight_decay=0.1,
    schedule="cosine",
    warmup_fraction=0.1,
    optimizer_policy="resume",
    eval_batch_size=16,
)


def pattern_stream(period: int, offset: int, n: int = 4000) -> np.ndarray:
    """Tokens ``offset + (t mod period)``: a domain a small model learns quickly."""
    return (offset + np.arange(n) % period).astype(np.uint16)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Two pattern domains, a checkpoint briefly trained on both, a text and a 2-choice task."""
    root = tmp_path_factory.mktemp("stage2")
    rng = np.random.default_rng(0)
    streams = {
        "counting": pattern_stream(5, 1),
        "noise": rng.integers(1, VOCAB, size=4000).astype(np.uint16),
    }
    domain_dirs = {}
    for name, stream in streams.items():
        domain_dirs[name] = root / "domains" / name
        domain_dirs[name].mkdir(parents=True)
        np.save(domain_dirs[name] / "train.npy", stream)

    torch.manual_seed(0)
    config = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=1, n_heads=2, max_seq_len=SEQ)
    model = TinyLlama(config)
    windows = np.stack([streams["counting"][i : i + SEQ + 1] for i in range(0, 3000, 7)])
    result = train(model, (windows[i : i + 8] for i in range(0, 400, 8)), total_steps=20, lr=3e-3)
    checkpoint = save_checkpoint(
        root / "ckpt",
        model,
        step=20,
        tokens_seen=result.tokens_seen,
        mixture={"counting": 1.0},
        tokenizer="none",
        seed=0,
        optimizer=result.optimizer,
    )

    # Text task: counting windows, every target scored.
    ids = np.stack([pattern_stream(5, 1, 200)[i : i + SEQ + 1] for i in range(8)]).astype(np.int32)
    np.savez(root / "text.npz", input_ids=ids, loss_mask=np.ones_like(ids, dtype=np.uint8))
    # Two-choice task: context 1 2 3 4 then the right continuation 5 1 2 or a wrong one.
    context, right, wrong = [1, 2, 3, 4], [5, 1, 2], [3, 3, 3]
    choice_ids, choice_mask = [], []
    for cont in (right, wrong, wrong, right):
        row = np.zeros(SEQ + 1, dtype=np.int32)
        row[: len(context) + len(cont)] = context + cont
        mask = np.zeros(SEQ + 1, dtype=np.uint8)
        mask[len(context) : len(context) + len(cont)] = 1
        choice_ids.append(row)
        choice_mask.append(mask)
    choice_ids, choice_mask = np.stack(choice_ids), np.stack(choice_mask)
    np.savez(
        root / "qa.npz",
        input_ids=choice_ids[[0, 3]],
        loss_mask=choice_mask[[0, 3]],
        choice_ids=choice_ids,
        choice_mask=choice_mask,
        choice_item=np.array([0, 0, 1, 1], dtype=np.int32),
        answer=np.array([0, 1]),
    )
    mixture = root / "mixture.json"
    mixture.write_text(json.dumps({"method": "half", "weights": {"counting": 0.5, "noise": 0.5}}))
    return {
        "root": root,
        "domain_dirs": domain_dirs,
        "checkpoint": checkpoint,
        "config": config,
        "tasks": {"text": root / "text.npz", "qa": root / "qa.npz"},
        "mixture": mixture,
    }


def run(setup, out, seed=0, **overrides):
    return run_stage2(
        method="half",
        mixture_path=setup["mixture"],
        checkpoint_dir=setup["checkpoint"],
        domain_dirs=setup["domain_dirs"],
        task_files=setup["tasks"],
        stage2=dataclasses.replace(SETTINGS, **overrides),
        seq_len=SEQ,
        seed=seed,
        out_path=out,
        device="cpu",
    )


def test_same_method_and_seed_give_identical_metrics(setup, tmp_path):
    first = run(setup, tmp_path / "a.json")
    second = run(setup, tmp_path / "b.json")
    assert first["tasks"] == second["tasks"]
    assert first["average_loss"] == second["average_loss"]
    assert json.loads((tmp_path / "a.json").read_text())["tasks"] == first["tasks"]
    other_seed = run(setup, tmp_path / "c.json", seed=1)
    assert other_seed["tasks"]["text"]["loss"] != first["tasks"]["text"]["loss"]


def test_record_fields_compute_and_policy(setup, tmp_path):
    record = run(setup, tmp_path / "r.json")
    assert record["method"] == "half" and record["seed"] == 0
    assert record["weights"] == {"counting": 0.5, "noise": 0.5}
    assert record["tokens"] == SETTINGS.tokens == record["compute"]["tokens"]
    assert record["compute"]["flops"] == model_flops_per_token(setup["config"], SEQ) * (
        SETTINGS.tokens
    )
    assert record["optimizer_policy"]["policy"] == "resume"
    assert record["optimizer_policy"]["resumed_moments"] is True
    assert record["average_loss"] == pytest.approx(
        np.mean([m["loss"] for m in record["tasks"].values()])
    )
    # The checkpoint's own metrics are recorded as the reference for improvements.
    assert set(record["before"]["tasks"]) == {"text", "qa"}
    fresh = run(setup, tmp_path / "f.json", optimizer_policy="fresh")
    assert fresh["optimizer_policy"]["resumed_moments"] is False
    assert fresh["tasks"] != record["tasks"]  # the moments matter, so the policy is real


def test_multiple_choice_accuracy_reported_for_choice_tasks_only(setup):
    from tikmix.models.checkpoint import load_checkpoint

    model, _ = load_checkpoint(setup["checkpoint"])
    metrics = evaluate_tasks(model, setup["tasks"])
    assert set(metrics["text"]) == {"loss"}
    assert set(metrics["qa"]) == {"loss", "accuracy", "accuracy_norm"}
    # The checkpoint learned the counting pattern: it picks 5 1 2 after 1 2 3 4 both times.
    assert metrics["qa"]["accuracy"] == 1.0
    with np.load(setup["tasks"]["text"]) as task:
        assert metrics["text"]["loss"] == mean_loss(model, task["input_ids"], task["loss_mask"])


def test_stage2_seed_is_derived_not_reused():
    """Stage 2 of run ``s`` does not replay stage 1's data order (which used ``s`` itself)."""
    assert derive_seed(0, "stage2") != 0
    assert derive_seed(0, "stage2") != derive_seed(1, "stage2")
    assert derive_seed(0, "stage2") != derive_seed(0, "stage1")
    assert derive_seed(0, "stage2") == derive_seed(0, "stage2")


def test_continue_training_moves_towards_the_mixture(setup):
    """Training only on noise raises the counting-task loss; only on counting lowers it."""
    from tikmix.models.checkpoint import load_checkpoint

    model, _ = load_checkpoint(setup["checkpoint"])
    start = evaluate_tasks(model, {"text": setup["tasks"]["text"]})["text"]["loss"]
    stage2 = Stage2Settings(tokens=40 * 8 * SEQ, batch_size=8, lr=1e-3)
    common = dict(seq_len=SEQ, seed=0)
    on_counting = continue_training(
        setup["checkpoint"], setup["domain_dirs"], {"counting": 1.0, "noise": 0.0}, stage2, **common
    )
    on_noise = continue_training(
        setup["checkpoint"], setup["domain_dirs"], {"counting": 0.0, "noise": 1.0}, stage2, **common
    )
    loss = {
        name: evaluate_tasks(r.model, {"text": setup["tasks"]["text"]})["text"]["loss"]
        for name, r in (("counting", on_counting), ("noise", on_noise))
    }
    assert loss["counting"] < start < loss["noise"]


def test_bad_inputs_raise_clear_errors(setup, tmp_path):
    with pytest.raises(ValueError, match="optimizer_policy"):
        continue_training(
            setup["checkpoint"],
            setup["domain_dirs"],
            {"counting": 1.0},
            Stage2Settings(tokens=SEQ * 8, batch_size=8, lr=1e-3, optimizer_policy="keep"),
            seq_len=SEQ,
            seed=0,
        )
    with pytest.raises(DataError, match="unknown domain 'web'"):
        continue_training(
            setup["checkpoint"],
            setup["domain_dirs"],
            {"web": 1.0},
            Stage2Settings(tokens=SEQ * 8, batch_size=8, lr=1e-3),
            seq_len=SEQ,
            seed=0,
        )
    bad = tmp_path / "bad.npz"
    np.savez(bad, input_ids=np.zeros((2, SEQ + 1), dtype=np.int32))
    with pytest.raises(ValueError, match=r"bad\.npz.*loss_mask"):
        evaluate_tasks(TinyLlama(setup["config"]), {"bad": bad})


def test_lookahead_response_prefers_the_mixture_that_helps_the_task(setup):
    """TiKMiX-M's lookahead response: a few steps on the task's domain lower its loss more."""
    import pandas as pd

    from tikmix.models.lookahead import lookahead_responses

    mixtures = pd.DataFrame(
        {"counting": [1.0, 0.0], "noise": [0.0, 1.0]}, index=pd.Index([0, 1], name="mixture")
    )
    table, tokens, flops = lookahead_responses(
        setup["checkpoint"],
        setup["domain_dirs"],
        mixtures,
        {"text": setup["tasks"]["text"]},
        steps=40,
        batch_size=8,
        lr=1e-3,
        seq_len=SEQ,
        seed=0,
    )
    assert list(table.columns) == ["text"] and tokens == 2 * 40 * 8 * SEQ and flops > 0
    assert table.loc[0, "text"] > table.loc[1, "text"]


def test_seeds_in_one_process_write_the_records_of_separate_runs(setup, tmp_path):
    """The workflow's layout: the checkpoint's metrics once (through JSON), then all seeds of a
    method in one call; each record equals the one a separate single-seed run writes."""
    before_path = tmp_path / "checkpoint_tasks.json"
    write_json_atomic(
        before_path,
        checkpoint_task_metrics(setup["checkpoint"], setup["tasks"], SETTINGS.eval_batch_size),
    )
    outs = [tmp_path / "seed0.json", tmp_path / "seed1.json"]
    together = run_stage2_seeds(
        method="half",
        mixture_path=setup["mixture"],
        checkpoint_dir=setup["checkpoint"],
        domain_dirs=setup["domain_dirs"],
        task_files=setup["tasks"],
        stage2=SETTINGS,
        seq_len=SEQ,
        seeds=[0, 1],
        out_paths=outs,
        device="cpu",
        before=read_checkpoint_task_metrics(before_path),
    )
    for seed, out, record in zip([0, 1], outs, together, strict=True):
        alone = run(setup, tmp_path / f"alone{seed}.json", seed=seed)
        assert record == alone
        assert json.loads(out.read_text()) == json.loads(
            (tmp_path / f"alone{seed}.json").read_text()
        )
    assert together[0]["tasks"] != together[1]["tasks"]
