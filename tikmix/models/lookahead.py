"""The ``lookahead`` response of TiKMiX-M: a few optimizer steps on a candidate mixture.

The paper measures each candidate's response as its (linear) group influence. Lookahead instead
continues training the checkpoint for a few steps on a fresh sample of the mixture and measures
how much each task's loss falls: a genuinely non-linear response, at the price of one short
training run per candidate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from tikmix.core.settings import Stage2Settings
from tikmix.models.checkpoint import load_checkpoint
from tikmix.models.stage2 import continue_training, evaluate_tasks
from tikmix.seeds import derive_seed

log = logging.getLogger(__name__)


def lookahead_responses(
    checkpoint_dir: str | Path,
    domain_dirs: Mapping[str, str | Path],
    mixtures: pd.DataFrame,
    task_files: Mapping[str, str | Path],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seq_len: int,
    seed: int,
    device: str = "cpu",
) -> tuple[pd.DataFrame, int, float]:
    """Relative loss decrease ``(before − after) / before`` per task for every mixture (row).

    Every candidate starts from the same checkpoint (optimizer moments resumed when saved) and
    takes ``steps`` AdamW steps of ``batch_size`` sequences on its own fresh sample (seed role
    ``lookahead``). Returns the table (rows the mixtures, columns the tasks), the tokens trained
    on and the training FLOPs.
    """
    if steps < 1:
        raise ValueError(f"lookahead needs at least one step, got {steps}")
    model, _ = load_checkpoint(checkpoint_dir)
    before = evaluate_tasks(model, task_files, accuracy=False)
    rows, tokens, flops = {}, 0, 0.0
    start = time.perf_counter()
    for k, (mixture, weights) in enumerate(mixtures.iterrows()):
        run = continue_training(
            checkpoint_dir,
            domain_dirs,
            weights.to_dict(),
            # stage 2's optimisation, with the lookahead's budget, step and no warm-up
            Stage2Settings(
                tokens=steps * batch_size * seq_len,
                batch_size=batch_size,
                lr=lr,
                warmup_fraction=0.0,
            ),
            seq_len=seq_len,
            seed=derive_seed(seed, "lookahead", int(mixture)),
            device=device,
        )
        after = evaluate_tasks(run.model, task_files, accuracy=False)
        rows[mixture] = {
            t: (before[t]["loss"] - after[t]["loss"]) / before[t]["loss"] for t in task_files
        }
        tokens += run.tokens
        flops += run.flops
        elapsed = time.perf_counter() - start
        log.info(
            "lookahead: mixture %d/%d, %.0f tokens/s, ETA %.0fs",
            k + 1,
            len(mixtures),
            tokens / elapsed,
            elapsed / (k + 1) * (len(mixtures) - k - 1),
        )
    table = pd.DataFrame.from_dict(rows, orient="index")[list(task_files)]
    table.index.name = mixtures.index.name
    return table, tokens, flops
