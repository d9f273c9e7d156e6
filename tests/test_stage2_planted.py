"""Acceptance: on a corpus with planted structure, the TiKMiX-D mixture trains a better model.

The whole chain at toy scale: tokenizer, domain streams and tasks from the synthetic corpus;
stage 1 on the uniform mixture; EK-FAC group influence at the checkpoint; TiKMiX-D; then stage 2
from the checkpoint on TiKMiX-D and on the uniform mixture, three seeds each, compared in the
Table-1 summary. The validation tasks are written by domain 0 (two tasks) and by domains 2 and 3
(the blend); no task uses domain 1, so uniform spends a quarter of stage 2 on useless data.
"""

import json

import numpy as np
import pandas as pd
import pytest

from tikmix.analysis.evaluation import evaluation_table, method_summary
from tikmix.core.mixture import mixture_document, write_mixture
from tikmix.core.settings import Stage2Settings
from tikmix.data import (
    DomainSource,
    load_streams,
    sample_mixture,
    tokenize_domain,
    tokenize_task,
    train_tokenizer,
)
from tikmix.influence import (
    domain_gradient,
    fit_ekfac,
    influence_matrix,
    iterate_batches,
    precondition,
    task_gradient,
)
from tikmix.mixing.tikmix_d import solve_tikmix_d
from tikmix.models.checkpoint import load_checkpoint
from tikmix.models.stage1 import train_stage1
from tikmix.models.stage2 import run_stage2

SEQ = 32
TASKS = ("text_domain0", "qa_domain0", "blend_domain2_domain3")
STAGE2 = Stage2Settings(
    tokens=60_000,
    batch_size=16,
    lr=3e-3,
    weight_decay=0.1,
    schedule="cosine",
    warmup_fraction=0.05,
    optimizer_policy="resume",
    eval_batch_size=32,
)


@pytest.fixture(scope="module")
def pipeline(synthetic_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    texts = [
        json.loads(line)["text"]
        for path in synthetic_corpus.domain_files.values()
        for line in path.read_text().splitlines()
    ]
    tokenizer = root / "tokenizer.json"
    train_tokenizer(texts, 512, tokenizer)
    domain_dirs = {}
    for name, path in synthetic_corpus.domain_files.items():
        domain_dirs[name] = root / "domains" / name
        source = DomainSource(name, (str(path),))
        tokenize_domain(source, tokenizer, domain_dirs[name], heldout_fraction=0.1)
    task_files = {}
    for task in TASKS:
        task_files[task] = root / "tasks" / f"{task}.npz"
        tokenize_task(synthetic_corpus.task_files[task], tokenizer, task_files[task], SEQ)
    uniform = {name: 1 / len(domain_dirs) for name in domain_dirs}
    checkpoint = root / "checkpoint"
    train_stage1(
        domain_dirs=domain_dirs,
        weights=uniform,
        tokenizer_path=tokenizer,
        model_options={"d_model": 32, "n_layers": 2, "n_heads": 2},
        stage1={
            "tokens": 120_000,
            "batch_size": 16,
            "lr": 0.01,
            "weight_decay": 0.1,
            "schedule": "cosine",
            "warmup_fraction": 0.05,
        },
        seq_len=SEQ,
        seed=0,
        checkpoints={"last": (1.0, checkpoint)},
        metrics_path=root / "stage1.json",
        device="cpu",
    )
    return {
        "root": root,
        "domain_dirs": domain_dirs,
        "task_files": task_files,
        "checkpoint": checkpoint,
        "uniform": uniform,
    }


def benefit_matrix(pipeline) -> pd.DataFrame:
    model, _ = load_checkpoint(pipeline["checkpoint"])
    streams = load_streams(pipeline["domain_dirs"])
    fit_ids = sample_mixture(streams, pipeline["uniform"], 16384, SEQ, seed=1).ids
    factors = fit_ekfac(model, list(iterate_batches(fit_ids, batch_size=32)))
    task_grads = {}
    for task, path in pipeline["task_files"].items():
        with np.load(path) as arrays:
            task_grads[task] = task_gradient(model, arrays["input_ids"], arrays["loss_mask"])
    domain_grads = {
        name: domain_gradient(
            model,
            list(iterate_batches(sample_mixture(streams, {name: 1.0}, 8192, SEQ, 2).ids)),
        )
        for name in streams
    }
    matrix, _ = influence_matrix(precondition(factors, task_grads), domain_grads)
    return matrix


def test_tikmix_d_beats_uniform_after_stage_2_on_every_seed(pipeline):
    B = benefit_matrix(pipeline)
    # The influence recovers the planted structure: each task's own domains help it most.
    assert B.loc["text_domain0"].idxmax() == "domain0"
    assert B.loc["qa_domain0"].idxmax() == "domain0"
    assert set(B.loc["blend_domain2_domain3"].nlargest(2).index) == {"domain2", "domain3"}

    solved = solve_tikmix_d(B, pd.Series(pipeline["uniform"]))
    assert solved.weights.idxmin() == "domain1"  # no task uses it
    assert solved.weights.idxmax() == "domain0"  # two tasks use it
    mixtures = {}
    for method, weights in (("tikmix_d", solved.weights), ("uniform", pipeline["uniform"])):
        mixtures[method] = pipeline["root"] / "mixtures" / f"{method}.json"
        write_mixture(mixtures[method], mixture_document(pd.Series(weights), method=method))

    records = [
        run_stage2(
            method=method,
            mixture_path=path,
            checkpoint_dir=pipeline["checkpoint"],
            domain_dirs=pipeline["domain_dirs"],
            task_files=pipeline["task_files"],
            stage2=STAGE2,
            seq_len=SEQ,
            seed=seed,
            out_path=pipeline["root"] / "evaluation" / method / f"seed{seed}.json",
            device="cpu",
        )
        for method, path in mixtures.items()
        for seed in range(3)
    ]
    loss = {(r["method"], r["seed"]): r["average_loss"] for r in records}
    for seed in range(3):
        assert loss["tikmix_d", seed] < loss["uniform", seed], loss
    summary = method_summary(evaluation_table(records))
    assert summary["average_loss_mean"].idxmin() == "tikmix_d"
    assert (
        summary.loc["tikmix_d", "average_loss_mean"] < summary.loc["uniform", "average_loss_mean"]
    )
    # Both mixtures improve on the checkpoint itself.
    assert all(r["average_loss"] < r["before"]["average_loss"] for r in records)
