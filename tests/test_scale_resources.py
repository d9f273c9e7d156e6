"""Peak-memory probe, and the projected / bf16 influence stages run end to end on device cpu."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from tikmix.core.gradient_pass import GradientPassSettings
from tikmix.influence import open_store, stages
from tikmix.influence.store import IncompatibleStoresError
from tikmix.models.checkpoint import save_checkpoint
from tikmix.models.llama import ModelConfig, TinyLlama
from tikmix.resources import ResourceMonitor, current_rss_mb, peak_rss_mb

VOCAB, SEQ = 64, 16
PROJECTION = {"rank_out": 8, "rank_in": 4, "seed": 3}


def test_monitor_sees_a_large_allocation_and_resets_between_jobs():
    first = ResourceMonitor("cpu")
    before = first.usage()
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    during = first.usage()
    assert during["peak_gpu_mb"] is None
    assert during["peak_rss_mb"] >= before["peak_rss_mb"] + 60
    assert during["seconds"] >= before["seconds"] >= 0
    del block
    second = ResourceMonitor("cpu")
    if second.rss_reset:  # Linux: the next job's peak is its own, not the process's
        assert second.usage()["peak_rss_mb"] < during["peak_rss_mb"] - 30
        assert second.usage()["peak_rss_mb"] <= current_rss_mb() + 1
    assert peak_rss_mb() > 0


FREED_BLOCKS = """
import sys
import numpy as np
from tikmix.resources import current_rss_mb, return_freed_blocks_to_system
if sys.argv[1] == "set" and not return_freed_blocks_to_system():
    sys.exit(3)
