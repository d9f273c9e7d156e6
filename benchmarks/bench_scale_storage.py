"""Benchmark: bytes of one domain-gradient store vs projection rank.

Measured: the on-disk size (Zarr v3, zstd) of a ``gradient_sums`` store of the built-in Llama
(d_model 256, 6 layers, ~6.8M parameters, all 42 attention/MLP projections tracked) for
``projection: null`` and ranks 8–128 (``rank_out = rank_in = r``), written by
``tikmix.influence.store.save_gradients`` after one real gradient pass. Computed (not measured):
the float32 bytes of one domain's gradient for Llama-2-7B's shapes (32 layers; q,k,v,o 4096×4096;
gate/up 11008×4096; down 4096×11008) at the same ranks, and × 26 domains. Run:
``.venv/bin/python benchmarks/bench_scale_storage.py`` (seconds).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from tikmix.influence import save_gradients, select_modules, summed_gradients
from tikmix.influence.projection import ProjectionSpec, make_projections
from tikmix.models.llama import ModelConfig, TinyLlama

RANKS = [None, 8, 16, 32, 64, 128]
LLAMA_7B = [(4096, 4096)] * 4 + [(11008, 4096)] * 2 + [(4096, 11008)]  # (out, in) per layer


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def llama7b_bytes(rank: int | None) -> int:
    per_layer = sum(
        (out if rank is None else min(rank, out)) * (inp if rank is None else min(rank, inp))
        for out, inp in LLAMA_7B
    )
    return 32 * per_layer * 4


def main() -> None:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=8192, d_model=256, n_layers=6, n_heads=4, max_seq_len=64)
    model = TinyLlama(config)
    modules = select_modules(model)
    batches = [torch.randint(8192, (4, 65), generator=torch.Generator().manual_seed(0))]
    print(f"built-in d256 L6 ({config.num_parameters() / 1e6:.1f}M params, {len(modules)} modules)")
    print(f"{'rank':>6} {'store bytes':>12} {'vs full':>8} {'7B GB/domain':>13} {'7B x26 GB':>10}")
    full = None
    with tempfile.TemporaryDirectory() as tmp:
        for rank in RANKS:
            projections = (
                None if rank is None else make_projections(modules, ProjectionSpec(rank, rank))
            )
            stats = summed_gradients(
                model, modules, batches, dtype=torch.float32, projections=projections
            )
            path = save_gradients(Path(tmp) / f"r{rank}.zarr", stats)
            size = directory_bytes(path)
            full = full or size
            big = llama7b_bytes(rank) / 1e9
            print(
                f"{'none' if rank is None else rank:>6} {size:12d} {size / full:8.4f} "
                f"{big:13.4f} {26 * big:10.3f}"
            )


if __name__ == "__main__":
    main()
