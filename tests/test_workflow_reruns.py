"""Rerun only what changed: what `snakemake --dry-run` plans after one change to a completed run.

Every test changes one thing in a copy of the completed tiny workflow and compares the planned
jobs with what that change must rerun, computed from Snakemake's own plans rather than from a
hard-coded list of rules, so rules added to the workflow are covered as they come:

* the jobs the change touches directly (the *roots*) are exactly the expected ones;
* every other planned job consumes an output of a planned job (no spurious rerun);
* for a changed parameter or module, the plan equals `--forcerun` of the roots' rules, i.e. all
  that is downstream of them reruns and nothing else.

Each test prints the job lists it compares.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from workflow_helpers import (
    Job,
    Workflow,
    assert_plan_is_forcerun_of,
    describe,
    job_counts,
    not_downstream,
)

from tikmix.workflow import library_dependencies

pytestmark = pytest.mark.workflow

#: The rules that compute gradients and curvature: the expensive part no mixing change may rerun.
GRADIENT_RULES = {"domain_gradients", "reduce_domain_gradients", "task_gradients"}
CURVATURE_RULES = {"ekfac_covariances", "ekfac_eigen", "ekfac_lambda", "ekfac_factors"}


def _keys(jobs: list[Job]) -> set:
    return {job.key for job in jobs}


def _checkpoints(flow: Workflow) -> set[str]:
    return {path.name for path in (flow.workdir / "results/influence").iterdir()}


@pytest.fixture
def workflow_copy(completed_workflow, tmp_path) -> Workflow:
    return completed_workflow.copy(tmp_path / "work")


@pytest.fixture(scope="module")
def full_plan(completed_workflow) -> list[Job]:
    """Every job of the completed workflow (`--forceall`), to read rules' scripts and counts."""
    return completed_workflow.plan("--forceall")


def test_copy_of_completed_workflow_has_nothing_to_do(workflow_copy):
    """The baseline of every other test: a copy keeps modification times and metadata."""
    planned = workflow_copy.plan()
    print("copy of the completed workflow:\n" + describe(planned))
    assert planned == []


def test_tikmix_d_parameter_reruns_only_tikmix_d_and_what_follows(workflow_copy):
    forced = workflow_copy.plan("--forcerun", "mixture_tikmix_d")
    config = workflow_copy.config()
    # alpha weighs std(P_hat) in TiKMiX-D's objective; its default is 1.
    config.setdefault("mixing", {}).setdefault("tikmix_d", {})["alpha"] = 2.0
    workflow_copy.write_config(config)
    planned = workflow_copy.plan()
    print(f"after mixing.tikmix_d.alpha = 2:\n{describe(planned)}")
    print(f"--forcerun mixture_tikmix_d:\n{describe(forced)}")

    roots = [job for job in planned if job.rule == "mixture_tikmix_d"]
    assert {job.wildcards["ckpt"] for job in roots} == _checkpoints(workflow_copy)
    assert all(job.reason.startswith("Params have changed") for job in roots), describe(roots)
    assert not {job.rule for job in planned} & (GRADIENT_RULES | CURVATURE_RULES)
    assert "influence_matrix" not in job_counts(planned)
    assert_plan_is_forcerun_of(planned, forced, roots)


@pytest.mark.parametrize(
    ("keys", "value", "rules"),
    [
        # one settings object per group in the rules' params (tikmix.core.settings)
        (("baselines", "doremi", "eta"), 2.0, {"mixture_doremi"}),
        (("baselines", "regmix", "dirichlet", "temperature"), 0.7, {"mixture_regmix"}),
        # the pilots and tikmix_c's rollouts continue training as stage 2 does
        (
            ("stage2", "weight_decay"),
            0.05,
            {"evaluate_stage2", "pilot_stage2", "tikmix_c_rollout"},
        ),
        (("recommendation", "pilot", "tokens"), 2048, {"pilot_stage2", "tikmix_c_rollout"}),
        # (a box change reruns mixture_candidates, so Snakemake reports tikmix_m_search's
        # rerun as "input updated"; the gate is read by tikmix_m_search alone)
        (("mixing", "tikmix_m", "gate", "min_spearman"), 0.6, {"tikmix_m_search"}),
        (("checks", "additivity", "noise", "replicates"), 3, {"additivity"}),
    ],
    ids=lambda v: ".".join(v) if isinstance(v, tuple) else None,
)
def test_a_setting_of_a_settings_object_reruns_the_rules_that_read_it(
    workflow_copy, keys, value, rules
):
    config = workflow_copy.config()
    section = config
    for key in keys[:-1]:
        section = section.setdefault(key, {})
    section[keys[-1]] = value
    workflow_copy.write_config(config)
    planned = workflow_copy.plan()
    print(f"after {'.'.join(keys)} = {value}:\n{describe(planned)}")
    roots = [job for job in planned if job.reason.startswith("Params have changed")]
    assert {job.rule for job in roots} == rules, describe(roots)
    assert not {job.rule for job in planned} & (GRADIENT_RULES | CURVATURE_RULES)


