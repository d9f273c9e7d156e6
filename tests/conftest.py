"""Shared fixtures: a tiny synthetic workflow config and a Snakemake CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from workflow_helpers import Workflow, job_counts, snapshot_code

from tikmix.data.synthetic import make_synthetic_corpus

REPO = Path(__file__).resolve().parents[1]


def tiny_config(corpus, **overrides) -> dict:
    """A workflow config for the synthetic corpus, sized to run in well under a minute."""
    config = {
        "seed": 0,
        "device": "cpu",
        "tokenizer": {"vocab_size": 512, "sample_chars": 200_000},
        "data": {"seq_len": 32, "heldout_fraction": 0.1},
        "domains": {name: {"paths": [str(path)]} for name, path in corpus.domain_files.items()},
        "tasks": {name: {"path": str(path)} for name, path in corpus.task_files.items()},
        "model": {"d_model": 32, "n_layers": 2, "n_heads": 2},
        "stage1": {
            "tokens": 120_000,
            "batch_size": 16,
            "lr": 0.01,
            "checkpoint_fractions": [0.5, 1.0],
        },
        "influence": {
            "domain_tokens": 8192,
            "shards_per_domain": 1,
            "ekfac": {"tokens": 16384, "shards": 1},
        },
        "mixing": {
            "tikmix_m": {
                "candidates": 24,
                "search": {"iters": 5, "samples": 256, "top_k": 16},
            },
            "measurement": {"tokens": 2048},
            "tikmix_c": {"per_level": 2},
            "exports": ["yaml", "csv"],
        },
        "checks": {"additivity": {"mixtures": 24, "tokens": 2048}},
        "stage2": {"tokens": 16384, "seeds": [0], "batch_size": 16, "random_mixtures": 1},
        "recommendation": {"pilot": {"tokens": 4096, "seeds": [100, 101]}},
        "baselines": {
            "regmix": {"n_proxies": 8, "tokens": 8192, "n_simulations": 2000, "top_k": 20},
            "doremi": {"proxy_tokens": 8192},
        },
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def run_snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the workflow through the `snakemake` CLI (more stable than its Python API)."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        "--cores",
        "2",
        *args,
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir)
    if check and result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
        )
    return result


def jobs_planned(workdir: Path, *args: str, code: Path = REPO) -> dict[str, int]:
    """Rule → number of jobs that `snakemake --dry-run *args` plans in ``workdir``.

    ``code`` is the checkout the workflow runs from: pass ``completed_workflow.code`` for copies
    of the completed workflow.
    """
    return job_counts(Workflow(workdir, code).plan(*args))


@pytest.fixture(scope="session")
def synthetic_corpus(tmp_path_factory):
    return make_synthetic_corpus(tmp_path_factory.mktemp("synthetic"), docs_per_domain=120, seed=0)


@pytest.fixture(scope="session")
def completed_workflow(tmp_path_factory, synthetic_corpus) -> Workflow:
    """The tiny workflow's `rule all`, run once per session from a snapshot of the code.

    Read it, or dry-run it, but do not change it: tests that change files or the config work on
    ``completed_workflow.copy(tmp_path / "work")``, which is up to date like the original. The
    snapshot (``.code``) makes the session immune to edits of the checkout while it runs.
    """
    root = tmp_path_factory.mktemp("completed_workflow")
    flow = Workflow(root / "work", snapshot_code(root / "code"))
    flow.write_config(tiny_config(synthetic_corpus))
    flow.snakemake()
    return flow


@pytest.fixture
def workflow_dir(tmp_path, synthetic_corpus):
    """A working directory holding config.yaml for the tiny synthetic workflow."""
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(tiny_config(synthetic_corpus)))
    return tmp_path


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny test models run faster on one thread than on two competing OpenMP threads."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
