"""config/examples/user.yaml through the `snakemake` CLI: a user's study is exactly the user's.

The example is run as shipped, with only its file paths pointed at generated data (a synthetic
corpus under the example's own domain and task names), a tokenizer trained on it and tiny
random-init Hugging Face Llama checkpoints saved with ``save_pretrained``, and its budgets shrunk.
The working directory is a snapshot of the repository, so the demo's ``config/config.yaml`` sits
where the Snakefile would read it: a study that inherited the demo's domains, tasks, checkpoints
or ``fetch_demo_data`` would show here.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from workflow_helpers import REPO, Workflow, describe, snapshot_code

from tikmix.data.synthetic import make_synthetic_corpus
from tikmix.data.tokenizer import eos_id, train_tokenizer, vocab_size

pytestmark = pytest.mark.workflow

EXAMPLE = REPO / "config" / "examples" / "user.yaml"
# Budgets small enough for a few CPU seconds per job; every other key stays as the example has it.
TINY_BUDGETS = {
    "device": "cpu",
    "data": {"seq_len": 32, "heldout_fraction": 0.1},
    "influence": {
        "domain_tokens": 4096,
        "shards_per_domain": 1,
        "batch_size": 16,
        "precision": "fp32",
        "ekfac": {"tokens": 8192, "shards": 1},
    },
    "mixing": {
        "stage_tokens": 100000,
        "tikmix_m": {"candidates": 20, "search": {"iters": 3, "samples": 128, "top_k": 8}},
        "measurement": {"tokens": 512, "shards": 1},
    },
    "checks": {"additivity": {"mixtures": 4, "tokens": 512}},
}
# What the demo would add if its config leaked into the study.
DEMO_RULES = {"fetch_demo_data", "train_stage1", "train_tokenizer"}


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _save_tiny_llama(directory, n_vocab: int, eos: int, seed: int) -> None:
    import torch
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=n_vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        eos_token_id=eos,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    transformers.LlamaForCausalLM(config).save_pretrained(directory)


@pytest.fixture(scope="module")
def user_study(tmp_path_factory) -> Workflow:
    """The example config, its paths pointed at generated data, in a snapshot of the repository."""
    pytest.importorskip("transformers")
    example = yaml.safe_load(EXAMPLE.read_text())
    root = tmp_path_factory.mktemp("user_study")
    flow = Workflow(snapshot_code(root / "repo"), root / "repo")
    domains, tasks = list(example["domains"]), list(example["tasks"])
    corpus = make_synthetic_corpus(
        root / "data", n_domains=len(domains), docs_per_domain=60, task_items=16, seed=0
    )
    config = _merge(example, TINY_BUDGETS)
    for name, source in zip(domains, corpus.domain_files.values(), strict=True):
        config["domains"][name]["paths"] = [str(source)]
    synthetic_tasks = sorted(corpus.task_files)[: len(tasks)]
    for name, source in zip(tasks, synthetic_tasks, strict=True):
        config["tasks"][name]["path"] = str(corpus.task_files[source])
    texts = (json.loads(line)["text"] for p in corpus.domain_files.values() for line in open(p))
    tokenizer = train_tokenizer(texts, 512, root / "model" / "tokenizer.json")
    config["tokenizer"]["path"] = str(root / "model")  # a tokenizer directory, as HF saves it
    for seed, name in enumerate(example["checkpoints"]):
        directory = root / "model" / name
        _save_tiny_llama(directory, vocab_size(tokenizer), eos_id(tokenizer), seed)
        config["checkpoints"][name] = str(directory)
    flow.write_config(config)
    return flow


def _assert_only_the_users_names(jobs, config) -> None:
    domains, tasks = set(config["domains"]), set(config["tasks"])
    checkpoints = set(config["checkpoints"])
    for key, allowed in (("domain", domains), ("task", tasks), ("ckpt", checkpoints)):
        seen = {job.wildcards[key] for job in jobs if key in job.wildcards}
        assert seen == allowed, f"{key}: planned {seen}, the study names {allowed}"
    assert not DEMO_RULES & {job.rule for job in jobs}, describe(jobs)
    assert not any("resources/demo" in path for job in jobs for path in job.inputs)


def test_dry_run_of_a_user_config_plans_only_its_domains_tasks_and_checkpoints(user_study):
    config = user_study.config()
    assert (user_study.workdir / "config" / "config.yaml").is_file()  # the demo is right there
    jobs = user_study.plan()
    _assert_only_the_users_names(jobs, config)
    rules = {job.rule for job in jobs}
    assert {"evaluate_stage2", "report", "mixture_tikmix_m", "additivity"} <= rules


def test_a_user_prior_with_stage1_tokens_is_the_availability_caps_exposure(user_study):
    """With ``prior`` and ``stage1_tokens`` the caps count stage-1 exposure; the prior file is
    an input of every checkpoint's availability job (editing it reruns the caps)."""
    config = user_study.config()
    domains = sorted(config["domains"])
    prior = user_study.workdir / "trained_on.yaml"
    prior.write_text(yaml.safe_dump({d: 1 / len(domains) for d in domains}))
    original = dict(config)
    config["prior"], config["stage1_tokens"] = str(prior), 50_000
    user_study.write_config(config)
    try:
        jobs = [job for job in user_study.plan() if job.rule == "availability"]
    finally:
        user_study.write_config(original)  # the fixture is shared by the module's tests
    assert {job.wildcards["ckpt"] for job in jobs} == set(config["checkpoints"])
    assert all(str(prior) in job.inputs for job in jobs), describe(jobs)


