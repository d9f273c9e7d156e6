"""Stage 2: continue training a checkpoint on a mixture and evaluate it on the validation tasks.

This is the experiment behind the paper's Table 1: from the last stage-1 checkpoint, every mixture
(natural, uniform, TiKMiX-D, TiKMiX-M, RegMix, DoReMi, ...) gets the same token budget, the same
schedule and the same seeds, and the resulting models are compared on the tasks.

**Optimizer-state policy** (identical for every method, recorded in each result):

* ``resume`` (default): the AdamW moments are restored from the checkpoint's ``optimizer.pt``
  when it has one, and start fresh otherwise (a Hugging Face checkpoint usually has none); the
  record says which happened;
* ``fresh``: the moments always start at zero.

Either way the learning rate follows a *new* schedule over the stage-2 tokens: linear warm-up over
``warmup_fraction`` of the updates to ``lr``, then cosine (or warmup-stable-decay) down to
``0.1 · lr``; weight decay and betas are this call's.

**Seeds.** The data order and the torch seed of run ``seed`` come from
``derive_seed(seed, "stage2")``, so stage-2 batches differ from stage 1's (which used ``seed``
itself) while staying reproducible: the same (mixture, seed) gives bit-identical metrics on CPU.

**Compute.** ``compute.flops`` counts training FLOPs, ``flops_per_token · tokens`` with the PaLM
convention of :func:`~tikmix.models.llama.model_flops_per_token` for the built-in model and
``6 · N`` for other models.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tikmix.core.atomic import write_json_atomic
from tikmix.core.compute import ComputeRecord
from tikmix.core.mixture import read_mixture
from tikmix.core.settings import Stage2Settings
from tikmix.data.sampler import load_streams
from tikmix.models.checkpoint import load_checkpoint
from tikmix.models.device import resolve_device
from tikmix.models.evaluate import mean_loss, multiple_choice_accuracy
from tikmix.models.train import TrainSettings, check_optimizer_policy, train_on_mixture
from tikmix.seeds import derive_seed

log = logging.getLogger(__name__)

_TASK_KEYS = ("input_ids", "loss_mask")
_CHOICE_KEYS = ("choice_ids", "choice_mask", "choice_item", "answer")


@dataclass
class Stage2Run:
    """A model trained by :func:`continue_training` and what it was trained with."""

    model: nn.Module
    steps: int
    tokens: int
    flops: int
    optimizer_policy: dict[str, Any]
    train_losses: list[float]


def continue_training(
    checkpoint_dir: str | Path,
    domain_dirs: Mapping[str, str | Path],
    weights: Mapping[str, float],
    stage2: Stage2Settings,
    *,
    seq_len: int,
    seed: int,
    device: str | torch.device = "cpu",
    bf16: bool = False,
    model: nn.Module | None = None,
) -> Stage2Run:
    """Continue training the checkpoint on ``weights`` for ``stage2.tokens`` tokens (see
    module doc).

    Args:
        checkpoint_dir: a built-in or Hugging Face checkpoint directory.
        domain_dirs: domain → directory holding ``train.npy``.
        weights: the stage-2 mixture (domain → weight, summing to 1).
        stage2: the optimisation settings (``tokens // (batch_size · seq_len)`` updates, at
            least one) and the ``optimizer_policy`` (see the module docstring).
        seq_len: tokens per training sequence.
        seed: the run's seed; data order and torch seed use ``derive_seed(seed, "stage2")``.
        device: ``auto``, ``cpu``, ``cuda`` or a torch device.
        bf16: bfloat16 autocast for the forward pass (GPUs).
        model: the checkpoint already loaded (float32) to save reading it again; it is
            trained in place.
    """
    tokens, batch_size, optimizer_policy = stage2.tokens, stage2.batch_size, stage2.optimizer_policy
    check_optimizer_policy(optimizer_policy)
    if tokens < 1 or batch_size < 1 or seq_len < 1:
        raise ValueError(
            f"tokens, batch_size and seq_len must be positive, got {tokens}, {batch_size}, "
            f"{seq_len}"
        )
    settings = TrainSettings(
        tokens=tokens,
        batch_size=batch_size,
        seq_len=seq_len,
        lr=stage2.lr,
        weight_decay=stage2.weight_decay,
        schedule=stage2.schedule,
        warmup_fraction=stage2.warmup_fraction,
        min_lr_ratio=0.1,
        bf16=bf16,
    )
    run_seed = derive_seed(seed, "stage2")
    run = train_on_mixture(
        checkpoint_dir,
        weights,
        load_streams(domain_dirs, "train"),
        settings,
        seed=run_seed,
        device=device,
        optimizer_policy=optimizer_policy,
        model=model,
        label="stage 2",
        logger=log,
    )
    policy = {
        "policy": optimizer_policy,
        "resumed_moments": run.resumed_moments,
        "schedule": stage2.schedule,
        "lr": stage2.lr,
        "warmup_fraction": stage2.warmup_fraction,
        "weight_decay": stage2.weight_decay,
        "min_lr_ratio": settings.min_lr_ratio,
    }
    return Stage2Run(
        model=run.model,
        steps=run.steps,
        tokens=run.tokens,
        flops=run.flops,
        optimizer_policy=policy,
        train_losses=run.losses,
    )


def load_task(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a tokenized task file, checked for the keys evaluation needs."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task file not found: {path}")
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    missing = [key for key in _TASK_KEYS if key not in arrays]
    if missing:
        raise ValueError(f"{path}: task file lacks array(s) {missing}")
    if "choice_ids" in arrays:
        missing = [key for key in _CHOICE_KEYS if key not in arrays]
        if missing:
            raise ValueError(f"{path}: multiple-choice task file lacks array(s) {missing}")
    return arrays


def evaluate_tasks(
    model: nn.Module,
    task_files: Mapping[str, str | Path],
    batch_size: int = 32,
    *,
    accuracy: bool = True,
) -> dict[str, dict[str, float]]:
    """Per task: ``loss`` (mean loss per scored token) and, for multiple-choice tasks,
    ``accuracy`` / ``accuracy_norm`` (lm-evaluation-harness style, see
    :func:`~tikmix.models.evaluate.multiple_choice_accuracy`) unless ``accuracy=False``.
    """
    results = {}
    for task, path in task_files.items():
        arrays = load_task(path)
        metrics = {"loss": mean_loss(model, arrays["input_ids"], arrays["loss_mask"], batch_size)}
        if accuracy and "choice_ids" in arrays:
            scores = multiple_choice_accuracy(
                model,
                arrays["choice_ids"],
                arrays["choice_mask"],
                arrays["choice_item"],
                arrays["answer"],
                batch_size,
            )
            metrics["accuracy"] = scores["accuracy"]
            metrics["accuracy_norm"] = scores["accuracy_norm"]
        results[task] = metrics
    return results


def average_loss(task_metrics: Mapping[str, Mapping[str, float]]) -> float:
    """Unweighted mean of the tasks' losses (each task counts once, as in Table 1)."""
    if not task_metrics:
        raise ValueError("no task metrics to average")
    return math.fsum(m["loss"] for m in task_metrics.values()) / len(task_metrics)


