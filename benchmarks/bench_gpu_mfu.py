"""Benchmark: tokens/s and model FLOPs utilisation of gradient accumulation on an NVIDIA GPU.

Built-in Llama of ~0.9B parameters (d_model 2048, 16 layers, vocab 32000), sequences of 2048
tokens, bf16 autocast, flash SDPA. Rows, each timed after a warm-up on the same batches:

* ``train step``: forward + backward + AdamW (the reference cost);
* ``summed_gradients``: our gradient accumulation (``tikmix.influence.summed_gradients``) of all
  attention/MLP projections, sums in float32, bf16 autocast;
* ``summed_gradients, projected 64x64``: the same with LoGra-style projection in the hooks;
* ``covariance pass, projected 64x64``: EK-FAC's covariance accumulation in the projected space;
* with ``--compile``, ``summed_gradients`` again on the ``torch.compile``-d model.

MFU = (model FLOPs per token × tokens/s) / peak, with the PaLM count of model FLOPs
(6·N + 12·layers·d_model·seq, ``tikmix.models.llama.model_flops_per_token``) and the H200's
(= H100 SXM's) dense bf16 datasheet peak of 989 TFLOP/s (``--peak`` to change it). Gradient
accumulation skips the embedding/LM-head weight gradient, so the FLOPs it actually performs are
a little below the count. Finishes in a few minutes on an H200; prints a table and writes JSON.
Run: ``python benchmarks/bench_gpu_mfu.py [--compile] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from tikmix.influence import covariance_sums, select_modules, summed_gradients
from tikmix.influence.projection import ProjectionSpec, make_projections
from tikmix.models.llama import ModelConfig, TinyLlama, model_flops_per_token
from tikmix.models.loss import summed_loss


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, repeats: int, device: torch.device) -> float:
    """Best wall time of ``repeats`` calls after one warm-up call (device-synchronised)."""
    fn()
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d-model", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--n-batches", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--peak", type=float, default=989e12, help="dense bf16 FLOP/s")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--json", default=None)
    parser.add_argument("--device", default="cuda", help="cpu only to smoke-test at tiny sizes")
    args = parser.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("bench_gpu_mfu.py needs an NVIDIA GPU: torch.cuda.is_available() is False")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=args.vocab,
        d_model=args.d_model,
        n_layers=args.layers,
        n_heads=args.heads,
        max_seq_len=args.seq,
    )
    model = TinyLlama(config).to(device)
    n_params = config.num_parameters()
    flops_per_token = model_flops_per_token(config, args.seq)
    batches = [
        torch.randint(args.vocab, (args.batch, args.seq + 1), device=device)
        for _ in range(args.n_batches)
    ]
    tokens = args.batch * args.seq * args.n_batches
    modules = select_modules(model)
    projections = make_projections(modules, ProjectionSpec(rank_out=64, rank_in=64))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
    bf16 = torch.autocast(device.type, dtype=torch.bfloat16)

    def train() -> None:
        for ids in batches:
            with bf16:
                loss, count = summed_loss(model, ids)
            optimizer.zero_grad(set_to_none=True)
            (loss / count).backward()
            optimizer.step()

    rows = {"train step (bf16, AdamW)": train}
    rows["summed_gradients (bf16)"] = lambda: summed_gradients(
        model, modules, batches, dtype=torch.float32, precision="bf16"
    )
    rows["summed_gradients, projected 64x64 (bf16)"] = lambda: summed_gradients(
        model, modules, batches, dtype=torch.float32, precision="bf16", projections=projections
    )
    rows["covariance pass, projected 64x64 (bf16)"] = lambda: covariance_sums(
        model,
        modules,
        batches,
        fisher="empirical",
        dtype=torch.float32,
        precision="bf16",
        projections=projections,
    )
    if args.compile:
        compiled = torch.compile(model)
        rows["summed_gradients, torch.compile (bf16)"] = lambda: summed_gradients(
            compiled, modules, batches, dtype=torch.float32, precision="bf16"
        )

    name = torch.cuda.get_device_name() if cuda else "cpu"
    print(f"device: {name}; torch {torch.__version__}")
    print(
        f"model: {n_params / 1e6:.0f}M parameters (d_model {args.d_model}, {args.layers} layers, "
        f"vocab {args.vocab}); batch {args.batch} x seq {args.seq}; {tokens} tokens per timed run"
    )
    print(
        f"model FLOPs/token {flops_per_token / 1e9:.2f} GFLOP; peak {args.peak / 1e12:.0f} TFLOP/s"
    )
    print(f"{'path':<44} {'tokens/s':>10} {'TFLOP/s':>8} {'MFU':>6} {'peak GiB':>9}")
    results = []
    summary = {
        "device": name,
        "torch": torch.__version__,
        "parameters": n_params,
        "config": vars(args),
        "flops_per_token": flops_per_token,
        "rows": results,
    }
    for label, fn in rows.items():
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        seconds = timed(fn, args.repeats, device)
        throughput = tokens / seconds
        achieved = throughput * flops_per_token
        peak_gib = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        results.append(
            {
                "path": label,
                "tokens_per_s": throughput,
                "tflops": achieved / 1e12,
                "mfu": achieved / args.peak,
                "peak_gib": peak_gib,
            }
        )
        print(
            f"{label:<44} {throughput:10.0f} {achieved / 1e12:8.1f} "
            f"{achieved / args.peak:6.1%} {peak_gib:9.1f}",
            flush=True,
        )
        optimizer.zero_grad(set_to_none=True)
        if args.json:  # after every row: a later row that fails keeps the earlier ones
            with open(args.json, "w") as handle:
                json.dump(summary, handle, indent=2)
    base = results[0]["tokens_per_s"]
    for row in results[1:]:
        print(f"ratio {row['path']} / train step = {row['tokens_per_s'] / base:.2f}")


if __name__ == "__main__":
    main()
