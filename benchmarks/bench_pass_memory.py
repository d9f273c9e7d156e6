"""Benchmark: peak RSS of every job that holds the model or the factors, against its bound.

A SmolLM2-135M-shaped Hugging Face Llama (hidden 576, 30 layers, 9 heads / 3 KV heads,
intermediate 1536, vocabulary 49152, tied embeddings, 2048 positions), random weights built
with ``transformers`` from that config and saved as a checkpoint; two domains of random
tokens; a task file of ``--task-rows`` rows of ``--seq-len + 1`` tokens, the second half of each
row scored. Every pass runs its workflow stage function (``tikmix.influence.stages``,
``tikmix.analysis.additivity``, ``tikmix.models.stage2.evaluate_tasks``) at batch
``--batch`` in a fresh subprocess that reports its own peak RSS (the kernel's ``VmHWM``).

The bound of each pass is the formula of ``docs/scaling.md#memory-of-each-pass``:
the model + the pass's own statistics + one forward pass's activations (a slice of the batch
within ``tracking.ACTIVATION_BUDGET_BYTES``) + 0.5 GB, from the model's shapes. The
process's own baseline (Python, torch, transformers imported: ~0.4 GB) counts against the
0.5 GB.

The task-gradient pass also runs from ``main``'s code (``git archive main tikmix``, in its own
subprocess) on the same checkpoint and task file: the table prints the ratio of the two peaks
and the relative difference of the two gradient stores (Frobenius norm over all modules).

Run (about 10 min on 2 shared cores, ~3 GB on disk under benchmarks/out/pass_memory, kept so
that ``--only`` can rerun one pass; delete it afterwards)::

    nice -n 10 .venv/bin/python benchmarks/bench_pass_memory.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out" / "pass_memory"
GB = 1e9
SLACK = 0.5 * GB
SMOLLM2 = {
    "vocab_size": 49152,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "tie_word_embeddings": True,
    "max_position_embeddings": 2048,
}
DOMAINS = ("d0", "d1")
PASSES = (
    "task_gradients (main)",
    "task_gradients",
    "domain_gradients",
    "ekfac_covariances",
    "ekfac_eigen",
    "ekfac_lambda",
    "ekfac_domain_lambda",
    "measure_mixtures",
    "additivity",
    "evaluation",
)


def vm_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key}")


# ---------------------------------------------------------------------------- set-up (parent)


def setup(args) -> dict:
    import numpy as np
    import pandas as pd
    import torch
    import transformers

    OUT.mkdir(parents=True, exist_ok=True)
    paths = {
        "checkpoint": OUT / "model",
        "task_file": OUT / "task.npz",
        "domains": {d: str(OUT / "domains" / d) for d in DOMAINS},
        "influence_csv": OUT / "influence.csv",
        "reference": OUT / "reference.json",
        "mixtures_csv": OUT / "mixtures.csv",
    }
    if not (paths["checkpoint"] / "config.json").is_file():
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SMOLLM2))
        model.save_pretrained(paths["checkpoint"])
        del model
    rng = np.random.default_rng(0)
    for directory in paths["domains"].values():
        Path(directory).mkdir(parents=True, exist_ok=True)
        np.save(Path(directory) / "train.npy", rng.integers(1, 49152, 200_000, dtype=np.uint16))
    length = args.seq_len + 1
    ids = rng.integers(1, 49152, (args.task_rows, length)).astype(np.int32)
    mask = np.zeros_like(ids, dtype=np.uint8)
    mask[:, length // 2 :] = 1
    np.savez(paths["task_file"], input_ids=ids, loss_mask=mask)
    B = pd.DataFrame([[1.0, 2.0]], index=pd.Index(["task"], name="task"), columns=list(DOMAINS))
    B.to_csv(paths["influence_csv"])
    Path(paths["reference"]).write_text(json.dumps({"weights": {"d0": 0.5, "d1": 0.5}}))
    pd.DataFrame({"d0": [0.3], "d1": [0.7]}, index=pd.Index([0], name="mixture")).to_csv(
        paths["mixtures_csv"]
    )
    main_tree = OUT / "main_tree"
    if not (main_tree / "tikmix").is_dir():
        archive = OUT / "main.tar"
        subprocess.run(
            ["git", "archive", "-o", str(archive), "main", "tikmix"], cwd=ROOT, check=True
        )
        with tarfile.open(archive) as tar:
            tar.extractall(main_tree, filter="data")
    config = {k: str(v) if isinstance(v, Path) else v for k, v in paths.items()}
    config.update(batch=args.batch, seq_len=args.seq_len, main_tree=str(main_tree))
    (OUT / "setup.json").write_text(json.dumps(config, indent=1))
    return config


# ------------------------------------------------------------------------- one pass (child)


def run_pass(name: str) -> dict:
    """Run one pass in this (fresh) process; return its peak RSS and the baseline before it."""
    config = json.loads((OUT / "setup.json").read_text())
    import torch  # noqa: F401  (imported before the baseline is read)
    import transformers  # noqa: F401

    from tikmix.core.gradient_pass import GradientPassSettings
    from tikmix.influence import stages
    from tikmix.influence.tracking import DEFAULT_MODULE_PATTERN

    batch, seq_len = config["batch"], config["seq_len"]
    settings = GradientPassSettings(
        tracked_modules=DEFAULT_MODULE_PATTERN,
        projection=None,
        precision="fp32",
        batch_size=batch,
        seq_len=seq_len,
        seed=0,
        device="cpu",
    )
    stores = OUT / "stores"
    stores.mkdir(exist_ok=True)
    checkpoint, domains = config["checkpoint"], config["domains"]
    sample = {
        "checkpoint": checkpoint,
        "domain_dirs": domains,
        "weights": {d: 1 / len(domains) for d in domains},
        "tokens": batch * seq_len,
        "shards": 1,
        "shard": 0,
        "gradient_pass": settings,
    }
    baseline = vm_kb("VmRSS")
    if name.startswith("task_gradients"):
        out = stores / ("task_main.zarr" if "main" in name else "task.zarr")
        stages.task_gradients(
            checkpoint=checkpoint,
            task="task",
            task_file=config["task_file"],
            gradient_pass=settings.for_tasks(batch),
            out=out,
        )
    elif name == "domain_gradients":
        for domain, directory in domains.items():  # the first sets the peak; the rest feed B
            stages.domain_gradients(
                checkpoint=checkpoint,
                domain=domain,
                domain_dir=directory,
                tokens=batch * seq_len,
                shards=1,
                shard=0,
                gradient_pass=settings,
                out=stores / f"{domain}.part.zarr",
            )
            break
    elif name == "ekfac_covariances":
        stages.ekfac_covariances(fisher="sampled", out=stores / "cov.zarr", **sample)
    elif name == "ekfac_eigen":
        stages.ekfac_eigen([stores / "cov.zarr"], stores / "eigen.zarr")
    elif name == "ekfac_lambda":
        stages.ekfac_lambda(
            eigen=stores / "eigen.zarr", fisher="sampled", out=stores / "lambda.zarr", **sample
        )
    elif name == "ekfac_domain_lambda":
        stages.ekfac_domain_lambda(
            domain="d0",
            domain_dir=domains["d0"],
            tokens=batch * seq_len,
            checkpoint=checkpoint,
            eigen=stores / "eigen.zarr",
            fisher="sampled",
            gradient_pass=settings,
            out=stores / "lambda_d0.zarr",
        )
    elif name == "preconditioning":  # set-up of the measurements (not a model pass)
        stages.ekfac_factors(stores / "eigen.zarr", [stores / "lambda.zarr"], stores / "f.zarr")
        stages.precondition_task_gradients(
            factors=stores / "f.zarr",
            task_stores={"task": stores / "task.zarr"},
            damping=None,
            damping_factor=0.1,
            out=stores / "pre.zarr",
        )
    elif name == "measure_mixtures":
        stages.measure_mixtures(
            checkpoint=checkpoint,
            preconditioned=stores / "pre.zarr",
            mixtures_csv=config["mixtures_csv"],
            domain_dirs=domains,
            design="bench",
            tokens=batch * seq_len,
            shards=1,
            shard=0,
            gradient_pass=settings,
            out=stores / "measured.csv",
        )
    elif name == "additivity":
        from tikmix.analysis.additivity import run_additivity_check

        run_additivity_check(
            checkpoint=checkpoint,
            domain_dirs=domains,
            influence_csv=config["influence_csv"],
            reference_mixture=config["reference"],
            preconditioned=stores / "pre.zarr",
            tracked_modules=DEFAULT_MODULE_PATTERN,
            device="cpu",
            n_mixtures=1,
            tokens=batch * seq_len,
            seq_len=seq_len,
            batch_size=batch,
            noise_mixtures=1,
            noise_replicates=1,
        )
    elif name == "evaluation":
        from tikmix.models.checkpoint import load_checkpoint
        from tikmix.models.stage2 import evaluate_tasks

        model, _ = load_checkpoint(checkpoint)
        evaluate_tasks(model, {"task": config["task_file"]}, batch_size=batch)
    else:
        raise ValueError(f"unknown pass {name!r}")
    import tikmix

    return {"peak_kb": vm_kb("VmHWM"), "baseline_kb": baseline, "tikmix": tikmix.__file__}


def child(name: str, main_code: bool) -> dict:
    config = json.loads((OUT / "setup.json").read_text())
    env = dict(os.environ)
    if main_code:
        env["PYTHONPATH"] = config["main_tree"]  # main's tikmix shadows the editable install
    result = subprocess.run(
        [sys.executable, __file__, "--child", name],
        env=env,
        cwd=OUT,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ the bounds


def shapes() -> dict:
    """The model's sizes the bounds are written in (``docs/scaling.md#memory-of-each-pass``)."""
    import torch
    import transformers

    from tikmix.influence.tracking import (
        activation_bytes_per_token,
        gradient_shape,
        select_modules,
    )

    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SMOLLM2))
    model.tie_weights()
    modules = select_modules(model)
    grads = {name: gradient_shape(m) for name, m in modules.items()}
    d, f, n_layers = SMOLLM2["hidden_size"], SMOLLM2["intermediate_size"], 30
    heads = SMOLLM2["num_attention_heads"]
    d_kv = d // heads * SMOLLM2["num_key_value_heads"]
    distinct_inputs = 4 * n_layers  # q/k/v, o, gate/up and down read 4 distinct inputs
    input_dims = [d, d, d, f] * n_layers
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "tracked": sum(o * i for o, i in grads.values()),
        "d": d,
        "d_ff": f,
        "d_kv": d_kv,
        "heads": heads,
        "layers": n_layers,
        "vocab": SMOLLM2["vocab_size"],
        # per token, float32: saved activations (measured structure, see the docs) and what the
        # EK-FAC hooks record (each distinct input once, every output gradient)
        "activation_token": 4 * (n_layers * (6 * d + 2 * d_kv + 4 * f + heads + 2) + d + 32),
        "recorded_token": 4 * (sum(input_dims) + sum(o for o, _ in grads.values())),
        "budget_token": activation_bytes_per_token(modules),
        "covariance": 8
        * (
            sum(i * i for i in input_dims[:distinct_inputs]) + sum(o * o for o, _ in grads.values())
        ),
        "eigenvectors": sum(o * o + i * i for o, i in grads.values()),  # elements, per module
        "largest_module": max(o * o + i * i for o, i in grads.values()),
    }


