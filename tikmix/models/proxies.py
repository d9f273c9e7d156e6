"""The proxy models of the RegMix and DoReMi baselines: the torch half of their procedures.

Both train small models through the one training entry point,
:func:`~tikmix.models.train.train_on_mixture`:

* **RegMix** (:mod:`tikmix.mixing.regmix` has the method): :func:`train_proxy` trains one proxy
  from scratch on a mixture and measures its task losses (a row of the run table);
  :func:`regmix_mixture` samples the proxies' mixtures, trains them and fits the regression.
* **DoReMi** (:mod:`tikmix.mixing.doremi` has the method): :func:`doremi_mixture` trains the
  reference (or takes the checkpoint) and runs the proxy (:func:`run_doremi`), whose per-step
  domain-weight update is the loop's ``objective`` hook (:class:`DoremiObjective`).

:func:`write_regmix_mixture` and :func:`write_doremi_mixture` are the workflow rules' calls.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from tikmix.core.atomic import atomic_output
from tikmix.core.mixture import MixtureInputError, read_mixture, validate_weights, write_mixture
from tikmix.core.settings import DoremiSettings, RegmixSettings
from tikmix.data.sampler import MixturePlan, load_streams, plan_mixture
from tikmix.data.tokenizer import load_tokenizer
from tikmix.data.tokenizer import vocab_size as tokenizer_vocab_size
from tikmix.mixing.availability import Availability
from tikmix.mixing.documents import baseline_document
from tikmix.mixing.doremi import (
    DoremiResult,
    Reference,
    averaged_weights,
    check_doremi_settings,
    exponentiated_gradient_step,
)
from tikmix.mixing.regmix import RegMixResult, fit_regmix, sample_regmix_mixtures
from tikmix.models.checkpoint import load_checkpoint
from tikmix.models.device import resolve_device
from tikmix.models.flops import training_flops_per_token
from tikmix.models.llama import ModelConfig
from tikmix.models.loss import token_losses
from tikmix.models.stage2 import average_loss, evaluate_tasks, load_task
from tikmix.models.train import TrainSettings, train_on_mixture
from tikmix.seeds import derive_seed

log = logging.getLogger(__name__)


# --- RegMix ----------------------------------------------------------------------------------


@dataclass
class ProxyRun:
    """One proxy model's mixture, task losses and compute."""

    weights: dict[str, float]
    task_losses: dict[str, float]
    average_loss: float
    train_flops: int
    eval_flops: int

    def row(self) -> dict[str, float]:
        """A flat record: one column per domain, per task (``loss:{task}``) and the totals."""
        return {
            **self.weights,
            **{f"loss:{task}": value for task, value in self.task_losses.items()},
            "average_loss": self.average_loss,
            "train_flops": self.train_flops,
            "eval_flops": self.eval_flops,
        }


def task_forward_tokens(task_files: Mapping[str, str | Path]) -> int:
    """Tokens a forward pass over every task row reads (the eval-FLOP count's token count)."""
    total = 0
    for path in task_files.values():
        ids = load_task(path)["input_ids"]
        total += ids.shape[0] * (ids.shape[1] - 1)
    return total


def train_proxy(
    streams: Mapping[str, np.ndarray],
    weights: Mapping[str, float],
    task_files: Mapping[str, str | Path],
    model_config: ModelConfig,
    *,
    seed: int,
    eval_batch_size: int = 32,
    device: str | torch.device = "cpu",
    **options: Any,
) -> ProxyRun:
    """Train a fresh ``model_config`` model on ``weights`` and measure its task losses.

    ``options`` are the :class:`~tikmix.models.train.TrainSettings` of the run: ``tokens,
    batch_size, seq_len, lr`` and optionally ``schedule, warmup_fraction, weight_decay``.
    """
    settings = TrainSettings(**options, log_every=None)
    run = train_on_mixture(
        model_config,
        weights,
        streams,
        settings,
        seed=seed,
        device=device,
        label="RegMix proxy",
        logger=log,
    )
    losses = {
        task: m["loss"]
        for task, m in evaluate_tasks(
            run.model, task_files, eval_batch_size, accuracy=False
        ).items()
    }
    per_token = training_flops_per_token(run.model, settings.seq_len)
    return ProxyRun(
        weights={d: float(v) for d, v in weights.items()},
        task_losses=losses,
        average_loss=average_loss({t: {"loss": v} for t, v in losses.items()}),
        train_flops=run.flops,
        eval_flops=per_token // 3 * task_forward_tokens(task_files),
    )


