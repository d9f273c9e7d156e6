"""Benchmark: peak RSS of every job that holds the model or the factors, against its bound.

A SmolLM2-135M-shaped Hugging Face Llama (hidden 576, 30 layers, 9 heads / 3 KV heads,
intermediate 1536, vocabulary 49152, tied embeddings, 2048 positions; ``--shape demo``: the
demo's vocabulary 2048, d 64, 2 layers), random weights built with ``transformers`` from that
config and saved as a checkpoint; two domains of random tokens; a task file of ``--task-rows``
rows of ``--seq-len + 1`` tokens, the second half of each row scored. Every pass runs its
workflow stage function (``tikmix.influence.stages``, ``tikmix.analysis.additivity``,
``tikmix.models.stage2.evaluate_tasks``) at batch ``--batch`` in a fresh subprocess that
reports its own peak RSS (the kernel's ``VmHWM``), after the allocator setting every workflow
job makes (``tikmix.resources.return_freed_blocks_to_system``).

The bound of each pass is the formula of ``docs/scaling.md#memory-of-each-pass``:
the model + the pass's own statistics + one forward pass's activations (a slice of the batch
within ``tracking.ACTIVATION_BUDGET_BYTES``) + 0.5 GB, from the model's shapes. The
process's own baseline (Python, torch, transformers imported: ~0.4 GB) counts against the
0.5 GB.

``--against REF`` also runs every pass from REF's library (``git archive REF tikmix``, its own
subprocess and stores, on the same checkpoint and files) and prints its peak, the ratio of the
two peaks and the relative difference of the outputs (Frobenius norm over every array of a
store; the measured benefits of ``measure_mixtures`` and ``additivity``; the evaluation loss).

Run (SmolLM2 shape: 1-2 h on 2 shared cores, the eigendecomposition most of it, ~3 GB on disk
under benchmarks/out/pass_memory, kept so that ``--only`` can rerun one pass; delete it
afterwards; demo shape: minutes)::

    nice -n 10 .venv/bin/python benchmarks/bench_pass_memory.py [--only PASS ...]
    nice -n 10 .venv/bin/python benchmarks/bench_pass_memory.py --shape demo --batch 16 --against merged
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
SHAPES = {
    "smollm2": {
        "vocab_size": 49152,
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "tie_word_embeddings": True,
        "max_position_embeddings": 2048,
    },
    # the demo's model (config/config.yaml: vocabulary 2048, d 64, 2 layers, 4 heads, tied)
    "demo": {
        "vocab_size": 2048,
        "hidden_size": 64,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "tie_word_embeddings": True,
        "max_position_embeddings": 2048,
    },
}
DOMAINS = ("d0", "d1")
PASSES = (
    "task_gradients",
    "domain_gradients",
    "ekfac_covariances",
    "ekfac_eigen",
    "ekfac_lambda",
    "ekfac_domain_lambda",
    "ekfac_factors",
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


def setup(args, out: Path) -> dict:
    import numpy as np
    import pandas as pd
    import torch
    import transformers

    from tikmix.core.atomic import atomic_output, write_text_atomic

    out.mkdir(parents=True, exist_ok=True)
    shape = SHAPES[args.shape]
    vocab = shape["vocab_size"]
    paths = {
        "checkpoint": out / "model",
        "task_file": out / "task.npz",
        "domains": {d: str(out / "domains" / d) for d in DOMAINS},
        "influence_csv": out / "influence.csv",
        "reference": out / "reference.json",
        "mixtures_csv": out / "mixtures.csv",
    }
    if not (paths["checkpoint"] / "config.json").is_file():
        torch.manual_seed(0)
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**shape))
        model.save_pretrained(paths["checkpoint"])
        del model
    # the same data on every run, replaced atomically: a run beside this one may be reading it
    rng = np.random.default_rng(0)
    for directory in paths["domains"].values():
        with atomic_output(Path(directory) / "train.npy", suffix=".npy") as tmp:
            np.save(tmp, rng.integers(1, vocab, 200_000, dtype=np.uint16))
    length = args.seq_len + 1
    ids = rng.integers(1, vocab, (args.task_rows, length)).astype(np.int32)
    mask = np.zeros_like(ids, dtype=np.uint8)
    mask[:, length // 2 :] = 1
    with atomic_output(paths["task_file"], suffix=".npz") as tmp:
        np.savez(tmp, input_ids=ids, loss_mask=mask)
    B = pd.DataFrame([[1.0, 2.0]], index=pd.Index(["task"], name="task"), columns=list(DOMAINS))
    write_text_atomic(paths["influence_csv"], B.to_csv())
    write_text_atomic(paths["reference"], json.dumps({"weights": {"d0": 0.5, "d1": 0.5}}))
    mixtures = pd.DataFrame({"d0": [0.3], "d1": [0.7]}, index=pd.Index([0], name="mixture"))
    write_text_atomic(paths["mixtures_csv"], mixtures.to_csv())
    config = {k: str(v) if isinstance(v, Path) else v for k, v in paths.items()}
    config.update(batch=args.batch, seq_len=args.seq_len)
    if args.against:  # the reference's library, from git (a tree per commit it names)
        commit = subprocess.run(
            ["git", "rev-parse", args.against], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout.strip()
        tree = out / f"tree_{commit[:12]}"
        if not (tree / "tikmix").is_dir():
            archive = out / f"{commit[:12]}.tar"
            subprocess.run(
                ["git", "archive", "-o", archive, commit, "tikmix"], cwd=ROOT, check=True
            )
            with tarfile.open(archive) as tar:
                tar.extractall(tree, filter="data")
        config["reference_tree"] = str(tree)
    write_text_atomic(out / "setup.json", json.dumps(config, indent=1))
    return config


# ------------------------------------------------------------------------- one pass (child)


def run_pass(name: str, out: Path, stores: Path) -> dict:
    """Run one pass in this (fresh) process, its stores under ``stores``; return its peak RSS,
    the baseline before it and the numbers of the passes that write no store."""
    config = json.loads((out / "setup.json").read_text())
    import pandas as pd
    import torch  # noqa: F401  (imported before the baseline is read)
    import transformers  # noqa: F401

    from tikmix.core.gradient_pass import GradientPassSettings
    from tikmix.influence import stages
    from tikmix.influence.tracking import DEFAULT_MODULE_PATTERN

    try:  # as every workflow job does at start (tikmix.workflow.script_logging)
        from tikmix.resources import return_freed_blocks_to_system
    except ImportError:  # a reference library from before it
        pass
    else:
        return_freed_blocks_to_system()
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
    values: list[float] = []  # what a pass without a store returns, to compare
    if name == "task_gradients":
        stages.task_gradients(
            checkpoint=checkpoint,
            task="task",
            task_file=config["task_file"],
            gradient_pass=settings.for_tasks(batch),
            out=stores / "task.zarr",
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
    elif name == "ekfac_factors":
        stages.ekfac_factors(stores / "eigen.zarr", [stores / "lambda.zarr"], stores / "f.zarr")
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
        measured = pd.read_csv(stores / "measured.csv")
        values = measured.filter(like="benefit:").to_numpy().ravel()
    elif name == "additivity":
        from tikmix.analysis.additivity import run_additivity_check

        result = run_additivity_check(
            checkpoint=checkpoint,
            domain_dirs=domains,
            influence_csv=config["influence_csv"],
            reference_mixture=config["reference"],
            preconditioned=stores / "pre.zarr",
            tracked_modules=DEFAULT_MODULE_PATTERN,
            device="cpu",
            n_mixtures=4,  # the fewest the check accepts, each one gradient pass
            tokens=batch * seq_len,
            seq_len=seq_len,
            batch_size=batch,
            noise_mixtures=1,
            noise_replicates=1,
        )
        values = result.points["direct"].to_numpy()
    elif name == "evaluation":
        from tikmix.models.checkpoint import load_checkpoint
        from tikmix.models.stage2 import evaluate_tasks

        model, _ = load_checkpoint(checkpoint)
        metrics = evaluate_tasks(model, {"task": config["task_file"]}, batch_size=batch)
        values = [metrics["task"]["loss"]]
    else:
        raise ValueError(f"unknown pass {name!r}")
    import tikmix

    return {
        "peak_kb": vm_kb("VmHWM"),
        "baseline_kb": baseline,
        "tikmix": tikmix.__file__,
        "values": [float(v) for v in values],
    }


def child(name: str, out: Path, reference: bool) -> dict:
    """Run pass ``name`` in a fresh process: this worktree's library, or (``reference``) the
    ``--against`` commit's, each with its own stores (a reference pass reads reference stores)."""
    config = json.loads((out / "setup.json").read_text())
    env = dict(os.environ)
    if reference:
        env["PYTHONPATH"] = config["reference_tree"]  # shadows the editable install
    stores = out / ("stores_reference" if reference else "stores")
    result = subprocess.run(
        [sys.executable, __file__, "--child", name, "--out", out, "--stores", stores],
        env=env,
        cwd=out,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ the bounds


def shapes(shape: dict) -> dict:
    """The model's sizes the bounds are written in (``docs/scaling.md#memory-of-each-pass``)."""
    import torch
    import transformers

    from tikmix.influence.tracking import (
        activation_bytes_per_token,
        gradient_shape,
        select_modules,
    )

    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**shape))
    model.tie_weights()
    modules = select_modules(model)
    grads = {name: gradient_shape(m) for name, m in modules.items()}
    d, f, n_layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    heads = shape["num_attention_heads"]
    d_kv = d // heads * shape["num_key_value_heads"]
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
        "vocab": shape["vocab_size"],
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
        "largest_gradient": max(o * i for o, i in grads.values()),
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
        "ekfac_factors": (
            8 * s["largest_module"] + 3 * 8 * s["largest_gradient"] + SLACK,
            "8·max_m(o²+i²) + 24·max_m(o·i)",
        ),
        "ekfac_lambda": recorder_pass(4 * s["eigenvectors"] + sums, "4Q + 8P_t"),
        "ekfac_domain_lambda": recorder_pass(4 * s["eigenvectors"] + sums, "4Q + 8P_t"),
        "measure_mixtures": gradient_pass(seq_len),
        "additivity": gradient_pass(seq_len),
        "evaluation": (model + evaluation_batch + head + SLACK, "M + 4BL(2d+3d_ff) + head"),
    }