def checkpoint_task_metrics(
    checkpoint_dir: str | Path,
    task_files: Mapping[str, str | Path],
    eval_batch_size: int,
    *,
    device: str = "auto",
    model: nn.Module | None = None,
) -> dict[str, Any]:
    """The checkpoint's own task metrics ``{tasks, average_loss}``: every stage-2 record's
    ``before``, computed once per checkpoint rather than once per (method, seed).

    ``model``: the checkpoint already loaded (float32), to save reading it again.
    """
    if model is None:
        model, _ = load_checkpoint(
            checkpoint_dir, device=resolve_device(device), dtype=torch.float32
        )
    tasks = evaluate_tasks(model, task_files, eval_batch_size)
    return {"tasks": tasks, "average_loss": average_loss(tasks)}


def evaluate_checkpoint(
    *,
    checkpoint_dir: str | Path,
    out_path: str | Path,
    task_files: Mapping[str, str | Path],
    eval_batch_size: int,
    device: str = "auto",
) -> dict[str, Any]:
    """The checkpoint-evaluation rule: write :func:`checkpoint_task_metrics` to ``out_path``."""
    metrics = checkpoint_task_metrics(checkpoint_dir, task_files, eval_batch_size, device=device)
    write_json_atomic(out_path, metrics)
    return metrics


def read_checkpoint_task_metrics(path: str | Path) -> dict[str, Any]:
    """``{tasks, average_loss}`` as written by the checkpoint-evaluation rule."""
    with open(path) as handle:
        metrics = json.load(handle)
    if not isinstance(metrics, dict) or {"tasks", "average_loss"} - set(metrics):
        raise ValueError(f"{path}: expected checkpoint task metrics {{tasks, average_loss}}")
    return {"tasks": metrics["tasks"], "average_loss": metrics["average_loss"]}


