"""Benchmark: EK-FAC covariance and Λ passes against the gradient pass, before and after (issue 14).

A ~134M-parameter Hugging Face ``LlamaForCausalLM`` built from a config (hidden 768, 12 layers,
12 heads, intermediate 2048, vocab 32000; random init, fp32, nothing downloaded), seq 128,
batch 8. A pass over ``n`` batches costs ``fixed + n · per_batch``: a job's fixed cost
(allocating the float64 sums, symmetrising them at the end) is paid once per shard job, the
per-batch cost once per batch, so a job of many batches costs per token what ``per_batch``
says. Each pass is timed over 1 and over ``--batches`` batches (best of ``--repeats``
interleaved runs after a warm-up); ``per_batch = (t_n − t_1) / (n − 1)``. Ratios divide by the
gradient pass (``summed_gradients``) measured in the same run: per batch (a long job), at one
batch, and at ``--batches`` batches, in process CPU time (on a shared machine the CPU time of a
single-threaded run is the stable measure). The "before" implementation is
``tikmix/influence/{tracking,ekfac}.py`` of ``--base`` (the commit before issue 14), loaded from
git into temporary modules; "after" is the working tree's. Both passes also print the relative
difference of their sums (new vs old, Frobenius norm over all modules). Targets: covariances
≤ 1.3×, Λ ≤ 1.5× the gradient pass per token. Run (≈ 10 min on an idle 2-core machine):

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python \
        benchmarks/bench_ekfac_passes.py --threads 1

(BLAS threads are fixed when the libraries load, hence the variables.)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

from tikmix.influence import ekfac, select_modules, summed_gradients

BASE_COMMIT = "39590ab1a1893203d22e52e6c46f654e4cae8129"  # before issue 14's EK-FAC changes
SEQ, BATCH = 128, 8
ROOT = Path(__file__).resolve().parent.parent


def base_implementation(commit: str) -> types.ModuleType:
    """``ekfac.py`` of ``commit``, importing that commit's ``tracking.py`` (both from git)."""

    def source(path: str) -> str:
        return subprocess.run(
            ["git", "show", f"{commit}:{path}"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    modules = {}
    for name, path, text_edit in (
        ("tikmix_base_tracking", "tikmix/influence/tracking.py", None),
        ("tikmix_base_ekfac", "tikmix/influence/ekfac.py", "tikmix.influence.tracking"),
    ):
        text = source(path)
        if text_edit:
            text = text.replace(f"from {text_edit} import", "from tikmix_base_tracking import")
        module = types.ModuleType(name)
        sys.modules[name] = module
        exec(compile(text, f"{commit[:7]}:{path}", "exec"), module.__dict__)
        modules[name] = module
    return modules["tikmix_base_ekfac"]


def hf_llama() -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=32000,
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=12,
        num_attention_heads=12,
        num_key_value_heads=12,
        max_position_embeddings=SEQ,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def relative_difference(new: dict[str, torch.Tensor], old: dict[str, torch.Tensor]) -> float:
    num = sum(float((new[k].double() - old[k].double()).square().sum()) for k in old)
    den = sum(float(old[k].double().square().sum()) for k in old)
    return (num / den) ** 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", default=BASE_COMMIT)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--batches", type=int, default=4, help="batches of the long run")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.batches < 2:
        parser.error("--batches must be at least 2 (the per-batch cost is a difference)")
    if args.threads:
        torch.set_num_threads(args.threads)
    old = base_implementation(args.base)
    model = hf_llama()
    modules = select_modules(model)
    n_params = sum(p.numel() for p in model.parameters())
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(32000, (BATCH, SEQ + 1), generator=gen) for _ in range(args.batches)]
    one = batches[:1]

    new_cov = ekfac.covariance_sums(model, modules, one)
    old_cov = old.covariance_sums(model, modules, one)
    bases = ekfac.eigendecompose(new_cov)
    new_lam = ekfac.lambda_sums(model, modules, bases, one)
    old_lam = old.lambda_sums(model, modules, bases, one)
    passes = {
        "gradient": lambda b: summed_gradients(model, modules, b),
        "covariance before": lambda b: old.covariance_sums(model, modules, b),
        "covariance after": lambda b: ekfac.covariance_sums(model, modules, b),
        "lambda before": lambda b: old.lambda_sums(model, modules, bases, b),
        "lambda after": lambda b: ekfac.lambda_sums(model, modules, bases, b),
    }
    passes["gradient"](one)  # warm-up (the EK-FAC passes were warmed up above)
    short = dict.fromkeys(passes, float("inf"))
    long = dict.fromkeys(passes, float("inf"))
    for _ in range(args.repeats):  # interleaved, best of: robust to a shared machine
        for name, run in passes.items():
            for data, best in ((one, short), (batches, long)):
                start = time.process_time()
                run(data)
                best[name] = min(best[name], time.process_time() - start)
            print(f"  {name}: {short[name]:.1f} s / {long[name]:.1f} s CPU", flush=True)

    n = args.batches
    per_batch = {name: (long[name] - short[name]) / (n - 1) for name in passes}
    fixed = {name: short[name] - per_batch[name] for name in passes}
    print(
        f"HF Llama {n_params / 1e6:.0f}M params, {len(modules)} tracked modules, seq {SEQ}, "
        f"batch {BATCH}, threads={torch.get_num_threads()}, best of {args.repeats}; "
        f"before = {args.base[:7]}; CPU seconds"
    )
    print(
        f"{'pass':18s} {'per batch':>9s} {'fixed':>6s} {'tokens/s':>8s} "
        f"{'x gradient: per batch':>21s} {'1 batch':>7s} {f'{n} batches':>10s}"
    )
    for name in passes:
        print(
            f"{name:18s} {per_batch[name]:9.2f} {fixed[name]:6.2f} "
            f"{BATCH * SEQ / per_batch[name]:8.1f} "
            f"{per_batch[name] / per_batch['gradient']:21.2f} "
            f"{short[name] / short['gradient']:7.2f} {long[name] / long['gradient']:10.2f}"
        )
    print("targets per token (per batch): covariance <= 1.3x, lambda <= 1.5x")
    for label, new, prev in (
        ("activation covariance", new_cov.activation, old_cov.activation),
        ("gradient covariance", new_cov.gradient, old_cov.gradient),
        ("lambda", new_lam.sums, old_lam.sums),
    ):
        print(f"relative difference after vs before, {label}: {relative_difference(new, prev):.1e}")


if __name__ == "__main__":
    main()
