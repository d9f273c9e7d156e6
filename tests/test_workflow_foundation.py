"""The data and stage-1 stages through the `snakemake` CLI on the tiny synthetic config."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from conftest import run_snakemake, tiny_config

pytestmark = pytest.mark.workflow


def test_data_and_stage1_outputs_and_nothing_left_to_do(completed_workflow):
    workdir = completed_workflow.workdir
    metrics = json.loads((workdir / "results/stage1/metrics.json").read_text())
    losses = [c["heldout_loss"] for c in metrics["checkpoints"]]
    assert len(losses) == 2 and losses[-1] < losses[0], losses
    for name in ("stage1-050", "stage1-100"):
        ckpt = workdir / "results/checkpoints" / name
        info = json.loads((ckpt / "tikmix.json").read_text())
        assert info["tokens_seen"] > 0 and (ckpt / "model.safetensors").is_file()
    meta = json.loads((workdir / "results/data/domains/domain0/meta.json").read_text())
    train = np.load(workdir / "results/data/domains/domain0/train.npy")
    assert meta["n_tokens_train"] == len(train) > 0
    for rule in ("train_stage1", "tokenize_domain", "train_tokenizer", "domain_gradients"):
        assert any((workdir / "logs" / rule).rglob("*.log")), rule
    second = completed_workflow.snakemake("-n")
    assert "Nothing to be done" in second.stdout + second.stderr


@pytest.mark.parametrize(
    "override, key",
    [
        ({"stage1": {"tokens": "many"}}, "tokens"),
        ({"stage1": {"learning_rate": 0.1}}, "learning_rate"),
        ({"data": {"seq_len": 0}}, "seq_len"),
        ({"mixing": {"tikmix_d": {"alpha": -1}}}, "alpha"),
    ],
)
def test_invalid_config_names_the_key(workflow_dir, synthetic_corpus, override, key):
    config = tiny_config(synthetic_corpus, **override)
    (workflow_dir / "config.yaml").write_text(yaml.safe_dump(config))
    result = run_snakemake(workflow_dir, "-n", check=False)
    assert result.returncode != 0
    assert key in result.stdout + result.stderr


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (
            lambda c, d: c["domains"].update(ghost={"paths": [str(d / "no/*.jsonl")]}),
            "domains.ghost.paths",
        ),
        (lambda c, d: c["tasks"].update(ghost={"path": str(d / "none.jsonl")}), "tasks.ghost.path"),
        (lambda c, d: c["tokenizer"].update(path=str(d / "tok.json")), "tokenizer.path"),
    ],
)
def test_missing_input_fails_before_any_job(workflow_dir, synthetic_corpus, mutate, expected):
    config = tiny_config(synthetic_corpus)
    mutate(config, workflow_dir)
    (workflow_dir / "config.yaml").write_text(yaml.safe_dump(config))
    result = run_snakemake(workflow_dir, "-n", check=False)
    assert result.returncode != 0
    assert expected in result.stderr + result.stdout
