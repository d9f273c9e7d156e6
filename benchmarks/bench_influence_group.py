"""Benchmark (b): group influence of a 1,000-sequence domain vs per-example influence.

Both score the same domain against one preconditioned task gradient (the IHVP is computed once
for either). Group influence: one gradient pass over the domain in batches of 50, one dot product.
Per-example influence: each sequence's gradient (one forward/backward each), a dot product each,
then summed — what a per-example method must do to score a group. We also report a batched
per-example variant (per-sequence gradients ``G_n = Σ_t g_t a_tᵀ`` formed with bmm, as
kronfluence does). Target: group ≥ 100× faster than per-example. Run:
``.venv/bin/python benchmarks/bench_influence_group.py``.
"""

from __future__ import annotations

import time

import torch

from tikmix.influence import fit_ekfac, precondition, select_modules, summed_gradients
from tikmix.influence.tracking import LayerRecorder, tracked_parameters_require_grad
from tikmix.models.llama import ModelConfig, TinyLlama
from tikmix.models.loss import summed_loss

N_SEQ, SEQ, VOCAB, REPEATS = 1000, 64, 2048, 2


def main() -> None:
    torch.manual_seed(0)
    model = TinyLlama(ModelConfig(vocab_size=VOCAB, d_model=64, n_layers=2, max_seq_len=SEQ))
    modules = select_modules(model)
    domain = torch.randint(VOCAB, (N_SEQ, SEQ + 1))
    factors = fit_ekfac(model, [domain[:64]], modules=modules, fisher="empirical")
    task = summed_gradients(model, modules, [torch.randint(VOCAB, (8, SEQ + 1))])
    pre = {k: v.float() for k, v in precondition(factors, {"t": task})["t"].items()}

    def dot(grads: dict[str, torch.Tensor]) -> float:
        return float(sum((pre[n] * grads[n].float()).sum() for n in pre))

    def group() -> float:
        stats = summed_gradients(model, modules, list(domain.split(50)), dtype=torch.float32)
        return dot(stats.sums)

    def per_example() -> float:
        return sum(
            dot(summed_gradients(model, modules, [domain[n : n + 1]], dtype=torch.float32).sums)
            for n in range(N_SEQ)
        )

    recorder = LayerRecorder(modules)

    def batched_per_example() -> float:
        score = 0.0
        with tracked_parameters_require_grad(modules) as params:
            for ids in domain.split(50):
                with recorder.recording(ids.shape[0], SEQ):
                    loss, _ = summed_loss(model, ids)
                    torch.autograd.grad(loss, params)
                for name in modules:
                    ((a, g),) = recorder.pairs(name)
                    per_sequence = torch.bmm(g.transpose(1, 2), a)  # [B, out, in]
                    score += float((per_sequence * pre[name]).sum(dim=(1, 2)).sum())
        return score

    methods = {"group": group, "per-example": per_example, "batched": batched_per_example}
    summed_gradients(model, modules, list(domain[:100].split(50)))  # warm-up
    times = {name: [] for name in methods}
    scores = {}
    for _ in range(REPEATS):  # interleaved, best of REPEATS: robust to a shared machine
        for name, fn in methods.items():
            start = time.perf_counter()
            scores[name] = fn()
            times[name].append(time.perf_counter() - start)
    group_time, per_example_time, batched_time = (min(times[n]) for n in methods)
    group_score, per_example_score, batched_score = (scores[n] for n in methods)

    print(f"threads={torch.get_num_threads()} domain={N_SEQ} sequences x {SEQ} tokens")
    print(
        f"scores (should agree): group {group_score:.6g}  per-example {per_example_score:.6g}"
        f"  batched per-example {batched_score:.6g}"
    )
    print(f"group influence:            {group_time:8.3f} s")
    print(f"per-example (one by one):   {per_example_time:8.3f} s")
    print(f"per-example (batched bmm):  {batched_time:8.3f} s")
    print(
        f"speed-up vs per-example one by one = {per_example_time / group_time:.1f}x "
        "(target >= 100x)"
    )
    print(f"speed-up vs batched per-example    = {batched_time / group_time:.1f}x")


if __name__ == "__main__":
    main()
