"""DoReMi-lite baseline: domain weights from a proxy's excess loss over a reference (Xie et al. 2023).

DoReMi trains a small *proxy* model with Group DRO against a *reference* model and takes the
domain weights averaged over the proxy run as the mixture. This re-implementation keeps the
algorithm (DoReMi's Algorithm 1) and makes two choices the stage-2 setting needs:

* **Reference**: ``reference="checkpoint"`` uses the stage-1 checkpoint itself (already trained on
  the prior mixture, so its training cost is sunk and not counted); ``reference="train"`` trains
  a fresh model of the proxy's shape on the reference mixture (DoReMi's setting: uniform or the
  prior) for ``reference_tokens``.
* **Proxy run**: a fresh model of the proxy shape, ``proxy_tokens`` tokens. Each step draws the same
  number of sequences from every domain (DoReMi samples the uniform mixture), then

  1. per domain ``d``, the excess loss ``λ_d = mean over d's tokens of max(ℓ_proxy − ℓ_ref, 0)``
     (per-token clipping, as in DoReMi);
  2. exponentiated-gradient ascent on the weights, ``α' ∝ α · exp(η λ)``, then smoothing
     ``α = (1 − ε) α' + ε / D`` (:func:`exponentiated_gradient_step`; DoReMi: η = 1, ε = 1e-3);
  3. one AdamW update of the proxy on ``Σ_d α_d · (mean proxy loss on d's tokens)``.

  Domains the proxy has not yet learned but the reference has (large excess) gain weight; domains
  that neither can learn (excess ≈ 0) lose it.

The mixture is the average of ``α`` over the proxy's steps; every ``α_t ≥ ε / D``, so the average
is too. Compute recorded: the reference's training (when trained) and its forward passes on the
proxy's batches, and the proxy's training, with the FLOP conventions of
:func:`~tikmix.models.flops.training_flops_per_token` (forward = a third of training).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

from tikmix.core.mixture import MixtureInputError, mixture_document, validate_weights
from tikmix.data.sampler import load_streams, mixture_batches, plan_mixture
from tikmix.models.checkpoint import load_checkpoint
from tikmix.models.device import resolve_device
from tikmix.models.flops import training_flops_per_token
from tikmix.models.llama import ModelConfig, TinyLlama
from tikmix.models.loss import token_losses
from tikmix.models.train import batch_to_tensor, build_optimizer, learning_rate, train
from tikmix.seeds import derive_seed

log = logging.getLogger(__name__)

Reference = Literal["checkpoint", "train"]


def exponentiated_gradient_step(
    alpha: np.ndarray, excess: np.ndarray, *, eta: float, smoothing: float
) -> np.ndarray:
    """DoReMi's weight update: ``(1 − ε) · softmax(log α + η λ) + ε / D``."""
    alpha, excess = np.asarray(alpha, dtype=float), np.asarray(excess, dtype=float)
    if alpha.shape != excess.shape or alpha.ndim != 1:
        raise ValueError(f"alpha {alpha.shape} and excess {excess.shape} must be equal 1-D shapes")
    if not 0 <= smoothing <= 1:
        raise ValueError(f"smoothing must be in [0, 1], got {smoothing}")
    logits = np.log(alpha) + eta * excess
    p = np.exp(logits - logits.max())
    return (1 - smoothing) * p / p.sum() + smoothing / len(alpha)


@dataclass
class DoremiResult:
    """The DoReMi mixture (average weights), the per-step trace and the compute spent."""

    weights: pd.Series
    trace: pd.DataFrame
    flops: dict[str, int]
    settings: dict[str, Any] = field(default_factory=dict)

    def solver_report(self) -> dict[str, Any]:
        """A JSON-serialisable summary (the ``solver`` section of a mixture document)."""
        domains = list(self.weights.index)
        last = self.trace.iloc[-1]
        return {
            "name": "DoReMi-lite (Group DRO proxy vs reference, averaged domain weights)",
            "steps": int(len(self.trace)),
            "final_weights": {d: float(last[f"weight:{d}"]) for d in domains},
            "mean_excess_loss": {d: float(self.trace[f"excess:{d}"].mean()) for d in domains},
            "settings": self.settings,
        }

    def compute(self) -> dict[str, int]:
        """The ``compute`` section of a mixture document: FLOPs spent to find the mixture."""
        tokens = self.settings["reference_tokens"] + self.settings["proxy_tokens"]
        return {"tokens": int(tokens), "flops": sum(self.flops.values()), **self.flops}

    def document(
        self, *, stage_tokens: int | None = None, provenance: Mapping | None = None
    ) -> dict[str, Any]:
        """The canonical mixture document (method ``doremi``) with a ``compute`` section."""
        return mixture_document(
            self.weights,
            method="doremi",
            stage_tokens=stage_tokens,
            provenance=provenance,
            solver=self.solver_report(),
            compute=self.compute(),
        )