def regmix_mixture(
    domain_dirs: Mapping[str, str | Path],
    task_files: Mapping[str, str | Path],
    prior: pd.Series,
    regmix: RegmixSettings,
    *,
    vocab_size: int,
    seq_len: int,
    seed: int = 0,
    device: str | torch.device = "cpu",
    num_threads: int = 1,
    surrogate_params: Mapping[str, Any] | None = None,
    caps: pd.Series | None = None,
) -> RegMixResult:
    """The whole RegMix procedure (see :mod:`tikmix.mixing.regmix`) in one call; ``caps``: the
    availability caps the final mixture keeps within.

    The proxies are ``regmix.model`` models with the tokenizer's ``vocab_size`` and
    ``max_seq_len = seq_len``; proxy ``k`` is seeded with ``derive_seed(seed, f"regmix-proxy-{k}")``.
    """
    n_proxies, tokens = regmix.n_proxies, regmix.tokens
    batch_size, lr = regmix.batch_size, regmix.lr
    model_config = ModelConfig(
        vocab_size=vocab_size, max_seq_len=seq_len, **dataclasses.asdict(regmix.model)
    )
    prior = validate_weights(prior, list(domain_dirs), source="RegMix prior")
    streams = load_streams(domain_dirs, "train")
    mixtures = sample_regmix_mixtures(
        prior, n_proxies, regmix.dirichlet, seed=derive_seed(seed, "regmix-proxies")
    )
    runs = []
    for k, (_, row) in enumerate(mixtures.iterrows()):
        run = train_proxy(
            streams,
            row.to_dict(),
            task_files,
            model_config,
            tokens=tokens,
            batch_size=batch_size,
            seq_len=seq_len,
            lr=lr,
            seed=derive_seed(seed, f"regmix-proxy-{k}"),
            device=device,
        )
        log.info("RegMix proxy %d/%d: average task loss %.4f", k + 1, n_proxies, run.average_loss)
        runs.append(run.row())
    table = pd.DataFrame(runs)
    weights, quality, predicted = fit_regmix(
        table,
        prior,
        regmix,
        seed=seed,
        num_threads=num_threads,
        surrogate_params=surrogate_params,
        caps=caps,
    )
    return RegMixResult(
        weights=weights,
        runs=table,
        quality=quality,
        predicted_loss=predicted,
        flops=int(table["train_flops"].sum() + table["eval_flops"].sum()),
        settings={
            "n_proxies": n_proxies,
            "tokens": tokens,
            "batch_size": batch_size,
            "seq_len": seq_len,
            "lr": lr,
            "proxy_model": model_config.to_dict(),
            "dirichlet": dataclasses.asdict(regmix.dirichlet),
            "n_simulations": regmix.n_simulations,
            "top_k": regmix.top_k,
            "seed": seed,
        },
    )


def write_regmix_mixture(
    *,
    prior_path: str | Path,
    tokenizer_path: str | Path,
    mixture_path: str | Path,
    runs_path: str | Path,
    availability_path: str | Path,
    checkpoint_name: str,
    regmix: RegmixSettings,
    domain_dirs: Mapping[str, str | Path],
    task_files: Mapping[str, str | Path],
    seq_len: int,
    seed: int,
    device: str = "auto",
    num_threads: int = 1,
) -> RegMixResult:
    """The RegMix rule: :func:`regmix_mixture` around the prior at ``prior_path``, within the
    availability caps at ``availability_path``; writes the mixture document and the run table
    (``runs_path``, CSV)."""
    availability = Availability.read(availability_path)
    result = regmix_mixture(
        domain_dirs,
        task_files,
        read_mixture(prior_path, domain_dirs),
        regmix,
        vocab_size=tokenizer_vocab_size(load_tokenizer(tokenizer_path)),
        seq_len=seq_len,
        seed=seed,
        device=device,
        num_threads=num_threads,
        caps=availability.caps,
    )
    document = baseline_document(
        result,
        method="regmix",
        availability=availability,
        provenance={"checkpoint": checkpoint_name, "prior": prior_path},
    )
    _write_outputs("RegMix", document, mixture_path, result.runs, runs_path, index=False)
    return result


def _write_outputs(
    name: str,
    document: Mapping[str, Any],
    mixture_path: str | Path,
    table: pd.DataFrame,
    table_path: str | Path,
    *,
    index: bool,
) -> None:
    """A baseline's mixture document and its run table or trace (CSV), each written atomically."""
    write_mixture(mixture_path, document)
    with atomic_output(table_path) as tmp:
        table.to_csv(tmp, index=index)
    log.info("%s mixture: %s", name, {d: round(w, 4) for d, w in document["weights"].items()})


# --- DoReMi ---------------------------------------------------------------------------------