np.ones(30 * 2**20 // 8)  # a 30 MiB mapping freed: glibc's default threshold rises to 30 MiB
blocks = [np.ones(2**20) for _ in range(64)]  # 64 blocks of 8 MiB, touched
last = blocks[-1]  # kept: it would sit on top of the heap
before = current_rss_mb()
del blocks
print(before - current_rss_mb())
"""


def test_a_job_returns_freed_blocks_of_a_mebibyte_or_more_to_the_system():
    # Blocks of 1-32 MiB (a slice's activations, per-module products) from the heap stay
    # resident after free: a pass's peak would be what malloc kept (docs/scaling.md).
    def freed_mb(mode: str) -> float:
        run = subprocess.run([sys.executable, "-c", FREED_BLOCKS, mode], capture_output=True)
        if run.returncode == 3:
            pytest.skip("the C library has no mallopt (not glibc)")
        assert run.returncode == 0, run.stderr.decode()
        return float(run.stdout)

    freed = freed_mb("set")
    assert freed >= 63 * 8 * 0.9, (freed, freed_mb("default"))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A built-in checkpoint, three domains' token streams and two tasks."""
    root = tmp_path_factory.mktemp("scale")
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=2, max_seq_len=SEQ)
    checkpoint = save_checkpoint(
        root / "ckpt",
        TinyLlama(config),
        config,
        step=1,
        tokens_seen=0,
        mixture={},
        tokenizer="none",
        seed=0,
    )
    rng = np.random.default_rng(0)
    domains = {}
    for d in range(3):
        probs = rng.dirichlet(np.full(VOCAB, 0.3 + d))
        directory = root / "domains" / f"d{d}"
        directory.mkdir(parents=True)
        np.save(directory / "train.npy", rng.choice(VOCAB, 4000, p=probs).astype(np.uint16))
        domains[f"d{d}"] = directory
    tasks = {}
    for t in range(2):
        ids = rng.integers(0, VOCAB, (6, SEQ + 1)).astype(np.int32)
        mask = np.ones_like(ids, dtype=np.uint8)
        mask[:, : SEQ // 2] = 0
        tasks[f"t{t}"] = root / f"t{t}.npz"
        np.savez(tasks[f"t{t}"], input_ids=ids, loss_mask=mask)
    return root, checkpoint, domains, tasks


def run_pipeline(workspace, projection, precision, tag):
    root, checkpoint, domains, tasks = workspace
    out = root / tag
    gradient_pass = GradientPassSettings(
        tracked_modules=r"(^|\.)layers\.\d+\.(self_attn|mlp)\.\w+_proj$",
        projection=projection,
        precision=precision,
        batch_size=4,
        seq_len=SEQ,
        seed=0,
        device="cpu",
    )
    ekfac = {
        "checkpoint": checkpoint,
        "gradient_pass": gradient_pass,
        "domain_dirs": domains,
        "weights": dict.fromkeys(domains, 1 / 3),
        "tokens": 256,
        "shards": 1,
        "shard": 0,
        "fisher": "sampled",
    }
    stages.ekfac_covariances(**ekfac, out=out / "cov.zarr")
    stages.ekfac_eigen([out / "cov.zarr"], out / "eigen.zarr")
    stages.ekfac_lambda(**ekfac, eigen=out / "eigen.zarr", out=out / "lambda.zarr")
    stages.ekfac_factors(out / "eigen.zarr", [out / "lambda.zarr"], out / "factors.zarr")
    domain_stores = {}
    for domain, directory in domains.items():
        part = stages.domain_gradients(
            checkpoint=checkpoint,
            gradient_pass=gradient_pass,
            domain=domain,
            domain_dir=directory,
            tokens=128,
            shards=1,
            shard=0,
            out=out / f"{domain}-part.zarr",
        )
        domain_stores[domain] = stages.reduce_domain_gradients([part], out / f"{domain}.zarr")
    task_stores = {
        task: stages.task_gradients(
            checkpoint=checkpoint,
            gradient_pass=gradient_pass.for_tasks(4),
            task=task,
            task_file=path,
            out=out / f"{task}.zarr",
        )
        for task, path in tasks.items()
    }
    stages.precondition_task_gradients(
        factors=out / "factors.zarr",
        task_stores=task_stores,
        damping=None,
        damping_factor=0.1,
        out=out / "pre.zarr",
    )
    matrix = stages.influence_matrix(
        preconditioned=out / "pre.zarr",
        domain_stores=domain_stores,
        matrix_csv=out / "influence.csv",
        sidecar_json=out / "influence.json",
        per_module_parquet=out / "per_module.parquet",
    )
    return out, matrix, domain_stores, task_stores


def test_projected_bf16_pipeline_records_projection_precision_and_resources(workspace):
    out, matrix, domain_stores, _ = run_pipeline(workspace, PROJECTION, "bf16", "projected")
    assert matrix.shape == (2, 3) and np.isfinite(matrix.to_numpy()).all()
    part = open_store(out / "d0-part.zarr")
    assert part.attrs["projection"] == PROJECTION and part.attrs["precision"] == "bf16"
    # every tracked projection of d_model=32 / d_ff=96 stores an [8, 4] gradient
    assert {tuple(shape) for shape in part.attrs["arrays"].values()} == {(8, 4)}
    for name in ("d0-part", "t0", "cov", "eigen", "lambda"):
        resources = open_store(out / f"{name}.zarr").attrs["resources"]
        assert set(resources) == {"peak_rss_mb", "peak_gpu_mb", "seconds"}
        assert resources["peak_rss_mb"] > 0 and resources["seconds"] >= 0
        assert resources["peak_gpu_mb"] is None  # device cpu
    for name in ("d0", "eigen", "factors", "pre"):
        assert open_store(out / f"{name}.zarr").attrs["projection"] == PROJECTION
    per_module = pd.read_parquet(out / "per_module.parquet")
    assert per_module["benefit"].abs().sum() > 0


def test_unprojected_stores_cannot_meet_projected_curvature(workspace):
    projected_out, *_ = run_pipeline(workspace, PROJECTION, "fp32", "projected_fp32")
    _, _, plain_domains, plain_tasks = run_pipeline(workspace, None, "fp32", "plain")
    assert open_store(plain_domains["d0"]).attrs["projection"] is None
    with pytest.raises(IncompatibleStoresError, match="task gradient 't0'.*projection None"):
        stages.precondition_task_gradients(
            factors=projected_out / "factors.zarr",
            task_stores=plain_tasks,
            damping=None,
            damping_factor=0.1,
            out=projected_out / "bad.zarr",
        )
    with pytest.raises(IncompatibleStoresError, match="domain gradient 'd0'"):
        stages.influence_matrix(
            preconditioned=projected_out / "pre.zarr",
            domain_stores=plain_domains,
            matrix_csv=projected_out / "bad.csv",
            sidecar_json=projected_out / "bad.json",
            per_module_parquet=projected_out / "bad.parquet",
        )


def test_streamed_preconditioning_and_matrix_equal_the_whole_model_computation(workspace):
    """The stages stream one module at a time; the results are those of the whole-model
    library calls on the same stores, bit for bit (same operations, same summation order)."""
    from tikmix.influence.api import influence_matrix, precondition
    from tikmix.influence.store import (
        load_factors,
        load_gradients,
        load_mean_gradients,
        load_preconditioned,
    )

    out, matrix, domain_stores, task_stores = run_pipeline(workspace, None, "fp32", "streamed")
    ekfac = load_factors(out / "factors.zarr").with_damping(None, 0.1)
    whole = precondition(ekfac, {t: load_gradients(p) for t, p in task_stores.items()})
    streamed = load_preconditioned(out / "pre.zarr")
    assert open_store(out / "pre.zarr").attrs["damping"] == ekfac.damping
    for task, grads in whole.items():
        for module, grad in grads.items():
            assert torch.equal(streamed[task][module], grad), (task, module)
    means = {d: load_mean_gradients(p)[0] for d, p in domain_stores.items()}
    expected, per_module = influence_matrix(streamed, means)
    pd.testing.assert_frame_equal(matrix, expected, check_exact=True)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "per_module.parquet"), per_module)