# ------------------------------------------------------------------------------------ main


#: the store each pass writes (the others return their numbers)
STORES = {
    "task_gradients": "task.zarr",
    "domain_gradients": "d0.part.zarr",
    "ekfac_covariances": "cov.zarr",
    "ekfac_eigen": "eigen.zarr",
    "ekfac_lambda": "lambda.zarr",
    "ekfac_domain_lambda": "lambda_d0.zarr",
    "ekfac_factors": "f.zarr",
}


def relative_difference(reference: Path, this: Path) -> float:
    """``‖this - reference‖ / ‖reference‖`` over every array of two stores."""
    import numpy as np

    from tikmix.influence.store import open_store

    a, b = open_store(reference), open_store(this)
    num = den = 0.0
    for name in a.names:
        x, y = a[name].astype(np.float64), b[name].astype(np.float64)
        num += float(np.sum((x - y) ** 2))
        den += float(np.sum(x**2))
    return (num / den) ** 0.5


def main() -> None:
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="smollm2")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--task-rows", type=int, default=64)
    parser.add_argument("--only", nargs="*", help="passes to run (default: all)")
    parser.add_argument(
        "--against", help="also run each pass from this commit's library and compare"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--stores", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_pass(args.child, args.out, args.stores)))
        return
    out = OUT / args.shape
    setup(args, out)
    s = shapes(SHAPES[args.shape])
    limits = bounds(s, args.batch, args.seq_len, args.seq_len)
    print(
        f"{args.shape}-shaped HF Llama, random weights: {s['params'] / 1e6:.1f}M parameters "
        f"(M = {4 * s['params'] / GB:.2f} GB fp32), tracked P_t = {s['tracked'] / 1e6:.1f}M; "
        f"batch {args.batch}, seq_len {args.seq_len}, task rows {args.task_rows}"
    )
    against = f" {'ref GB':>7s} {'ref/this':>8s} {'rel diff':>9s}" if args.against else ""
    print(f"{'pass':20s} {'peak GB':>8s} {'bound GB':>9s} {'peak/bound':>10s}{against}  terms")
    for name in PASSES:
        if args.only and name not in args.only:
            continue
        for reference in (False, True) if args.against else (False,):
            stores = out / ("stores_reference" if reference else "stores")
            if name == "measure_mixtures" and not (stores / "pre.zarr").is_dir():
                child("preconditioning", out, reference)
        result = child(name, out, reference=False)
        peak = result["peak_kb"] * 1024
        bound, terms = limits[name]
        row = f"{name:20s} {peak / GB:8.2f} {bound / GB:9.2f} {peak / bound:10.2f}"
        if args.against:
            ref = child(name, out, reference=True)
            if name in STORES:
                diff = relative_difference(
                    out / "stores_reference" / STORES[name], out / "stores" / STORES[name]
                )
            else:
                x, y = np.array(ref["values"]), np.array(result["values"])
                diff = float(np.linalg.norm(y - x) / np.linalg.norm(x))
            ref_peak = ref["peak_kb"] * 1024
            row += f" {ref_peak / GB:7.2f} {ref_peak / peak:8.2f} {diff:9.1e}"
        baseline = result["baseline_kb"] * 1024 / GB
        print(f"{row}  {terms} (baseline {baseline:.2f} GB)", flush=True)


if __name__ == "__main__":
    main()
