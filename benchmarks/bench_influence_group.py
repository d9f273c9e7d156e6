"""Benchmark (b): group influence of a 1,000-sequence domain vs per-example influence.

Two settings are measured in one run, on an untrained TinyLlama (d_model 64, 2 layers), a domain
of 1,000 random sequences of 64 tokens and a task gradient from 8 sequences:

1. **The paper's setting (eqs. 4-5): an iterative IHVP.** The inverse Hessian is applied by LiSSA
   (``benchmarks/lissa_baseline.py``): ``J`` exact Hessian-vector products (double backward) of
   the mean loss of a fixed batch of fitting sequences, over the tracked weights. Per-example
   (eq. 4): for each sequence, its gradient, its own LiSSA IHVP and a dot product with the task
   gradient, summed. Group (eq. 5): one batched gradient pass over the domain
   (``summed_gradients``), ONE LiSSA IHVP of ``g_S`` and one dot product. Per-example cost is
   linear in ``|S|`` by construction (the same work, sequence after sequence), and a full run
   would take hours, so it is timed on the first ``--subset`` sequences and **extrapolated
   linearly to 1,000**. Two checks make the baseline trustworthy: LiSSA against conjugate
   gradient solved to a tight tolerance, and the per-example sum over the subset against the
   subset's group score (the two are equal by linearity of the shared, deterministic operator).
   The untrained model's Hessian is indefinite, so the damping lifts its smallest eigenvalue
   (estimated by power iteration) above zero; LiSSA's cost does not depend on it.
2. **What tikmix ships: EK-FAC.** Its IHVP is closed form and cheap, computed once for either
   method, so only the gradient passes differ: group (batches of 50, one dot product) vs
   per-example (one forward/backward and one dot product per sequence), plus a batched
   per-example variant (per-sequence gradients ``G_n = Σ_t g_t a_tᵀ`` formed with bmm, as
   kronfluence does). Best of two interleaved repeats.

The acceptance target (group ≥ 100× faster) is the paper's claim, about setting 1. Runs on one
thread by default, in two to three minutes:
``.venv/bin/python benchmarks/bench_influence_group.py [--threads 1] [--subset 10] [--depth 100]``.
"""

from __future__ import annotations

import argparse
import time

import torch
from lissa_baseline import (
    FixedBatchHessian,
    Vector,
    conjugate_gradient,
    dot,
    lissa,
    norm,
    spectrum_ends,
)
from torch import nn

from tikmix.influence import fit_ekfac, precondition, select_modules, summed_gradients
from tikmix.influence.tracking import LayerRecorder, tracked_parameters_require_grad
from tikmix.models.llama import ModelConfig, TinyLlama
from tikmix.models.loss import summed_loss

N_SEQ, SEQ, VOCAB, BATCH, REPEATS = 1000, 64, 2048, 50, 2
HVP_BATCH = 8  # fitting sequences whose mean-loss Hessian LiSSA inverts
CG_TOL = 1e-6


def gradient(model: nn.Module, modules: dict[str, nn.Linear], ids: torch.Tensor) -> Vector:
    """Summed token-loss gradient of ``ids`` (batches of ``BATCH``), in float32 like the model."""
    return summed_gradients(model, modules, list(ids.split(BATCH)), dtype=torch.float32).sums


def lissa_setting(
    model: nn.Module,
    modules: dict[str, nn.Linear],
    domain: torch.Tensor,
    task: Vector,
    subset: int,
    depth: int,
) -> float:
    """Eqs. 4-5 with a LiSSA IHVP; returns the group speed-up over extrapolated per-example."""
    hessian = FixedBatchHessian(model, modules, domain[:HVP_BATCH])
    low, high = spectrum_ends(hessian, task)
    damping = max(-low, 0.0) + 0.1 * (high - low)
    scale = 1.1 * (high + damping)
    n_params = sum(t.numel() for t in task.values())
    print(f"\n[1] paper's setting (eqs. 4-5): IHVP by LiSSA, J={depth} exact HVPs each")
    print(
        f"    H = Hessian of the mean loss of {HVP_BATCH} fitting sequences over {n_params} "
        f"tracked weights: eigenvalues in ~[{low:.3g}, {high:.3g}]"
    )
    print(f"    damping λ = {damping:.3g}, scale s = {scale:.3g}")

    def ihvp(vector: Vector) -> Vector:
        return lissa(hessian, vector, damping, scale, depth)

    start = time.perf_counter()
    task_lissa = ihvp(task)
    ihvp_time = time.perf_counter() - start
    task_cg, steps, residual = conjugate_gradient(hessian, task, damping, CG_TOL, 500)
    error = norm({n: task_lissa[n] - task_cg[n] for n in task}) / norm(task_cg)
    score_error = abs(dot(task, task_lissa) / dot(task, task_cg) - 1)
    print(
        f"    sanity: LiSSA vs conjugate gradient ({steps} steps, true residual {residual:.1e}) "
        f"on the task gradient: relative error {error:.1e} (vector), {score_error:.1e} (score)"
    )

    start = time.perf_counter()
    naive_score = sum(
        dot(task, ihvp(gradient(model, modules, domain[n : n + 1]))) for n in range(subset)
    )
    naive_time = time.perf_counter() - start
    naive_extrapolated = naive_time * N_SEQ / subset

    start = time.perf_counter()
    g_domain = gradient(model, modules, domain)
    pass_time = time.perf_counter() - start
    dot(task, ihvp(g_domain))
    group_time = time.perf_counter() - start

    subset_score = dot(task, ihvp(gradient(model, modules, domain[:subset])))
    linearity = abs(naive_score / subset_score - 1)
    print(
        f"    linearity: per-example sum over {subset} sequences {naive_score:.6g} vs their group "
        f"score {subset_score:.6g}: relative difference {linearity:.1e}"
    )
    rows = [
        ("one LiSSA IHVP", ihvp_time, ""),
        (
            f"per-example, {subset} sequences (timed)",
            naive_time,
            f"{naive_time / subset:.2f} s each",
        ),
        (f"per-example, {N_SEQ} (extrapolated)", naive_extrapolated, "linear in |S|"),
        (f"group, {N_SEQ} sequences", group_time, f"gradient pass {pass_time:.2f} s + 1 IHVP"),
    ]
    for label, seconds, note in rows:
        print(f"    {label:<36}{seconds:9.2f} s  {note}".rstrip())
    return naive_extrapolated / group_time