def test_ekfac_damping_reruns_preconditioning_and_what_follows(workflow_copy):
    forced = workflow_copy.plan("--forcerun", "precondition_task_gradients")
    config = workflow_copy.config()
    config.setdefault("influence", {}).setdefault("ekfac", {})["damping"] = 1e-3
    workflow_copy.write_config(config)
    planned = workflow_copy.plan()
    print(f"after influence.ekfac.damping = 1e-3:\n{describe(planned)}")
    print(f"--forcerun precondition_task_gradients:\n{describe(forced)}")

    roots = [job for job in planned if job.rule == "precondition_task_gradients"]
    assert {job.wildcards["ckpt"] for job in roots} == _checkpoints(workflow_copy)
    assert all(job.reason.startswith("Params have changed") for job in roots), describe(roots)
    counts = job_counts(planned)
    assert counts.get("influence_matrix") == len(roots), counts
    assert not set(counts) & (GRADIENT_RULES | CURVATURE_RULES), counts
    assert_plan_is_forcerun_of(planned, forced, roots)


@pytest.mark.parametrize(
    "module, must_rerun, must_not_rerun",
    [
        (
            "tikmix/mixing/tikmix_d.py",
            {"mixture_tikmix_d"},
            GRADIENT_RULES | CURVATURE_RULES | {"tokenize_domain", "train_stage1"},
        ),
        (
            "tikmix/influence/ekfac.py",
            CURVATURE_RULES | {"precondition_task_gradients"},
            {"tokenize_domain", "train_stage1", "mixture_baseline"},
        ),
    ],
)
def test_library_edit_reruns_exactly_the_rules_whose_scripts_import_it(
    workflow_copy, full_plan, module, must_rerun, must_not_rerun
):
    """Rules whose script imports ``module`` (directly or through other tikmix modules), per
    `tikmix.workflow.library_dependencies`, rerun with everything downstream; no other rule does.

    The module is edited in the session's code snapshot (restored afterwards), which is what a
    developer's edit looks like to Snakemake.
    """
    code = workflow_copy.code
    scripts = {
        job.rule: script
        for job in full_plan
        for script in job.inputs
        if Path(script).parent == code / "scripts"
    }
    importing = {
        rule for rule, script in scripts.items() if module in library_dependencies(script, code)
    }
    assert must_rerun <= importing and not must_not_rerun & importing, sorted(importing)
    forced = workflow_copy.plan("--forcerun", *sorted(importing))

    path = code / module
    original, stat = path.read_bytes(), path.stat()
    try:
        path.write_bytes(original + b"\n# an edit\n")
        planned = workflow_copy.plan()
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    print(f"rules whose scripts import {module}: {sorted(importing)}")
    print(f"after editing {module}:\n{describe(planned)}")
    print(f"--forcerun {' '.join(sorted(importing))}:\n{describe(forced)}")

    roots = [job for job in planned if job.rule in importing]
    assert job_counts(roots) == job_counts(j for j in full_plan if j.rule in importing)
    # The plan starts from the edit: its first jobs (those consuming no planned output) are
    # roots that run because of the module. Snakemake names only one reason per job, so the
    # roots also downstream of another root give "Input files updated by another job".
    first = not_downstream(planned, roots=[])
    assert _keys(first) <= _keys(roots), describe(first)
    assert all(
        job.reason.startswith("Updated input files") and str(path) in job.reason for job in first
    ), describe(first)
    assert_plan_is_forcerun_of(planned, forced, roots)


