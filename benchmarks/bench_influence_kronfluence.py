"""Benchmark (c): EK-FAC fit + group scores, tikmix vs kronfluence 1.0.1, same model and data.

Model: built-in TinyLlama (vocab 512 / d 64 / 2 layers, fp32). EK-FAC fitted on 256 sequences of
64 tokens (empirical Fisher, batch 32) in both; then a 2-task × 4-domain benefit matrix, which
kronfluence computes with ``aggregate_query_gradients`` and ``aggregate_train_gradients`` (one
call per pair). The scores are checked to agree. Target: tikmix ≤ 1.0× kronfluence's time.
kronfluence writes its factors under a temporary directory. Run:
``.venv/bin/python benchmarks/bench_influence_kronfluence.py``.
"""

from __future__ import annotations

import copy
import logging
import tempfile
import time
import warnings

import numpy as np
import torch
from kronfluence import Analyzer, Task, prepare_model
from kronfluence.arguments import FactorArguments, ScoreArguments

from tikmix.influence import (
    domain_gradient,
    fit_ekfac,
    influence_matrix,
    precondition,
    select_modules,
)
from tikmix.models.llama import ModelConfig, TinyLlama
from tikmix.models.loss import summed_loss

VOCAB, SEQ = 512, 64


class LmTask(Task):
    def __init__(self, names):
        self.names = names

    def compute_train_loss(self, batch, model, sample=False):
        return summed_loss(model, batch)[0]

    def compute_measurement(self, batch, model):
        return summed_loss(model, batch)[0]

    def get_influence_tracked_modules(self):
        return self.names


class Sequences(torch.utils.data.Dataset):
    def __init__(self, ids):
        self.ids = ids

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return self.ids[i]


def main() -> None:
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.disable(logging.WARNING)
    torch.manual_seed(0)
    model = TinyLlama(ModelConfig(vocab_size=VOCAB, d_model=64, n_layers=2, max_seq_len=SEQ))
    modules = select_modules(model)
    fit = torch.randint(VOCAB, (256, SEQ + 1))
    tasks = {f"t{i}": torch.randint(VOCAB, (16, SEQ + 1)) for i in range(2)}
    domains = {f"d{i}": torch.randint(VOCAB, (64, SEQ + 1)) for i in range(4)}

    start = time.perf_counter()
    factors = fit_ekfac(model, list(fit.split(32)), modules=modules, fisher="empirical")
    task_grads = {
        t: domain_gradient(model, list(ids.split(32)), modules) for t, ids in tasks.items()
    }
    domain_grads = {
        d: domain_gradient(model, list(ids.split(32)), modules) for d, ids in domains.items()
    }
    ours, _ = influence_matrix(precondition(factors, task_grads), domain_grads)
    ours_time = time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        task = LmTask(list(modules))
        ref_model = prepare_model(copy.deepcopy(model), task)
        start = time.perf_counter()
        analyzer = Analyzer("bench", ref_model, task, cpu=True, disable_tqdm=True, output_dir=tmp)
        analyzer.fit_all_factors(
            "f",
            Sequences(fit),
            per_device_batch_size=32,
            factor_args=FactorArguments(use_empirical_fisher=True),
        )
        score_args = ScoreArguments(
            damping_factor=None, aggregate_query_gradients=True, aggregate_train_gradients=True
        )
        reference = np.zeros(ours.shape)
        for i, (t, t_ids) in enumerate(tasks.items()):
            for j, (d, d_ids) in enumerate(domains.items()):
                analyzer.compute_pairwise_scores(
                    f"s{i}{j}",
                    "f",
                    Sequences(t_ids),
                    Sequences(d_ids),
                    per_device_query_batch_size=32,
                    per_device_train_batch_size=32,
                    score_args=score_args,
                )
                score = float(analyzer.load_pairwise_scores(f"s{i}{j}")["all_modules"].sum())
                reference[i, j] = score / (task_grads[t].n_tokens * domain_grads[d].n_tokens)
        kron_time = time.perf_counter() - start

    error = np.max(np.abs(ours.to_numpy() - reference)) / np.max(np.abs(reference))
    print(
        f"threads={torch.get_num_threads()} fit={len(fit)}x{SEQ} tokens, "
        f"{len(tasks)} tasks x {len(domains)} domains"
    )
    print(f"max |ours - kronfluence| / max |kronfluence| = {error:.2e}")
    print(f"tikmix      EK-FAC fit + matrix: {ours_time:8.2f} s")
    print(f"kronfluence EK-FAC fit + matrix: {kron_time:8.2f} s")
    print(f"ratio tikmix / kronfluence = {ours_time / kron_time:.2f}  (target <= 1.0)")


if __name__ == "__main__":
    main()
