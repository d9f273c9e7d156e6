"""The `continue` row through the `snakemake` CLI (dry runs): which mixture it continues, and
whether its stage-2 runs are natural's (stage 1 trained on natural) or its own."""

from __future__ import annotations

import pytest
import yaml
from conftest import tiny_config
from workflow_helpers import Workflow, describe

pytestmark = pytest.mark.workflow


def _plan(tmp_path, config):
    flow = Workflow(tmp_path / "work")
    flow.write_config(config)
    return flow.plan()


def _continue_jobs(jobs):
    (mixture,) = [
        job
        for job in jobs
        if job.rule == "mixture_continue" and job.wildcards["ckpt"] == "stage1-100"
    ]
    own_runs = [
        job
        for job in jobs
        if job.rule == "evaluate_stage2" and job.wildcards["method"] == "continue"
    ]
    reused = [job for job in jobs if job.rule == "evaluate_continue_as_natural"]
    return mixture, own_runs, reused


def test_stage1_on_natural_continues_natural_with_natural_s_runs(tmp_path, synthetic_corpus):
    jobs = _plan(tmp_path, tiny_config(synthetic_corpus, stage2={"seeds": [0, 1]}))
    mixture, own_runs, reused = _continue_jobs(jobs)
    assert "results/mixtures/prior.json" in mixture.inputs
    assert not own_runs and len(reused) == 1, describe(jobs)
    assert sorted(reused[0].outputs) == [
        f"results/evaluation/continue/seed{s}.json" for s in (0, 1)
    ]
    assert {f"results/evaluation/natural/seed{s}.json" for s in (0, 1)} <= set(reused[0].inputs)


def test_a_stage1_prior_file_is_continued_and_trained_in_stage2(tmp_path, synthetic_corpus):
    domains = sorted(synthetic_corpus.domain_files)
    weights = tmp_path / "stage1_mixture.yaml"
    weights.write_text(yaml.safe_dump({d: 1 / len(domains) for d in domains}))
    config = tiny_config(synthetic_corpus, stage1={"prior": str(weights)})
    jobs = _plan(tmp_path, config)
    mixture, own_runs, reused = _continue_jobs(jobs)
    assert "results/mixtures/prior.json" in mixture.inputs
    assert len(own_runs) == 1 and not reused, describe(jobs)
    (prior,) = [job for job in jobs if job.rule == "prior_mixture"]
    assert str(weights) in prior.inputs
