"""Benchmark (a): group-gradient accumulation throughput vs a plain training step.

Same model (the built-in TinyLlama, vocab 2048 / d 64 / 2 layers, fp32), same batches (32 × 128
tokens): a training step is forward + backward + AdamW; a gradient-accumulation step is one
forward/backward of the summed loss restricted to the tracked projections' gradients, added into
float64 sums. Target: accumulation ≥ 0.9× the training throughput. Run:
``.venv/bin/python benchmarks/bench_influence_throughput.py``.
"""

from __future__ import annotations

import time

import torch

from tikmix.influence import select_modules, summed_gradients
from tikmix.models.llama import ModelConfig, TinyLlama
from tikmix.models.loss import summed_loss

BATCH, SEQ, N_BATCHES, REPEATS = 32, 128, 8, 3


def main() -> None:
    torch.manual_seed(0)
    model = TinyLlama(ModelConfig(vocab_size=2048, d_model=64, n_layers=2, max_seq_len=SEQ))
    batches = [torch.randint(2048, (BATCH, SEQ + 1)) for _ in range(N_BATCHES)]
    modules = select_modules(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens = BATCH * SEQ * N_BATCHES

    def train() -> None:
        for ids in batches:
            loss, count = summed_loss(model, ids)
            optimizer.zero_grad(set_to_none=True)
            (loss / count).backward()
            optimizer.step()

    def accumulate() -> None:
        summed_gradients(model, modules, batches)

    timings = {"train": [], "accumulate": []}
    train(), accumulate()  # warm-up
    for _ in range(REPEATS):  # interleaved, best of REPEATS: robust to a shared machine
        for name, fn in (("train", train), ("accumulate", accumulate)):
            start = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - start)
    train_tps = tokens / min(timings["train"])
    accumulate_tps = tokens / min(timings["accumulate"])
    print(f"threads={torch.get_num_threads()} tokens/run={tokens}")
    print(f"training step:          {train_tps:10.0f} tokens/s")
    print(f"gradient accumulation:  {accumulate_tps:10.0f} tokens/s")
    print(f"ratio accumulation / training = {accumulate_tps / train_tps:.2f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