def bounds(s: dict, batch: int, seq_len: int, task_len: int) -> dict[str, tuple[float, str]]:
    """Each pass's bound in bytes and the terms it adds (``docs/scaling.md``)."""
    from tikmix.influence.tracking import ACTIVATION_BUDGET_BYTES
    from tikmix.models.loss import LOGIT_CHUNK_ELEMENTS

    model = 4 * s["params"]
    sums = 8 * s["tracked"]
    grads32 = 4 * s["tracked"]
    # one chunk's logits, probabilities (reused as their gradient), log-softmax, float64 cdf
    head = 5 * 4 * LOGIT_CHUNK_ELEMENTS

    def slice_tokens(length: int) -> int:
        rows = max(1, ACTIVATION_BUDGET_BYTES // (s["budget_token"] * length))
        return min(batch, rows) * length

    def gradient_pass(length: int) -> tuple[float, str]:
        tokens = slice_tokens(length)
        value = model + sums + grads32 + s["activation_token"] * tokens + head + SLACK
        return value, f"M + 8P_t + 4P_t + a·{tokens} + head"

    def recorder_pass(statistics: float, label: str) -> tuple[float, str]:
        tokens = slice_tokens(seq_len)
        per_token = s["activation_token"] + s["recorded_token"]
        return model + statistics + per_token * tokens + head + SLACK, (
            f"M + {label} + (a + r)·{tokens} + head"
        )

    evaluation_batch = 4 * batch * task_len * (2 * s["d"] + 3 * s["d_ff"])
    return {
        "task_gradients": gradient_pass(task_len),
        "domain_gradients": gradient_pass(seq_len),
        "ekfac_covariances": recorder_pass(s["covariance"], "C"),
        "ekfac_eigen": (8 * 4 * s["largest_module"] + SLACK, "32·max_m(o²+i²)"),
        "ekfac_lambda": recorder_pass(4 * s["eigenvectors"] + sums, "4Q + 8P_t"),
        "ekfac_domain_lambda": recorder_pass(4 * s["eigenvectors"] + sums, "4Q + 8P_t"),
        "measure_mixtures": gradient_pass(seq_len),
        "additivity": gradient_pass(seq_len),
        "evaluation": (model + evaluation_batch + head + SLACK, "M + 4BL(2d+3d_ff) + head"),
    }


# ------------------------------------------------------------------------------------ main


def relative_difference(first: Path, second: Path) -> float:
    import numpy as np

    from tikmix.influence.store import open_store

    a, b = open_store(first), open_store(second)
    num = den = 0.0
    for name in a.names:
        x, y = a[name].astype(np.float64), b[name].astype(np.float64)
        num += float(np.sum((x - y) ** 2))
        den += float(np.sum(x**2))
    return (num / den) ** 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--task-rows", type=int, default=64)
    parser.add_argument("--only", nargs="*", help="passes to run (default: all)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_pass(args.child)))
        return
    config = setup(args)
    s = shapes()
    limits = bounds(s, args.batch, args.seq_len, args.seq_len)
    print(
        f"SmolLM2-135M-shaped HF Llama, random weights: {s['params'] / 1e6:.1f}M parameters "
        f"(M = {4 * s['params'] / GB:.2f} GB fp32), tracked P_t = {s['tracked'] / 1e6:.1f}M; "
        f"batch {args.batch}, seq_len {args.seq_len}, task rows {args.task_rows}"
    )
    print(f"{'pass':26s} {'peak GB':>8s} {'bound GB':>9s} {'peak/bound':>10s}  bound terms")
    peaks = {}
    for name in PASSES:
        if args.only and name not in args.only:
            continue
        if name == "measure_mixtures" and not (OUT / "stores" / "pre.zarr").is_dir():
            child("preconditioning", main_code=False)
        result = child(name, main_code=name.endswith("(main)"))
        peaks[name] = result["peak_kb"] * 1024
        key = name.removesuffix(" (main)")
        bound, terms = limits[key]
        print(
            f"{name:26s} {peaks[name] / GB:8.2f} {bound / GB:9.2f} {peaks[name] / bound:10.2f}  "
            f"{terms} (baseline {result['baseline_kb'] * 1024 / GB:.2f} GB)",
            flush=True,
        )
    if "task_gradients" in peaks and "task_gradients (main)" in peaks:
        stores = OUT / "stores"
        print(
            f"task gradients: main / this = "
            f"{peaks['task_gradients (main)'] / peaks['task_gradients']:.2f}x less memory; "
            f"relative difference of the stores "
            f"{relative_difference(stores / 'task_main.zarr', stores / 'task.zarr'):.2e}"
        )
    del config


if __name__ == "__main__":
    main()
