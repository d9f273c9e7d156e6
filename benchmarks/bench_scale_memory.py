"""Benchmark: peak memory of the domain-gradient pass vs a plain training step (CPU).

Built-in Llama of ~26M parameters (d_model 512, 7 layers, vocab 8192), 4 × 256-token batches,
fp32. Each mode runs in a fresh subprocess (so peaks do not mix) and reports its process's peak
RSS (``tikmix.resources``) and the peak above the baseline after the model and batches exist:

* ``train``: one forward + backward + AdamW step (the reference);
* ``domain_gradients``: ``summed_gradients`` over the same batches (float64 sums, as the
  stage ``domain_gradients`` runs it), unprojected;
* ``domain_gradients r64``: the same with a 64×64 projection (hooks, no weight gradients).

Target: domain-gradient peak ≤ 3 × the training step's. Run:
``.venv/bin/python benchmarks/bench_scale_memory.py`` (under a minute).
"""

from __future__ import annotations

import json
import subprocess
import sys

MODES = ["train", "domain_gradients", "domain_gradients r64"]


def child(mode: str) -> None:
    import torch

    from tikmix.influence import select_modules, summed_gradients
    from tikmix.influence.projection import ProjectionSpec, make_projections
    from tikmix.models.llama import ModelConfig, TinyLlama
    from tikmix.models.loss import summed_loss
    from tikmix.resources import ResourceMonitor, current_rss_mb

    torch.manual_seed(0)
    config = ModelConfig(vocab_size=8192, d_model=512, n_layers=7, n_heads=8, max_seq_len=256)
    model = TinyLlama(config)
    batches = [torch.randint(8192, (4, 257)) for _ in range(2)]
    modules = select_modules(model)
    baseline = current_rss_mb()
    monitor = ResourceMonitor("cpu")
    if mode == "train":
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        for ids in batches:
            loss, count = summed_loss(model, ids)
            optimizer.zero_grad(set_to_none=True)
            (loss / count).backward()
            optimizer.step()
    else:
        projections = (
            make_projections(modules, ProjectionSpec(64, 64)) if mode.endswith("r64") else None
        )
        summed_gradients(model, modules, batches, projections=projections)
    usage = monitor.usage()
    print(
        json.dumps(
            {"mode": mode, "baseline_mb": baseline, **usage, "params": config.num_parameters()}
        )
    )


def main() -> None:
    results = {}
    for mode in MODES:
        out = subprocess.run(
            [sys.executable, __file__, mode], capture_output=True, text=True, check=True
        )
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    params = results["train"]["params"]
    print(f"built-in Llama {params / 1e6:.1f}M params (fp32 weights {params * 4 / 2**20:.0f} MiB)")
    print(f"{'mode':<22} {'peak RSS MiB':>12} {'above baseline':>15} {'ratio vs train':>15}")
    train = results["train"]
    for mode, r in results.items():
        above = r["peak_rss_mb"] - r["baseline_mb"]
        ratio = r["peak_rss_mb"] / train["peak_rss_mb"]
        print(f"{mode:<22} {r['peak_rss_mb']:12.0f} {above:15.0f} {ratio:15.2f}")
    increment = (
        results["domain_gradients"]["peak_rss_mb"] - results["domain_gradients"]["baseline_mb"]
    ) / (train["peak_rss_mb"] - train["baseline_mb"])
    print(f"domain_gradients increment / train increment = {increment:.2f}  (target <= 3)")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        child(" ".join(sys.argv[1:]))
    else:
        main()