def ekfac_setting(
    model: nn.Module, modules: dict[str, nn.Linear], domain: torch.Tensor, task: Vector
) -> float:
    """The shipped EK-FAC setting; returns the group speed-up over per-example one by one."""
    factors = fit_ekfac(model, [domain[:64]], modules=modules, fisher="empirical")
    pre = {k: v.float() for k, v in precondition(factors, {"t": task})["t"].items()}

    def group() -> float:
        return dot(pre, gradient(model, modules, domain))

    def per_example() -> float:
        return sum(dot(pre, gradient(model, modules, domain[n : n + 1])) for n in range(N_SEQ))

    recorder = LayerRecorder(modules)

    def batched_per_example() -> float:
        score = 0.0
        with tracked_parameters_require_grad(modules) as params:
            for ids in domain.split(BATCH):
                with recorder.recording(ids.shape[0], SEQ):
                    loss, _ = summed_loss(model, ids)
                    torch.autograd.grad(loss, params)
                for name in modules:
                    ((a, g),) = recorder.pairs(name)
                    per_sequence = torch.bmm(g.transpose(1, 2), a)  # [B, out, in]
                    score += float((per_sequence * pre[name]).sum(dim=(1, 2)).sum())
        return score

    methods = {"group": group, "per-example": per_example, "batched": batched_per_example}
    times = {name: [] for name in methods}
    scores = {}
    for _ in range(REPEATS):  # interleaved, best of REPEATS: robust to a shared machine
        for name, fn in methods.items():
            start = time.perf_counter()
            scores[name] = fn()
            times[name].append(time.perf_counter() - start)
    group_time, per_example_time, batched_time = (min(times[n]) for n in methods)
    group_score, per_example_score, batched_score = (scores[n] for n in methods)

    print("\n[2] with EK-FAC IHVP (cheap, closed form): the saving is only batching")
    print(
        f"    scores (should agree): group {group_score:.6g}  per-example {per_example_score:.6g}"
        f"  batched per-example {batched_score:.6g}"
    )
    print(f"    group influence:            {group_time:8.3f} s")
    print(f"    per-example (one by one):   {per_example_time:8.3f} s")
    print(f"    per-example (batched bmm):  {batched_time:8.3f} s")
    print(f"    speed-up vs batched per-example = {batched_time / group_time:.1f}x")
    return per_example_time / group_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--subset", type=int, default=10, help="per-example LiSSA runs timed")
    parser.add_argument("--depth", type=int, default=100, help="LiSSA depth J")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = TinyLlama(ModelConfig(vocab_size=VOCAB, d_model=64, n_layers=2, max_seq_len=SEQ))
    model.eval()
    modules = select_modules(model)
    domain = torch.randint(VOCAB, (N_SEQ, SEQ + 1))
    task = summed_gradients(model, modules, [torch.randint(VOCAB, (8, SEQ + 1))]).sums
    gradient(model, modules, domain[:100])  # warm-up
    print(f"threads={torch.get_num_threads()} domain={N_SEQ} sequences x {SEQ} tokens")

    lissa_speedup = lissa_setting(
        model, modules, domain, {n: t.float() for n, t in task.items()}, args.subset, args.depth
    )
    ekfac_speedup = ekfac_setting(model, modules, domain, task)

    print(
        f"\ngroup vs per-example (eqs. 4-5, LiSSA J={args.depth}): {lissa_speedup:.1f}x "
        f"(per-example extrapolated from {args.subset} sequences; target >= 100x)"
    )
    print(f"group vs per-example (EK-FAC): {ekfac_speedup:.1f}x")


if __name__ == "__main__":
    main()