def run_doremi(
    reference: nn.Module,
    streams: Mapping[str, np.ndarray],
    proxy_config: ModelConfig,
    *,
    tokens: int,
    batch_size: int,
    seq_len: int,
    lr: float,
    eta: float = 1.0,
    smoothing: float = 1e-3,
    weight_decay: float = 0.1,
    warmup_fraction: float = 0.05,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> DoremiResult:
    """The proxy run of DoReMi against ``reference`` over the domains of ``streams``.

    Each step takes ``batch_size // D`` (at least 1) sequences per domain; there are
    ``tokens // (that · D · seq_len)`` steps (at least 1). ``flops`` counts the proxy's training
    and the reference's forward passes.
    """
    domains = list(streams)
    n_domains = len(domains)
    if n_domains < 2:
        raise MixtureInputError(f"DoReMi needs at least 2 domains, got {domains}")
    if not eta > 0:
        raise MixtureInputError(f"DoReMi: eta must be > 0, got {eta}")
    if not 0 < smoothing <= 1:
        raise MixtureInputError(f"DoReMi: smoothing must be in (0, 1], got {smoothing}")
    # The two models may have different vocabularies (a checkpoint's may be padded); every
    # token id must have an embedding row in both.
    vocab = min(reference.get_input_embeddings().weight.shape[0], proxy_config.vocab_size)
    device = resolve_device(device)
    per_domain = max(1, batch_size // n_domains)
    steps = max(1, tokens // (per_domain * n_domains * seq_len))
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
    torch.manual_seed(seed)
    proxy = TinyLlama(proxy_config).to(device).train()
    reference = reference.to(device).eval()
    optimizer = build_optimizer(proxy, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))
    params = [p for group in optimizer.param_groups for p in group["params"]]
    alpha = np.full(n_domains, 1.0 / n_domains)
    rows = []
    start = time.perf_counter()
    for step in range(1, steps + 1):
        window = slice((step - 1) * per_domain, step * per_domain)
        batch = np.concatenate([plan.gather(streams, window) for plan in plans])
        ids = batch_to_tensor(batch, vocab, device)
        losses, _ = token_losses(proxy, ids)
        with torch.no_grad():
            ref_losses, _ = token_losses(reference, ids)
        by_domain = losses.view(n_domains, -1).mean(dim=1)
        excess = (losses.detach() - ref_losses).clamp_min(0).view(n_domains, -1).mean(dim=1)
        excess = excess.double().cpu().numpy()
        alpha = exponentiated_gradient_step(alpha, excess, eta=eta, smoothing=smoothing)
        step_lr = learning_rate(step, steps, lr=lr, warmup_fraction=warmup_fraction)
        for group in optimizer.param_groups:
            group["lr"] = step_lr
        objective = (torch.as_tensor(alpha, dtype=by_domain.dtype, device=device) * by_domain).sum()
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        rows.append(
            {
                **{f"weight:{d}": float(a) for d, a in zip(domains, alpha, strict=True)},
                **{f"excess:{d}": float(e) for d, e in zip(domains, excess, strict=True)},
                "objective": float(objective.detach()),
            }
        )
        if step % 50 == 0 or step == steps:
            n_tokens = step * per_domain * n_domains * seq_len
            log.info(
                "DoReMi step %d/%d  objective %.4f  %.0f tokens/s",
                step,
                steps,
                rows[-1]["objective"],
                n_tokens / max(time.perf_counter() - start, 1e-9),
            )
    trace = pd.DataFrame(rows)
    trace.index = pd.RangeIndex(1, steps + 1, name="step")
    mean = trace[[f"weight:{d}" for d in domains]].mean().to_numpy()
    weights = validate_weights(
        pd.Series(mean / mean.sum(), index=domains), domains, source="DoReMi weights"
    )
    proxy_tokens = steps * per_domain * n_domains * seq_len
    flops = {
        "proxy_train_flops": training_flops_per_token(proxy, seq_len) * proxy_tokens,
        "reference_forward_flops": training_flops_per_token(reference, seq_len) // 3 * proxy_tokens,
    }
    return DoremiResult(weights=weights, trace=trace, flops=flops)


def doremi_mixture(
    domain_dirs: Mapping[str, str | Path],
    reference_weights: pd.Series,
    proxy_model: Mapping[str, Any],
    *,
    vocab_size: int,
    reference: Reference = "checkpoint",
    checkpoint_dir: str | Path | None = None,
    reference_tokens: int = 100_000,
    proxy_tokens: int = 100_000,
    batch_size: int = 16,
    seq_len: int = 128,
    lr: float = 3e-3,
    eta: float = 1.0,
    smoothing: float = 1e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> DoremiResult:
    """DoReMi-lite end to end (see the module docstring).

    Args:
        domain_dirs: domain → directory holding ``train.npy``.
        reference_weights: the mixture a trained reference learns from (``reference="train"``).
        proxy_model: :class:`~tikmix.models.llama.ModelConfig` options of the proxy (and of a
            trained reference) besides ``vocab_size`` and ``max_seq_len``.
        vocab_size: the tokenizer's vocabulary size (the proxy's embedding rows).
        reference: ``checkpoint`` (the model at ``checkpoint_dir``) or ``train``.
        checkpoint_dir: the stage-1 checkpoint, needed when ``reference="checkpoint"``.
        reference_tokens, proxy_tokens: token budgets of a trained reference and of the proxy.
        batch_size, seq_len, lr: training settings shared by reference and proxy.
        eta, smoothing: the exponentiated-gradient step size η and smoothing ε.
        seed: every draw and initialisation derives from it.
    """
    if reference not in ("checkpoint", "train"):
        raise MixtureInputError(
            f"DoReMi reference must be 'checkpoint' or 'train', got {reference!r}"
        )
    if reference == "checkpoint" and checkpoint_dir is None:
        raise MixtureInputError("DoReMi with reference='checkpoint' needs checkpoint_dir")
    device = resolve_device(device)
    streams = load_streams(domain_dirs, "train")
    proxy_config = ModelConfig(vocab_size=vocab_size, max_seq_len=seq_len, **proxy_model)
    flops = {"reference_train_flops": 0}
    if reference == "checkpoint":
        reference_model, _ = load_checkpoint(checkpoint_dir, device=device, dtype=torch.float32)
    else:
        weights = validate_weights(reference_weights, list(domain_dirs), source="DoReMi reference")
        ref_seed = derive_seed(seed, "doremi-reference")
        torch.manual_seed(ref_seed)
        reference_model = TinyLlama(proxy_config)
        total_steps = max(1, reference_tokens // (batch_size * seq_len))
        trained = train(
            reference_model,
            mixture_batches(streams, weights, total_steps, batch_size, seq_len, ref_seed),
            total_steps=total_steps,
            lr=lr,
            seed=ref_seed,
            device=device,
            logger=log,
        )
        flops["reference_train_flops"] = (
            training_flops_per_token(reference_model, seq_len) * trained.tokens_seen
        )
    result = run_doremi(
        reference_model,
        streams,
        proxy_config,
        tokens=proxy_tokens,
        batch_size=batch_size,
        seq_len=seq_len,
        lr=lr,
        eta=eta,
        smoothing=smoothing,
        seed=derive_seed(seed, "doremi-proxy"),
        device=device,
    )
    result.flops = {**flops, **result.flops}
    result.settings = {
        "reference": reference,
        "checkpoint": None if checkpoint_dir is None else str(checkpoint_dir),
        "reference_tokens": reference_tokens if reference == "train" else 0,
        "proxy_tokens": proxy_tokens,
        "proxy_model": proxy_config.to_dict(),
        "batch_size": batch_size,
        "seq_len": seq_len,
        "lr": lr,
        "eta": eta,
        "smoothing": smoothing,
        "seed": seed,
    }
    return result