class DoremiObjective:
    """DoReMi's step as the training loop's ``objective``: Group DRO against a reference.

    On a batch of equal per-domain blocks (domain order of ``domains``) it computes each
    domain's clipped excess loss over ``reference``, updates the domain weights
    (:func:`~tikmix.mixing.doremi.exponentiated_gradient_step`) and returns the weighted sum
    of the proxy's per-domain mean losses. ``rows`` is the per-step trace.
    """

    def __init__(
        self, reference: nn.Module, domains: Sequence[str], *, eta: float, smoothing: float
    ) -> None:
        self.reference = reference
        self.domains = list(domains)
        self.eta, self.smoothing = eta, smoothing
        self.alpha = np.full(len(self.domains), 1.0 / len(self.domains))
        self.rows: list[dict[str, float]] = []

    def __call__(self, model: nn.Module, ids: torch.Tensor, step: int) -> torch.Tensor:
        n_domains = len(self.domains)
        losses, _ = token_losses(model, ids)
        with torch.no_grad():
            ref_losses, _ = token_losses(self.reference, ids)
        by_domain = losses.view(n_domains, -1).mean(dim=1)
        excess = (losses.detach() - ref_losses).clamp_min(0).view(n_domains, -1).mean(dim=1)
        excess = excess.double().cpu().numpy()
        self.alpha = exponentiated_gradient_step(
            self.alpha, excess, eta=self.eta, smoothing=self.smoothing
        )
        alpha = torch.as_tensor(self.alpha, dtype=by_domain.dtype, device=by_domain.device)
        objective = (alpha * by_domain).sum()
        self.rows.append(
            {
                **{f"weight:{d}": float(a) for d, a in zip(self.domains, self.alpha, strict=True)},
                **{f"excess:{d}": float(e) for d, e in zip(self.domains, excess, strict=True)},
                "objective": float(objective.detach()),
            }
        )
        return objective

    def trace(self) -> pd.DataFrame:
        """One row per step (index ``step`` from 1): the weights, excess losses, objective."""
        trace = pd.DataFrame(self.rows)
        trace.index = pd.RangeIndex(1, len(self.rows) + 1, name="step")
        return trace


def _domain_blocks(
    plans: Sequence[MixturePlan], streams: Mapping[str, np.ndarray], steps: int, per_domain: int
) -> Iterator[np.ndarray]:
    """Batch ``step``: the ``per_domain`` next sequences of every domain, domain after domain."""
    for step in range(1, steps + 1):
        window = slice((step - 1) * per_domain, step * per_domain)
        yield np.concatenate([plan.gather(streams, window) for plan in plans])


