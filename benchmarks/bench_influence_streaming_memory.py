"""Benchmark: peak RSS of preconditioning and the influence matrix, whole-model vs streamed.

A SmolLM-135M-shaped Hugging Face Llama (hidden 576, 30 layers, 9 heads / 3 KV heads,
intermediate 1536, vocab 49152, tied embeddings), built from its ``LlamaConfig`` on the meta
device (no weights are allocated or downloaded): its tracked modules give the shapes of the Zarr
stores the gradient passes would write — EK-FAC factors, 3 tasks' summed gradients and 2 domains'
mean gradients, float64 as the pipeline writes them (identity eigenvectors and constant gradients:
the memory and arithmetic are those of real stores, and the stores compress to little on disk).

Each stage then runs in a fresh subprocess that reports its own peak RSS:

* ``precondition whole``: the previous code path — ``load_factors`` and every task's
  ``load_gradients`` held whole, ``precondition``, then the store written;
* ``precondition streamed``: ``stages.precondition_task_gradients`` (one module at a time);
* ``influence whole``: ``load_preconditioned`` and every domain's mean gradient held whole,
  then ``influence_matrix``;
* ``influence streamed``: ``stages.influence_matrix`` (one module at a time).

Target: streamed peak ≤ 2 × the checkpoint's own size in memory (fp32 parameters). Run:
``nice .venv/bin/python benchmarks/bench_influence_streaming_memory.py`` (a few minutes; writes
about 1 GB under benchmarks/out/streaming_memory, removed at the end).
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out" / "streaming_memory"
TASKS, DOMAINS = ["t0", "t1", "t2"], ["d0", "d1"]
STAGES = ["precondition whole", "precondition streamed", "influence whole", "influence streamed"]


def smollm_shaped():
    import torch
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        tie_word_embeddings=True,
        max_position_embeddings=2048,
    )
    with torch.device("meta"):
        return transformers.LlamaForCausalLM(config)


def make_stores() -> dict:
    """Write the stores the gradient passes would leave; return the sizes."""
    import torch

    from tikmix.influence.ekfac import EkfacFactors
    from tikmix.influence.gradients import GradientStats
    from tikmix.influence.store import reduce_gradient_stores, save_factors, save_gradients
    from tikmix.influence.tracking import gradient_shape, select_modules

    model = smollm_shaped()
    modules = select_modules(model)
    shapes = {name: gradient_shape(m) for name, m in modules.items()}
    f64 = torch.float64
    factors = EkfacFactors(
        activation_eigenvectors={n: torch.eye(s[1], dtype=f64) for n, s in shapes.items()},
        gradient_eigenvectors={n: torch.eye(s[0], dtype=f64) for n, s in shapes.items()},
        eigenvalues={n: torch.full(s, 2.0, dtype=f64) for n, s in shapes.items()},
        damping=dict.fromkeys(shapes, 0.2),
    )
    save_factors(OUT / "factors.zarr", factors, {"checkpoint": "bench", "fisher": "sampled"})
    del factors
    for k, name in enumerate(TASKS + DOMAINS):
        sums = {n: torch.full(s, 1.0 + k, dtype=f64) for n, s in shapes.items()}
        stats = GradientStats(sums=sums, n_tokens=1000, n_sequences=10)
        if name in TASKS:
            save_gradients(OUT / f"{name}.zarr", stats, {"checkpoint": "bench", "task": name})
        else:
            part = save_gradients(
                OUT / f"{name}-part.zarr", stats, {"checkpoint": "bench", "domain": name}
            )
            reduce_gradient_stores([part], OUT / f"{name}.zarr")
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "parameters": n_params,
        "checkpoint_mb": n_params * 4 / 2**20,
        "tracked_parameters": sum(s[0] * s[1] for s in shapes.values()),
        "largest_module_mb": max(s[0] * s[1] for s in shapes.values()) * 8 / 2**20,
    }


def run_stage(stage: str) -> None:
    from tikmix.influence import stages
    from tikmix.influence.api import influence_matrix, precondition
    from tikmix.influence.store import (
        load_factors,
        load_gradients,
        load_mean_gradients,
        load_preconditioned,
        write_store,
    )

    tasks = {t: OUT / f"{t}.zarr" for t in TASKS}
    domains = {d: OUT / f"{d}.zarr" for d in DOMAINS}
    if stage == "precondition whole":
        ekfac = load_factors(OUT / "factors.zarr").with_damping(None, 0.1)
        pre = precondition(ekfac, {t: load_gradients(p) for t, p in tasks.items()})
        arrays = ((f"{t}/{m}", g[m].numpy()) for t, g in pre.items() for m in ekfac.modules)
        write_store(OUT / "pre-whole.zarr", arrays, {"kind": "preconditioned_tasks"})
    elif stage == "precondition streamed":
        stages.precondition_task_gradients(
            factors=OUT / "factors.zarr",
            task_stores=tasks,
            damping=None,
            damping_factor=0.1,
            out=OUT / "pre.zarr",
        )
    elif stage == "influence whole":
        pre = load_preconditioned(OUT / "pre.zarr")
        means = {d: load_mean_gradients(p)[0] for d, p in domains.items()}
        matrix, _ = influence_matrix(pre, means)
        matrix.to_csv(
            OUT / "influence-whole.csv", float_format="%.10g"
        )  # as stages.influence_matrix
    else:
        matrix = stages.influence_matrix(
            preconditioned=OUT / "pre.zarr",
            domain_stores=domains,
            matrix_csv=OUT / "influence.csv",
            sidecar_json=OUT / "influence.json",
            per_module_parquet=OUT / "per_module.parquet",
        )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"stage": stage, "peak_rss_mb": peak_mb}))


def child(*args: str) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    try:
        sizes = child("--make")
        baseline = child("--baseline")["peak_rss_mb"]
        peaks = {stage: child("--stage", stage)["peak_rss_mb"] for stage in STAGES}
        import pandas as pd

        same = pd.read_csv(OUT / "influence.csv", index_col=0).equals(
            pd.read_csv(OUT / "influence-whole.csv", index_col=0)
        )
    finally:
        shutil.rmtree(OUT, ignore_errors=True)
    checkpoint = sizes["checkpoint_mb"]
    print(
        f"SmolLM-135M-shaped HF Llama: {sizes['parameters'] / 1e6:.1f}M parameters "
        f"(checkpoint {checkpoint:.0f} MB in fp32), {sizes['tracked_parameters'] / 1e6:.1f}M "
        f"tracked, largest module {sizes['largest_module_mb']:.1f} MB in float64; "
        f"{len(TASKS)} tasks, {len(DOMAINS)} domains"
    )
    print(f"process baseline (imports only): {baseline:.0f} MB")
    for kind in ("precondition", "influence"):
        whole, streamed = peaks[f"{kind} whole"], peaks[f"{kind} streamed"]
        print(
            f"{kind:>12}: whole-model {whole:7.0f} MB ({whole / checkpoint:.2f}x checkpoint), "
            f"streamed {streamed:7.0f} MB ({streamed / checkpoint:.2f}x checkpoint); "
            f"streamed/whole = {streamed / whole:.3f}"
        )
    print(f"influence matrices equal (whole vs streamed): {same}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--make"]:
        print(json.dumps(make_stores()))
    elif sys.argv[1:2] == ["--baseline"]:
        import tikmix.influence.stages  # noqa: F401  (the stages' imports)

        print(
            json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
        )
    elif sys.argv[1:2] == ["--stage"]:
        run_stage(sys.argv[2])
    else:
        main()
