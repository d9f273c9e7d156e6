"""The data and stage-1 stages through the `snakemake` CLI on the tiny synthetic config."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from conftest import run_snakemake, tiny_config

pytestmark = pytest.mark.workflow


def test_data_and_stage1_run_then_nothing_to_do(workflow_dir):
    run_snakemake(workflow_dir, "results/stage1/metrics.json")
    metrics = json.loads((workflow_dir / "results/stage1/metrics.json").read_text())
    losses = [c["heldout_loss"] for c in metrics["checkpoints"]]
    assert len(losses) == 2 and losses[-1] < losses[0], losses
    for name in ("stage1-050", "stage1-100"):
        ckpt = workflow_dir / "results/checkpoints" / name
        info = json.loads((ckpt / "tikmix.json").read_text())
        assert info["tokens_seen"] > 0 and (ckpt / "model.safetensors").is_file()
    meta = json.loads((workflow_dir / "results/data/domains/domain0/meta.json").read_text())
    train = np.load(workflow_dir / "results/data/domains/domain0/train.npy")
    assert meta["n_tokens_train"] == len(train) > 0
    for rule in ("train_stage1", "tokenize_domain", "train_tokenizer"):
        assert any((workflow_dir / "logs" / rule).iterdir()), rule
    second = run_snakemake(workflow_dir, "results/stage1/metrics.json", "-n")
    assert "Nothing to be done" in second.stdout + second.stderr


@pytest.mark.parametrize(
    "override, key",
    [
        ({"stage1": {"tokens": "many"}}, "tokens"),
        ({"stage1": {"learning_rate": 0.1}}, "learning_rate"),
        ({"data": {"seq_len": 0}}, "seq_len"),
    ],
)
def test_invalid_config_names_the_key(workflow_dir, synthetic_corpus, override, key):
    config = tiny_config(synthetic_corpus, **override)
    (workflow_dir / "config.yaml").write_text(yaml.safe_dump(config))
    result = run_snakemake(workflow_dir, "-n", check=False)
    assert result.returncode != 0
    assert key in result.stdout + result.stderr


def test_missing_domain_file_fails_before_any_job(workflow_dir, synthetic_corpus):
    config = tiny_config(synthetic_corpus)
    config["domains"]["ghost"] = {"paths": [str(workflow_dir / "nowhere/*.jsonl")]}
    (workflow_dir / "config.yaml").write_text(yaml.safe_dump(config))
    result = run_snakemake(workflow_dir, "-n", check=False)
    assert result.returncode != 0
    assert "domains.ghost.paths" in result.stderr + result.stdout