def run_stage2(*, seed: int, out_path: str | Path, **kwargs: Any) -> dict[str, Any]:
    """Evaluate the checkpoint, continue it on the mixture, evaluate again; write the record.

    ``kwargs`` are :func:`run_stage2_seeds`'s (``method, mixture_path, checkpoint_dir,
    domain_dirs, task_files, stage2, seq_len, device, before``). The record (also written to ``out_path``) is ``{method, seed,
    checkpoint, weights, tokens, optimizer_policy, tasks, average_loss, before: {tasks,
    average_loss}, compute: {tokens, flops}}``; ``before`` holds the checkpoint's own metrics
    (:func:`checkpoint_task_metrics`, computed here unless given), the reference for measured
    improvements.
    """
    (record,) = run_stage2_seeds(seeds=[seed], out_paths=[out_path], **kwargs)
    return record


def run_stage2_seeds(
    *,
    method: str,
    mixture_path: str | Path,
    checkpoint_dir: str | Path,
    domain_dirs: Mapping[str, str | Path],
    task_files: Mapping[str, str | Path],
    stage2: Stage2Settings,
    seq_len: int,
    seeds: Sequence[int],
    out_paths: Sequence[str | Path],
    device: str = "auto",
    before: Mapping[str, Any] | str | Path | None = None,
) -> list[dict[str, Any]]:
    """:func:`run_stage2` for each of ``seeds`` in one process, one record per seed.

    ``before`` may also be the path of the checkpoint-evaluation rule's metrics file.
    The checkpoint is read once and each seed trains its own copy of it, so every record is
    identical to the one a separate :func:`run_stage2` call with that seed writes.
    """
    if len(seeds) != len(out_paths):
        raise ValueError(f"{len(seeds)} seeds but {len(out_paths)} output paths")
    weights = read_mixture(mixture_path).to_dict()
    unknown = sorted(set(weights) - set(domain_dirs))
    if unknown:
        raise ValueError(f"{mixture_path}: weights for unknown domain(s) {unknown}")
    torch_device = resolve_device(device)
    checkpoint, _ = load_checkpoint(checkpoint_dir, device=torch_device, dtype=torch.float32)
    eval_batch = stage2.eval_batch_size
    if isinstance(before, str | Path):
        before = read_checkpoint_task_metrics(before)
    if before is None:
        before = checkpoint_task_metrics(checkpoint_dir, task_files, eval_batch, model=checkpoint)
    records = []
    for seed, out_path in zip(seeds, out_paths, strict=True):
        run = continue_training(
            checkpoint_dir,
            domain_dirs,
            weights,
            stage2,
            seq_len=seq_len,
            seed=seed,
            device=torch_device,
            model=copy.deepcopy(checkpoint),
        )
        after = evaluate_tasks(run.model, task_files, eval_batch)
        record = {
            "method": method,
            "seed": int(seed),
            "checkpoint": str(checkpoint_dir),
            "weights": weights,
            "tokens": run.tokens,
            "optimizer_policy": run.optimizer_policy,
            "tasks": after,
            "average_loss": average_loss(after),
            "before": {"tasks": before["tasks"], "average_loss": before["average_loss"]},
            "compute": ComputeRecord(run.tokens, run.flops).to_dict(),
        }
        log.info(
            "%s seed %d: average task loss %.4f (checkpoint %.4f)",
            method,
            seed,
            record["average_loss"],
            record["before"]["average_loss"],
        )
        write_json_atomic(out_path, record)
        records.append(record)
    return records


def records_of_the_same_mixture(
    *,
    method: str,
    mixture_path: str | Path,
    source_mixture_path: str | Path,
    source_records: Sequence[str | Path],
    out_paths: Sequence[str | Path],
) -> list[dict[str, Any]]:
    """``method``'s stage-2 records when its mixture is exactly another method's: that
    method's records (same seeds, same runs), relabelled, instead of training the same mixture
    twice (the demo's ``continue`` is natural). Each record says which runs it reuses
    (``same_runs_as``).

    Raises:
        ValueError: the two mixtures, or a record's weights, differ in any weight.
    """
    if len(source_records) != len(out_paths):
        raise ValueError(f"{len(source_records)} records but {len(out_paths)} output paths")
    weights = read_mixture(mixture_path).to_dict()
    source_weights = read_mixture(source_mixture_path).to_dict()
    if weights != source_weights:
        raise ValueError(
            f"{mixture_path} and {source_mixture_path} are different mixtures: "
            f"{method!r} cannot reuse the other's stage-2 runs"
        )
    records = []
    for source, out_path in zip(source_records, out_paths, strict=True):
        record = json.loads(Path(source).read_text())
        if record["weights"] != weights:
            raise ValueError(f"{source}: run with weights other than {mixture_path}'s")
        record = {**record, "method": method, "same_runs_as": record["method"]}
        write_json_atomic(out_path, record)
        records.append(record)
    return records