def test_the_continue_row_of_a_user_study_is_its_prior_or_natural(user_study, tmp_path):
    """Without `prior`, `continue` is natural and reuses natural's runs; with it, `continue`
    trains on that file's mixture."""
    jobs = user_study.plan()
    last = list(user_study.config()["checkpoints"])[-1]
    (mixture,) = [j for j in jobs if j.rule == "mixture_continue" and j.wildcards["ckpt"] == last]
    assert f"results/mixtures/{last}/natural.json" in mixture.inputs
    assert [j.rule for j in jobs if j.rule == "evaluate_continue_as_natural"] == [
        "evaluate_continue_as_natural"
    ]
    config = user_study.config()
    domains = sorted(config["domains"])
    prior = tmp_path / "trained_on.yaml"
    ranks = {d: k + 1 for k, d in enumerate(domains)}
    prior.write_text(yaml.safe_dump({d: r / sum(ranks.values()) for d, r in ranks.items()}))
    original = dict(config)
    config["prior"] = str(prior)
    user_study.write_config(config)
    try:
        jobs = user_study.plan()
    finally:
        user_study.write_config(original)  # the fixture is shared by the module's tests
    (mixture,) = [j for j in jobs if j.rule == "mixture_continue" and j.wildcards["ckpt"] == last]
    assert str(prior) in mixture.inputs
    assert not [j for j in jobs if j.rule == "evaluate_continue_as_natural"]
    assert [j.wildcards["method"] for j in jobs if j.rule == "evaluate_stage2"].count(
        "continue"
    ) == 1, describe(jobs)


def test_mixtures_only_study_runs_to_mixtures_and_report_with_exactly_the_users_names(
    user_study,
):
    """stage2.methods: [] stops at the mixtures, the checks asked for and the report.

    Only the example's last checkpoint is kept, to keep the run short (every job of the study is
    per checkpoint); its domains and tasks are all kept.
    """
    config = user_study.config()
    last = list(config["checkpoints"])[-1]
    config["checkpoints"] = {last: config["checkpoints"][last]}
    config["stage2"]["methods"] = []
    config["checks"]["ranking"]["enabled"] = False
    user_study.write_config(config)
    jobs = user_study.plan()
    _assert_only_the_users_names(jobs, config)
    rules = {job.rule for job in jobs}
    assert not rules & {"evaluate_stage2", "mixture_regmix", "mixture_doremi", "ranking"}, rules
    assert "additivity" in rules
    user_study.snakemake()

    results = user_study.workdir / "results"
    domains, tasks = sorted(config["domains"]), sorted(config["tasks"])
    assert sorted(p.name for p in (results / "data/domains").iterdir()) == domains
    assert sorted(p.name for p in (results / "data/tasks").iterdir()) == tasks
    assert sorted(p.name for p in (results / "influence").iterdir()) == sorted(
        config["checkpoints"]
    )
    for ckpt in config["checkpoints"]:
        matrix = pd.read_csv(results / "influence" / ckpt / "influence.csv", index_col=0)
        assert sorted(matrix.index) == tasks and sorted(matrix.columns) == domains
    mixture_dir = results / "mixtures" / list(config["checkpoints"])[-1]
    for method in ("natural", "uniform", "tikmix_d", "tikmix_m"):
        document = json.loads((mixture_dir / f"{method}.json").read_text())
        assert sorted(document["weights"]) == domains, method
        exported = pd.read_csv(mixture_dir / "exports" / f"{method}.csv")
        assert sorted(exported["domain"]) == domains, method
    additivity = pd.read_csv(
        results / "checks" / list(config["checkpoints"])[-1] / "additivity_summary.csv"
    )
    assert sorted(additivity["task"]) == tasks
    assert not (results / "evaluation").exists() and not (results / "checks/ranking.csv").exists()
    report = (results / "report/report.md").read_text()
    setup = report.split("## Setup", 1)[1].split("\n## ", 1)[0]
    assert f"domains ({len(domains)}) | {', '.join(domains)}" in setup
    assert f"validation tasks ({len(tasks)}) | {', '.join(tasks)}" in setup
    not_run = report.split("## Not run", 1)[1]
    assert "`stage2.methods: []`" in not_run and "`checks.ranking.enabled: false`" in not_run
    assert "`checks.additivity.enabled: false`" not in not_run
