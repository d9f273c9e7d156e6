"""End to end on a real (single-node) SLURM cluster through `snakemake --profile slurm`.

One module-scoped run gives every test its evidence: the workflow run locally, then through the
repository's `slurm` profile (bare name, resolved via ~/.config/snakemake/slurm), then once more
through the profile. The tests check that SLURM reproduces the local outputs byte for byte, that the
second run submits nothing, that the rules the profile marks `gpu: 1` really got a GPU from SLURM
(accounting records: gres/gpu in AllocTRES) and that the others did not.

The workflow is the `workflow_case` fixture: a throwaway Snakefile whose rule names are the real
DAG's, so the profile's `set-resources` apply to it. To test the real workflow instead, make that
fixture return a `WorkflowCase` with the repository's Snakefile and a tiny config.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import slurm_cluster
import yaml
from conftest import tiny_config
from slurm_cluster import (
    PROFILE_DIR,
    REPO,
    link_profile,
    sacct_jobs,
    slurm_cluster_fixture,  # noqa: F401  (the session fixture "slurm_cluster")
)

#: Printed by the SLURM executor plugin for every submission (the log path names the rule).
SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_(\w+)/")


@dataclass(frozen=True)
class WorkflowCase:
    """A workflow to run both locally and on SLURM.

    prepare(workdir) writes what the run needs into an empty working directory; `args` are the
    Snakemake arguments common to both runs (snakefile, config, targets); `outputs` is the folder,
    relative to the working directory, whose files must be identical after both runs, except those
    matching a glob in `ignore` (e.g. files that record wall times or host names).
    """

    prepare: Callable[[Path], None]
    args: tuple[str, ...]
    outputs: str = "results"
    ignore: tuple[str, ...] = ()


@pytest.fixture(scope="module")
def workflow_case(synthetic_corpus) -> WorkflowCase:
    """The real workflow on the tiny synthetic config, up to one domain-gradient store.

    That target runs CPU rules (tokenizer, tokenization, prior) and GPU rules of the profile
    (train_stage1, domain_gradients), about ten jobs: the whole DAG would take several minutes
    of SLURM's per-job overhead without testing anything more about the executor.
    """

    def prepare(workdir: Path) -> None:
        (workdir / "config.yaml").write_text(yaml.safe_dump(tiny_config(synthetic_corpus)))

    return WorkflowCase(
        prepare=prepare,
        # The target comes first: --configfile takes several values and would swallow it.
        args=(
            "results/influence/stage1-100/grads/domain0/part-0.zarr",
            "--snakefile",
            str(REPO / "Snakefile"),
            "--configfile",
            "config.yaml",
        ),
        ignore=("*.snakemake_timestamp",),
    )


def run_snakemake(
    workdir: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run `<this python> -m snakemake ARGS` in `workdir`; AssertionError with its output on failure.

    The environment is this process's without SNAKEMAKE_PROFILE (so only explicit --profile flags
    apply) and CUDA_VISIBLE_DEVICES (so a job sees only the GPUs SLURM gives it), updated with `env`.
    """
    dropped = ("SNAKEMAKE_PROFILE", "CUDA_VISIBLE_DEVICES")
    run_env = {k: v for k, v in os.environ.items() if k not in dropped}
    run_env.update(env or {})
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({result.returncode}) in {workdir}:\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
        )
    return result


# Metadata that records how a job ran (wall time, peak memory, throughput), not what it computed.
VOLATILE_KEYS = {"resources", "wall_seconds", "tokens_per_second", "seconds"}


