"""The recommendation through the `snakemake` CLI (dry runs): which candidates train a pilot,
on which half of the tasks, and the config errors that stop a study before any job."""

from __future__ import annotations

import pytest
import yaml
from conftest import run_snakemake, tiny_config
from workflow_helpers import Workflow, describe

pytestmark = pytest.mark.workflow


def _plan(tmp_path, config):
    flow = Workflow(tmp_path / "work")
    flow.write_config(config)
    return flow.plan()


def test_pilots_train_each_distinct_candidate_on_the_steering_half(tmp_path, synthetic_corpus):
    """Stage 1 trained on natural, so natural is `continue`'s mixture and trains no pilot; the
    other candidates each run the pilot seeds, read only steering halves, and feed the
    recommendation, the compute table and the report."""
    jobs = _plan(tmp_path, tiny_config(synthetic_corpus))
    pilots = {job.wildcards["method"]: job for job in jobs if job.rule == "pilot_stage2"}
    assert sorted(pilots) == ["continue", "tikmix_c", "tikmix_d", "tikmix_m"], describe(jobs)
    for method, job in pilots.items():
        assert f"results/mixtures/stage1-100/{method}.json" in job.inputs
        assert sorted(job.outputs) == [
            f"results/recommendation/pilots/{method}/seed{s}.json" for s in (100, 101)
        ]
        tasks = [path for path in job.inputs if path.startswith("results/data/tasks/")]
        assert tasks and all(path.endswith("/steering.npz") for path in tasks)
    (decision,) = [job for job in jobs if job.rule == "recommendation"]
    assert "results/mixtures/stage1-100/natural.json" in decision.inputs
    assert not any("/pilots/natural/" in path for path in decision.inputs)
    (compute,) = [job for job in jobs if job.rule == "compute_table"]
    assert "results/recommendation/pilots/tikmix_m/seed101.json" in compute.inputs
    (report,) = [job for job in jobs if job.rule == "report"]
    assert "results/recommendation/recommendation.json" in report.inputs


def test_a_skewed_stage1_prior_pilots_natural_too(tmp_path, synthetic_corpus):
    domains = sorted(synthetic_corpus.domain_files)
    weights = tmp_path / "stage1_mixture.yaml"
    weights.write_text(yaml.safe_dump({d: 1 / len(domains) for d in domains}))
    jobs = _plan(tmp_path, tiny_config(synthetic_corpus, stage1={"prior": str(weights)}))
    pilots = sorted(job.wildcards["method"] for job in jobs if job.rule == "pilot_stage2")
    assert pilots == ["continue", "natural", "tikmix_c", "tikmix_d", "tikmix_m"]


def test_without_pilots_the_recommendation_reads_tikmix_m_alone(tmp_path, synthetic_corpus):
    jobs = _plan(tmp_path, tiny_config(synthetic_corpus, recommendation={"pilot": None}))
    # (tikmix_c's rollouts still train: they fit a method, they do not decide)
    assert not [job for job in jobs if job.rule == "pilot_stage2"]
    (decision,) = [job for job in jobs if job.rule == "recommendation"]
    assert "results/mixtures/stage1-100/tikmix_m.json" in decision.inputs
    assert not any("/pilots/" in path for path in decision.inputs)


@pytest.mark.parametrize(
    ("recommendation", "message"),
    [
        (
            {"pilot": {"token": 5}},
            "unknown config key 'recommendation.pilot.token'; did you mean "
            "'recommendation.pilot.tokens'?",
        ),
        (
            {"pilot": {"seeds": [0, 7]}},
            "config key 'recommendation.pilot.seeds': [0] are also stage2.seeds",
        ),
        (
            {"candidates": ["natural", "tikmix_d"]},
            "config key 'recommendation.candidates': must include 'continue'",
        ),
        (
            {"candidates": ["continue", "tikmix"]},
            "config key 'recommendation.candidates[1]': unknown method 'tikmix'",
        ),
        (
            {"pilot": {"seeds": [100, 2000]}},
            "config key 'mixing.tikmix_c.rollout_seed': 2000 is also a stage-2 or pilot seed",
        ),
        (
            {"candidates": ["continue", "tikmix_d"], "pilot": None},
            "config key 'recommendation.pilot': null (a proxy-only recommendation) needs tikmix_m",
        ),
    ],
)
def test_recommendation_settings_that_cannot_work_stop_the_study(
    tmp_path, synthetic_corpus, recommendation, message
):
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump(tiny_config(synthetic_corpus, recommendation=recommendation))
    )
    result = run_snakemake(tmp_path, "--dry-run", check=False)
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_tikmix_c_is_fitted_to_rollouts_from_the_stage2_checkpoint(tmp_path, synthetic_corpus):
    """tikmix_c's rollouts (n_levels × per_level mixtures and `continue`'s reference run) train
    from the stage-2 checkpoint with the rollout seed on the steering half; its mixture exists
    only there, and its cost counts the rollouts."""
    jobs = _plan(tmp_path, tiny_config(synthetic_corpus))
    rollouts = {job.wildcards["method"]: job for job in jobs if job.rule == "tikmix_c_rollout"}
    assert sorted(rollouts) == ["continue", *(f"r{k:02d}" for k in range(6))], describe(jobs)
    for method, job in rollouts.items():
        assert list(job.outputs) == [f"results/tikmix_c/runs/{method}/seed2000.json"]
        assert "results/checkpoints/stage1-100" in job.inputs
        tasks = [path for path in job.inputs if path.startswith("results/data/tasks/")]
        assert tasks and all(path.endswith("/steering.npz") for path in tasks)
    (fit,) = [job for job in jobs if job.rule == "mixture_tikmix_c"]
    assert list(fit.outputs) == ["results/mixtures/stage1-100/tikmix_c.json"]
    assert "results/tikmix_c/runs/continue/seed2000.json" in fit.inputs
    assert "results/influence/stage1-100/influence.csv" in fit.inputs
    (compute,) = [job for job in jobs if job.rule == "compute_table"]
    assert "results/tikmix_c/runs/r05/seed2000.json" in compute.inputs