def run_doremi(
    reference: nn.Module,
    streams: Mapping[str, np.ndarray],
    proxy_config: ModelConfig,
    doremi: DoremiSettings,
    *,
    seq_len: int,
    seed: int = 0,
    device: str | torch.device = "cpu",
    caps: pd.Series | None = None,
) -> DoremiResult:
    """The proxy run of DoReMi against ``reference`` over the domains of ``streams``, with
    ``doremi``'s ``proxy_tokens, batch_size, lr, eta, smoothing``; the averaged weights are
    projected onto the availability ``caps`` when given.

    Each step takes ``batch_size // D`` (at least 1) sequences per domain; there are
    ``proxy_tokens // (that · D · seq_len)`` steps (at least 1). ``flops`` counts the proxy's
    training and the reference's forward passes.
    """
    eta, smoothing, batch_size = doremi.eta, doremi.smoothing, doremi.batch_size
    domains = list(streams)
    check_doremi_settings(domains, eta=eta, smoothing=smoothing)
    n_domains = len(domains)
    # The two models may have different vocabularies (a checkpoint's may be padded); every
    # token id must have an embedding row in both.
    vocab = min(reference.get_input_embeddings().weight.shape[0], proxy_config.vocab_size)
    device = resolve_device(device)
    per_domain = max(1, batch_size // n_domains)
    settings = TrainSettings(
        tokens=doremi.proxy_tokens,
        batch_size=per_domain * n_domains,
        seq_len=seq_len,
        lr=doremi.lr,
    )
    steps = settings.steps
    plans = [
        plan_mixture(
            {d: len(streams[d])},
            {d: 1.0},
            steps * per_domain * seq_len,
            seq_len,
            derive_seed(seed, f"doremi-{d}"),
        )
        for d in domains
    ]
    reference = reference.to(device).eval()
    objective = DoremiObjective(reference, domains, eta=eta, smoothing=smoothing)
    run = train_on_mixture(
        proxy_config,
        None,
        None,
        settings,
        seed=seed,
        device=device,
        batches=_domain_blocks(plans, streams, steps, per_domain),
        objective=objective,
        vocab_size=vocab,
        label="DoReMi proxy",
        logger=log,
    )
    trace = objective.trace()
    flops = {
        "proxy_train_flops": run.flops,
        "reference_forward_flops": training_flops_per_token(reference, seq_len) // 3 * run.tokens,
    }
    weights = averaged_weights(trace, domains, caps)
    return DoremiResult(weights=weights, trace=trace, flops=flops)


def doremi_mixture(
    domain_dirs: Mapping[str, str | Path],
    reference_weights: pd.Series | None,
    doremi: DoremiSettings,
    *,
    vocab_size: int,
    seq_len: int,
    checkpoint_dir: str | Path | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    caps: pd.Series | None = None,
) -> DoremiResult:
    """DoReMi-lite end to end (see :mod:`tikmix.mixing.doremi`).

    Args:
        domain_dirs: domain → directory holding ``train.npy``.
        reference_weights: the mixture a trained reference learns from (``reference="train"``).
        doremi: the reference (``checkpoint``: the model at ``checkpoint_dir``; ``train``: one
            trained for ``reference_tokens``), the proxy's budget, ``batch_size`` and ``lr``
            (shared by reference and proxy), the step size η and smoothing ε, and the
            proxy's (and a trained reference's) ``model``.
        vocab_size: the tokenizer's vocabulary size (the proxy's embedding rows).
        seq_len: tokens per training sequence (the proxy's ``max_seq_len``).
        checkpoint_dir: the stage-1 checkpoint, needed when ``doremi.reference="checkpoint"``.
        seed: every draw and initialisation derives from it.
        caps: the availability caps (domain → largest weight) the mixture is projected onto.
    """
    reference: Reference = doremi.reference
    if reference not in ("checkpoint", "train"):
        raise MixtureInputError(
            f"DoReMi reference must be 'checkpoint' or 'train', got {reference!r}"
        )
    if reference == "checkpoint" and checkpoint_dir is None:
        raise MixtureInputError("DoReMi with reference='checkpoint' needs checkpoint_dir")
    device = resolve_device(device)
    streams = load_streams(domain_dirs, "train")
    proxy_config = ModelConfig(
        vocab_size=vocab_size, max_seq_len=seq_len, **dataclasses.asdict(doremi.model)
    )
    flops = {"reference_train_flops": 0}
    if reference == "checkpoint":
        reference_model, _ = load_checkpoint(checkpoint_dir, device=device, dtype=torch.float32)
    else:
        weights = validate_weights(reference_weights, list(domain_dirs), source="DoReMi reference")
        trained = train_on_mixture(
            proxy_config,
            weights,
            streams,
            TrainSettings(
                tokens=doremi.reference_tokens,
                batch_size=doremi.batch_size,
                seq_len=seq_len,
                lr=doremi.lr,
            ),
            seed=derive_seed(seed, "doremi-reference"),
            device=device,
            label="DoReMi reference",
            logger=log,
        )
        reference_model = trained.model
        flops["reference_train_flops"] = trained.flops
    result = run_doremi(
        reference_model,
        streams,
        proxy_config,
        doremi,
        seq_len=seq_len,
        seed=derive_seed(seed, "doremi-proxy"),
        device=device,
        caps=caps,
    )
    result.flops = {**flops, **result.flops}
    result.settings = {
        "reference": reference,
        "checkpoint": None if checkpoint_dir is None else str(checkpoint_dir),
        "reference_tokens": doremi.reference_tokens if reference == "train" else 0,
        "proxy_tokens": doremi.proxy_tokens,
        "proxy_model": proxy_config.to_dict(),
        "batch_size": doremi.batch_size,
        "seq_len": seq_len,
        "lr": doremi.lr,
        "eta": doremi.eta,
        "smoothing": doremi.smoothing,
        "seed": seed,
    }
    return result


def write_doremi_mixture(
    *,
    prior_path: str | Path,
    checkpoint_dir: str | Path,
    tokenizer_path: str | Path,
    mixture_path: str | Path,
    trace_path: str | Path,
    availability_path: str | Path,
    checkpoint_name: str,
    doremi: DoremiSettings,
    domain_dirs: Mapping[str, str | Path],
    seq_len: int,
    seed: int,
    device: str = "auto",
) -> DoremiResult:
    """The DoReMi rule: :func:`doremi_mixture` with the prior at ``prior_path`` as the
    reference mixture, within the availability caps at ``availability_path``; writes the
    mixture document and the per-step trace (``trace_path``)."""
    availability = Availability.read(availability_path)
    result = doremi_mixture(
        domain_dirs,
        read_mixture(prior_path, domain_dirs),
        doremi,
        vocab_size=tokenizer_vocab_size(load_tokenizer(tokenizer_path)),
        seq_len=seq_len,
        checkpoint_dir=checkpoint_dir,
        seed=seed,
        device=device,
        caps=availability.caps,
    )
    document = baseline_document(
        result,
        method="doremi",
        availability=availability,
        provenance={"checkpoint": checkpoint_name, "prior": prior_path},
    )
    _write_outputs("DoReMi", document, mixture_path, result.trace, trace_path, index=True)
    return result
