"""Planted structure: on the synthetic corpus, each text task's top domain is its source domain.

A TinyLlama is trained briefly on a uniform mixture of the synthetic domains (word-level token ids,
packed with EOS = 0), EK-FAC is fitted on the same mixture (true Fisher), and the benefit matrix
of the single-domain and blended tasks against every domain must rank the source domain(s) first.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch

from tikmix.data.sampler import sample_mixture
from tikmix.data.synthetic import make_synthetic_corpus
from tikmix.influence import (
    domain_gradient,
    fit_ekfac,
    influence_matrix,
    precondition,
    task_gradient,
)
from tikmix.models.llama import ModelConfig, TinyLlama
from tikmix.models.loss import summed_loss

SEQ = 32


def _texts(path) -> list[str]:
    with open(path) as f:
        return [json.loads(line)["text"] for line in f]


def test_each_task_ranks_its_source_domain_first(tmp_path):
    corpus = make_synthetic_corpus(tmp_path, n_domains=4, docs_per_domain=60, task_items=16)
    vocab: dict[str, int] = {"<eos>": 0}

    def encode(texts: list[str]) -> np.ndarray:
        ids = []
        for text in texts:
            ids += [vocab.setdefault(w, len(vocab)) for w in text.split()] + [0]
        return np.asarray(ids, dtype=np.int64)

    streams = {d: encode(_texts(p)) for d, p in corpus.domain_files.items()}
    tasks = {t: encode(_texts(corpus.task_files[t])) for t in corpus.ground_truth if "qa" not in t}
    uniform = dict.fromkeys(streams, 1 / len(streams))

    torch.manual_seed(0)
    model = TinyLlama(
        ModelConfig(vocab_size=len(vocab), d_model=32, n_layers=1, n_heads=2, max_seq_len=SEQ)
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    train = torch.from_numpy(sample_mixture(streams, uniform, 150_000, SEQ, seed=0).ids)
    for batch in train.split(32):
        loss, count = summed_loss(model, batch)
        optimizer.zero_grad()
        (loss / count).backward()
        optimizer.step()

    fit = torch.from_numpy(sample_mixture(streams, uniform, 8_192, SEQ, seed=1).ids)
    factors = fit_ekfac(model, list(fit.split(32)), seed=2)
    task_grads = {
        t: task_gradient(model, np.lib.stride_tricks.sliding_window_view(s, SEQ + 1)[::SEQ])
        for t, s in tasks.items()
    }
    domain_grads = {
        d: domain_gradient(
            model,
            torch.from_numpy(sample_mixture(streams, {d: 1.0}, 8_192, SEQ, seed=3).ids).split(64),
        )
        for d in streams
    }
    matrix, _ = influence_matrix(precondition(factors, task_grads), domain_grads)
    with pd.option_context("display.width", 200):
        print(matrix)
    for task, sources in corpus.ground_truth.items():
        if task in matrix.index:
            ranked = matrix.loc[task].sort_values(ascending=False).index.tolist()
            assert sorted(ranked[: len(sources)]) == sorted(sources), (task, ranked)