@pytest.fixture(scope="module")
def frozen_stage1(completed_workflow, tmp_path_factory) -> Workflow:
    """The completed run with stage 1 frozen: its tokenizer and checkpoints given in the config.

    Brought-in checkpoints are the setting in which data mixing runs (the checkpoints exist
    already), and they take the tokenizer's training and stage 1 out of the DAG, which otherwise
    see every domain. The switch changes no file's content (the same tokenizer, the checkpoints
    where they are), so `--touch` records it without running anything. Copy before changing.
    """
    flow = completed_workflow.copy(tmp_path_factory.mktemp("frozen_stage1") / "work")
    frozen = flow.workdir / "frozen"
    frozen.mkdir()
    shutil.copy2(flow.workdir / "results/tokenizer/tokenizer.json", frozen / "tokenizer.json")
    config = flow.config()
    config["tokenizer"]["path"] = "frozen/tokenizer.json"
    names = sorted(_checkpoints(flow))
    config["checkpoints"] = {name: f"results/checkpoints/{name}" for name in names}
    flow.write_config(config)
    flow.snakemake("--touch")
    assert flow.plan() == [], "switching to the frozen stage 1 left jobs to do"
    return flow


def test_new_domain_computes_its_gradients_and_refits_what_reads_all_domains(
    frozen_stage1, full_plan, tmp_path
):
    """Adding a domain runs that domain's per-domain jobs (tokenization, gradients for every
    checkpoint and shard, their reduction) and only what consumes them.

    With the checkpoints and tokenizer fixed, no other domain's or task's jobs may run. The
    consumers include the influence matrix and the mixtures, and also the prior mixture, since
    the natural prior weighs every domain, and hence the EK-FAC fit, whose data is sampled from
    the prior mixture: a new domain changes the curvature estimate too, and with it the
    eigenbasis every domain's Λ_d (TiKMiX-M's curvature response) is computed in.
    """
    flow = frozen_stage1.copy(tmp_path / "work")
    config = flow.config()
    old_domains = sorted(config["domains"])
    source = flow.workdir / "frozen/new_domain.jsonl"
    shutil.copy2(config["domains"][old_domains[0]]["paths"][0], source)
    config["domains"]["new_domain"] = {"paths": [str(source)]}
    flow.write_config(config)
    planned = flow.plan()
    print(f"after adding domain new_domain:\n{describe(planned)}")

    roots = [job for job in planned if job.wildcards.get("domain") == "new_domain"]
    per_domain = [job for job in full_plan if job.wildcards.get("domain") == old_domains[0]]
    print(f"jobs of domain {old_domains[0]} in the completed run:\n{describe(per_domain)}")
    assert job_counts(roots) == job_counts(per_domain)
    old_domain_jobs = [job for job in planned if job.wildcards.get("domain") in old_domains]
    assert {job.rule for job in old_domain_jobs} <= {"ekfac_domain_lambda"}, describe(
        old_domain_jobs
    )
    assert all("eigen.zarr" in job.reason for job in old_domain_jobs), describe(old_domain_jobs)
    assert not [job for job in planned if "task" in job.wildcards]
    counts = job_counts(planned)
    assert counts.get("influence_matrix") == len(_checkpoints(flow)), counts
    spurious = not_downstream(planned, roots)
    assert not spurious, "jobs not downstream of the new domain:\n" + describe(spurious)


def test_new_checkpoint_computes_only_its_own_stages(frozen_stage1, full_plan, tmp_path):
    """Adding a checkpoint runs every per-checkpoint job for it, no other checkpoint's jobs, and
    only the aggregates that read it.

    It is inserted before the last checkpoint (the mapping is in training order), so the stage-2
    evaluation, which continues the last checkpoint, keeps its starting point.
    """
    flow = frozen_stage1.copy(tmp_path / "work")
    config = flow.config()
    names = list(config["checkpoints"])
    new = flow.workdir / "frozen/checkpoints/extra"
    shutil.copytree(flow.workdir / config["checkpoints"][names[0]], new)
    config["checkpoints"] = {
        **{name: config["checkpoints"][name] for name in names[:-1]},
        "extra": "frozen/checkpoints/extra",
        names[-1]: config["checkpoints"][names[-1]],
    }
    flow.write_config(config)
    planned = flow.plan()
    print(f"after adding checkpoint extra before {names[-1]}:\n{describe(planned)}")

    roots = [job for job in planned if job.wildcards.get("ckpt") == "extra"]
    per_checkpoint = [job for job in full_plan if job.wildcards.get("ckpt") == names[0]]
    print(f"jobs of checkpoint {names[0]} in the completed run:\n{describe(per_checkpoint)}")
    assert job_counts(roots) == job_counts(per_checkpoint)
    assert not [job for job in planned if job.wildcards.get("ckpt") in names]
    spurious = not_downstream(planned, roots)
    assert not spurious, "jobs not downstream of the new checkpoint:\n" + describe(spurious)
