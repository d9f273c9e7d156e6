"""Stage 1: train the built-in model on the prior mixture and checkpoint it along the way.

The demo and the tests need checkpoints to analyse; users who bring their own skip this stage.
Held-out loss is measured at every checkpoint on one fixed held-out sample per domain (the same
sequences for every checkpoint), so the curve is comparable across checkpoints.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tikmix.core.atomic import write_json_atomic
from tikmix.core.mixture import read_mixture
from tikmix.data.sampler import load_streams, sample_mixture
from tikmix.data.tokenizer import load_tokenizer, vocab_size
from tikmix.models.checkpoint import save_checkpoint
from tikmix.models.device import resolve_device
from tikmix.models.evaluate import mean_loss
from tikmix.models.llama import ModelConfig, num_parameters
from tikmix.models.train import TrainSettings, train_on_mixture
from tikmix.seeds import derive_seed

log = logging.getLogger(__name__)

HELDOUT_TOKENS_PER_DOMAIN = 16384


def heldout_samples(
    heldout_streams: Mapping[str, np.ndarray], seq_len: int, n_tokens: int, seed: int
) -> dict[str, np.ndarray]:
    """A fixed held-out sample per domain (domains with too little held-out text are skipped)."""
    samples = {}
    for name, stream in heldout_streams.items():
        budget = min(n_tokens, (len(stream) - 1) // seq_len * seq_len)
        if budget >= seq_len:
            samples[name] = sample_mixture({name: stream}, {name: 1.0}, budget, seq_len, seed).ids
        else:
            log.warning("domain %s: held-out stream too short for one sequence; skipped", name)
    return samples


def heldout_losses(model: torch.nn.Module, samples: Mapping[str, np.ndarray]) -> dict[str, float]:
    return {name: mean_loss(model, ids, np.ones_like(ids)) for name, ids in samples.items()}


def train_stage1(
    *,
    domain_dirs: Mapping[str, str | Path],
    weights: Mapping[str, float],
    tokenizer_path: str | Path,
    model_options: Mapping[str, Any],
    stage1: Mapping[str, Any],
    seq_len: int,
    seed: int,
    checkpoints: Mapping[str, tuple[float, str | Path]],
    metrics_path: str | Path,
    device: str = "auto",
) -> dict[str, Any]:
    """Train from scratch on ``weights`` and save ``checkpoints`` (name → (fraction, directory)).

    ``stage1`` holds ``tokens, batch_size, lr, weight_decay, schedule, warmup_fraction``.
    Returns (and writes to ``metrics_path``) the held-out loss at every checkpoint and throughput.
    """
    torch_device = resolve_device(device)
    streams = load_streams(domain_dirs, "train")
    samples = heldout_samples(
        load_streams(domain_dirs, "heldout"),
        seq_len,
        HELDOUT_TOKENS_PER_DOMAIN,
        derive_seed(seed, "stage1-heldout"),
    )
    n_vocab = vocab_size(load_tokenizer(tokenizer_path))
    config = ModelConfig(vocab_size=n_vocab, max_seq_len=seq_len, **model_options)
    settings = TrainSettings.from_options(stage1, seq_len=seq_len)
    total_steps = settings.steps
    steps = {
        max(1, round(fraction * total_steps)): name for name, (fraction, _) in checkpoints.items()
    }
    if len(steps) != len(checkpoints):
        raise ValueError(
            f"stage1: checkpoint fractions {[f for f, _ in checkpoints.values()]} fall on the same "
            f"step of {total_steps}; increase stage1.tokens or space the fractions out"
        )
    records: list[dict[str, Any]] = []

    def on_checkpoint(
        model: torch.nn.Module, step: int, tokens_seen: int, optimizer: torch.optim.Optimizer
    ) -> None:
        name = steps[step]
        save_checkpoint(
            checkpoints[name][1],
            model,
            config,
            step=step,
            tokens_seen=tokens_seen,
            mixture=dict(weights),
            tokenizer=str(tokenizer_path),
            seed=seed,
            optimizer=optimizer,
            overwrite=True,
        )
        losses = heldout_losses(model, samples)
        model.train()
        mean = float(np.mean(list(losses.values())))
        records.append(
            {
                "name": name,
                "step": step,
                "tokens_seen": tokens_seen,
                "heldout_loss": mean,
                "heldout_loss_by_domain": losses,
            }
        )
        log.info("checkpoint %s at step %d: mean held-out loss %.4f", name, step, mean)

    start = time.perf_counter()
    run = train_on_mixture(
        config,
        weights,
        streams,
        settings,
        seed=seed,
        data_seed=derive_seed(seed, "stage1"),
        device=torch_device,
        checkpoint_steps=sorted(steps),
        on_checkpoint=on_checkpoint,
        label="stage 1",
        logger=log,
    )
    wall = time.perf_counter() - start
    metrics = {
        "n_parameters": num_parameters(run.model),
        "model": config.to_dict(),
        "steps": run.steps,
        "tokens": run.tokens,
        "wall_seconds": wall,
        "tokens_per_second": run.tokens / wall,
        "final_train_loss": float(np.mean(run.losses[-20:])),
        "checkpoints": records,
    }
    write_json_atomic(metrics_path, metrics)
    return metrics


def run_stage1(
    *,
    prior_path: str | Path,
    tokenizer_path: str | Path,
    checkpoint_dirs: Sequence[str | Path],
    metrics_path: str | Path,
    domain_dirs: Mapping[str, str | Path],
    checkpoints: Mapping[str, float],
    model: Mapping[str, Any],
    stage1: Mapping[str, Any],
    seq_len: int,
    seed: int,
    device: str = "auto",
) -> dict[str, Any]:
    """The stage-1 rule: :func:`train_stage1` on the prior mixture document at ``prior_path``.

    ``checkpoints`` maps checkpoint names to fractions of the run, in the order of
    ``checkpoint_dirs``; ``model`` holds the :class:`ModelConfig` options besides the vocabulary
    (the tokenizer's) and ``max_seq_len`` (``seq_len``).
    """
    if len(checkpoints) != len(checkpoint_dirs):
        raise ValueError(f"{len(checkpoints)} checkpoints but {len(checkpoint_dirs)} directories")
    return train_stage1(
        domain_dirs=domain_dirs,
        weights=read_mixture(prior_path).to_dict(),
        tokenizer_path=tokenizer_path,
        model_options=model,
        stage1=stage1,
        seq_len=seq_len,
        seed=seed,
        checkpoints={
            name: (fraction, directory)
            for (name, fraction), directory in zip(
                checkpoints.items(), checkpoint_dirs, strict=True
            )
        },
        metrics_path=metrics_path,
        device=device,
    )
