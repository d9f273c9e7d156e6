"""Benchmark: EK-FAC covariance and Λ passes against the gradient pass, before and after (issue 14).

A ~134M-parameter Hugging Face ``LlamaForCausalLM`` built from a config (hidden 768, 12 layers,
12 heads, intermediate 2048, vocab 32000; random init, fp32, nothing downloaded), seq 128,
batch 8. Per pass: seconds per token, best of ``--repeats`` interleaved single-batch runs after a
warm-up; ratios are time per token of the pass / time per token of the gradient pass
(``summed_gradients``) measured in the same run, in wall-clock and in process CPU time (on a
shared machine the CPU-time ratio of a single-threaded run is the stable one). The "before" implementation is
``tikmix/influence/{tracking,ekfac}.py`` of ``--base`` (the commit before issue 14), loaded from
git into temporary modules; "after" is the working tree's. Both passes also print the relative
difference of their sums (new vs old, Frobenius norm over all modules). Targets: covariances
≤ 1.3×, Λ ≤ 1.5× the gradient pass. Run (≈ 4 min on an idle 2-core machine):

    PYTHONPATH=. .venv/bin/python benchmarks/bench_ekfac_passes.py

or, single-threaded (BLAS threads are fixed when the libraries load, hence the variables):

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python \
        benchmarks/bench_ekfac_passes.py --threads 1 --repeats 1
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
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    old = base_implementation(args.base)
    model = hf_llama()
    modules = select_modules(model)
    n_params = sum(p.numel() for p in model.parameters())
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(32000, (BATCH, SEQ + 1), generator=gen)
    tokens = BATCH * SEQ

    new_cov = ekfac.covariance_sums(model, modules, [batch])
    old_cov = old.covariance_sums(model, modules, [batch])
    bases = ekfac.eigendecompose(new_cov)
    new_lam = ekfac.lambda_sums(model, modules, bases, [batch])
    old_lam = old.lambda_sums(model, modules, bases, [batch])
    passes = {
        "gradient": lambda: summed_gradients(model, modules, [batch]),
        "covariance before": lambda: old.covariance_sums(model, modules, [batch]),
        "covariance after": lambda: ekfac.covariance_sums(model, modules, [batch]),
        "lambda before": lambda: old.lambda_sums(model, modules, bases, [batch]),
        "lambda after": lambda: ekfac.lambda_sums(model, modules, bases, [batch]),
    }
    passes["gradient"]()  # warm-up (the EK-FAC passes were warmed up above)
    wall = {name: float("inf") for name in passes}
    cpu = {name: float("inf") for name in passes}
    for _ in range(args.repeats):  # interleaved, best of: robust to a shared machine
        for name, run in passes.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            cpu[name] = min(cpu[name], time.process_time() - start_cpu)
            wall[name] = min(wall[name], time.perf_counter() - start)
            print(f"  {name}: {wall[name]:.1f} s wall, {cpu[name]:.1f} s CPU", flush=True)

    print(
        f"HF Llama {n_params / 1e6:.0f}M params, {len(modules)} tracked modules, seq {SEQ}, "
        f"batch {BATCH}, threads={torch.get_num_threads()}, best of {args.repeats}; "
        f"before = {args.base[:7]}"
    )
    print(f"{'pass':20s} {'tokens/s':>9s} {'x gradient (wall)':>18s} {'x gradient (CPU)':>17s}")
    for name in passes:
        print(
            f"{name:20s} {tokens / wall[name]:9.1f} {wall[name] / wall['gradient']:18.2f} "
            f"{cpu[name] / cpu['gradient']:17.2f}"
        )
    print("targets: covariance <= 1.3x, lambda <= 1.5x")
    for label, new, prev in (
        ("activation covariance", new_cov.activation, old_cov.activation),
        ("gradient covariance", new_cov.gradient, old_cov.gradient),
        ("lambda", new_lam.sums, old_lam.sums),
    ):
        print(f"relative difference after vs before, {label}: {relative_difference(new, prev):.1e}")


if __name__ == "__main__":
    main()