def _without_volatile(value):
    if isinstance(value, dict):
        return {k: _without_volatile(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [_without_volatile(v) for v in value]
    return value


def checksums(folder: Path, ignore: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under `folder` by relative path, except paths matching a glob in `ignore`.

    JSON files (zarr metadata, metrics) are hashed without their run-dependent keys.
    """
    files = (p for p in sorted(folder.rglob("*")) if p.is_file())
    digests = {}
    for p in files:
        name = str(p.relative_to(folder))
        if any(fnmatch.fnmatch(name, g) for g in ignore):
            continue
        data = p.read_bytes()
        if p.suffix == ".json":
            data = json.dumps(_without_volatile(json.loads(data)), sort_keys=True).encode()
        digests[name] = hashlib.sha256(data).hexdigest()
    return digests


def profile_gpu_rules() -> set[str]:
    """Rules that profiles/slurm/config.yaml gives `gpu` resources."""
    profile = yaml.safe_load((PROFILE_DIR / "config.yaml").read_text())
    return {rule for rule, res in profile["set-resources"].items() if res.get("gpu")}


@dataclass
class Runs:
    case: WorkflowCase
    local_dir: Path
    slurm_dir: Path
    second_run: str  # stdout + stderr of the second run through the profile
    jobs: dict[str, list[str]]  # SLURM job ids by rule, first run through the profile
    jobs_second_run: int


@pytest.fixture(scope="module")
def runs(slurm_cluster, workflow_case, completed_workflow, tmp_path_factory) -> Runs:
    """SLURM runs of the target; the local reference is the suite's completed tiny workflow
    (same config), which saves a second local run."""
    link_profile()
    local_dir = completed_workflow.workdir
    slurm_dir = tmp_path_factory.mktemp("slurm")
    workflow_case.prepare(slurm_dir)

    env = {
        "TIKMIX_SLURM_PARTITION": slurm_cluster.partition,
        "TIKMIX_SLURM_ACCOUNT": slurm_cluster.account,
    }
    # The first status check waits 2 s instead of the plugin's 40 s (tiny jobs).
    slurm_args = (
        *workflow_case.args,
        "--profile",
        "slurm",
        "--slurm-init-seconds-before-status-checks",
        "2",
    )
    first = run_snakemake(slurm_dir, *slurm_args, env=env)
    second = run_snakemake(slurm_dir, *slurm_args, env=env)

    jobs: dict[str, list[str]] = {}
    for job_id, rule in SUBMITTED.findall(first.stdout + first.stderr):
        jobs.setdefault(rule, []).append(job_id)
    second_log = second.stdout + second.stderr
    return Runs(
        workflow_case, local_dir, slurm_dir, second_log, jobs, len(SUBMITTED.findall(second_log))
    )


def test_profile_names_only_rules_of_the_workflow():
    """Snakemake ignores set-resources for unknown rules silently: a typo would lose a GPU request."""
    if not (REPO / "Snakefile").exists():
        pytest.skip(f"no {REPO / 'Snakefile'} yet")
    listed = run_snakemake(REPO, "--snakefile", "Snakefile", "--list-rules").stdout.split()
    profile = yaml.safe_load((PROFILE_DIR / "config.yaml").read_text())
    unknown = sorted(set(profile["set-resources"]) - set(listed))
    assert not unknown, f"{PROFILE_DIR / 'config.yaml'} sets resources for unknown rules {unknown}"


@pytest.mark.slurm
def test_slurm_outputs_equal_local_outputs(runs):
    on_slurm = checksums(runs.slurm_dir / runs.case.outputs, runs.case.ignore)
    local = checksums(runs.local_dir / runs.case.outputs, runs.case.ignore)
    assert on_slurm, "the SLURM run produced no outputs"
    assert on_slurm == {name: local.get(name) for name in on_slurm}


@pytest.mark.slurm
def test_every_rule_ran_as_a_completed_slurm_job(runs):
    job_ids = [j for ids in runs.jobs.values() for j in ids]
    assert job_ids, "no SLURM submissions found in the Snakemake output"
    records = sacct_jobs(job_ids)
    assert {j: r["State"] for j, r in records.items()} == {j: "COMPLETED" for j in job_ids}


@pytest.mark.slurm
def test_second_run_submits_nothing(runs):
    assert "Nothing to be done" in runs.second_run
    assert runs.jobs_second_run == 0


@pytest.mark.slurm
def test_gpu_rules_get_a_gpu_and_others_do_not(runs):
    gpu_rules = profile_gpu_rules() & runs.jobs.keys()
    cpu_rules = runs.jobs.keys() - gpu_rules
    assert gpu_rules and cpu_rules, f"need both kinds of jobs, ran {sorted(runs.jobs)}"
    records = sacct_jobs([j for ids in runs.jobs.values() for j in ids])
    for rule, ids in runs.jobs.items():
        for job_id in ids:
            tres = records[job_id]["AllocTRES"]
            if rule in gpu_rules:
                assert "gres/gpu=1" in tres.split(","), f"{rule} job {job_id}: {tres}"
            else:
                assert "gres/gpu" not in tres, f"{rule} job {job_id}: {tres}"


@pytest.mark.slurm
def test_gpu_job_sees_the_gpu_slurm_gave_it(runs):
    """Every job logs its SLURM job id and CUDA_VISIBLE_DEVICES (tikmix.workflow.script_logging)."""
    pattern = re.compile(r"job environment: SLURM_JOB_ID=(\S+) CUDA_VISIBLE_DEVICES=(\S+)")
    logs = sorted((runs.slurm_dir / "logs").rglob("*.log"))
    assert len(logs) == sum(len(ids) for ids in runs.jobs.values())
    for log in logs:
        rule = log.relative_to(runs.slurm_dir / "logs").parts[0]
        job_id, devices = pattern.search(log.read_text()).groups()
        assert job_id in runs.jobs[rule], f"{log}: job {job_id}"
        if rule in profile_gpu_rules():
            assert devices in ("0", "1"), f"{log}: CUDA_VISIBLE_DEVICES={devices}"
        else:
            assert devices == "-", f"{log}: CUDA_VISIBLE_DEVICES={devices}"


def test_unavailable_slurm_skips_outside_ci_and_fails_in_ci(monkeypatch, tmp_path):
    monkeypatch.setattr(slurm_cluster, "sinfo_answers", lambda: False)
    monkeypatch.setattr(slurm_cluster.os, "geteuid", lambda: 1000)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="needs root"):
        slurm_cluster.bring_up(tmp_path)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required in CI"):
        slurm_cluster.bring_up(tmp_path)


def test_up_script_reports_cannot_install_when_not_root(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to run up.sh as another user")
    result = subprocess.run(
        [
            "runuser",
            "-u",
            "nobody",
            "--",
            "bash",
            str(slurm_cluster.UP_SCRIPT),
            str(tmp_path / "s"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == slurm_cluster.CANNOT_INSTALL, result.stderr
    assert "must run as root" in result.stderr


def _detached_sleep() -> int:
    """PID of a `sleep 300` that is not this process's child (like a daemon)."""
    out = subprocess.run(
        ["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout)


def test_down_script_stops_by_pid_not_by_name(tmp_path):
    """down.sh stops the process its PID file names, leaves a same-named process alone, and leaves
    alone a process whose PID a stale PID file names under another daemon's name."""
    recorded, bystander = _detached_sleep(), _detached_sleep()
    try:
        pid_file, stale_file = tmp_path / "sleep.pid", tmp_path / "slurmd.pid"
        pid_file.write_text(f"{recorded}\n")
        stale_file.write_text(f"{bystander}\n")
        (tmp_path / "pidfiles").write_text(f"{stale_file}\n{pid_file}\n")
        result = subprocess.run(
            ["bash", str(slurm_cluster.DOWN_SCRIPT), str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"stopped {pid_file} pid {recorded}" in result.stdout
        assert f"stale {stale_file}: pid {bystander} is now 'sleep'" in result.stdout
        assert not slurm_cluster.pid_alive(recorded)
        assert slurm_cluster.pid_alive(bystander)
    finally:
        for pid in (recorded, bystander):
            if slurm_cluster.pid_alive(pid):
                os.kill(pid, 9)
