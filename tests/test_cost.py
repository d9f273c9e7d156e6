"""The cost model (tikmix.cost) against what the library allocates, and `tikmix plan` on 7B."""

from __future__ import annotations

import json

import pytest
import torch

from tikmix import cost
from tikmix.cli import main
from tikmix.influence.ekfac import covariance_sums
from tikmix.influence.gradients import summed_gradients
from tikmix.influence.tracking import DEFAULT_MODULE_PATTERN, select_modules
from tikmix.models.llama import ModelConfig, TinyLlama, model_flops_per_token

# Llama-2-7B's config.json (shape only; no weights exist anywhere).
LLAMA2_7B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "num_hidden_layers": 32,
    "vocab_size": 32000,
    "torch_dtype": "float16",
    "tie_word_embeddings": False,
}


def _settings(**changes) -> cost.Settings:
    base = dict(
        seq_len=16,
        batch_size=4,
        task_batch_size=4,
        precision="fp32",
        projection=None,
        tracked_modules=DEFAULT_MODULE_PATTERN,
        domains=3,
        tasks=2,
        domain_tokens=4096,
        shards_per_domain=1,
        ekfac_tokens=8192,
        ekfac_shards=2,
        fisher_sampled=True,
        domain_lambda_tokens=1024,
        stage1_tokens=None,
        stage1_batch_size=8,
        device="cpu",
    )
    return cost.Settings(**{**base, **changes})


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2, d_ff=48, max_seq_len=16)
    return config, TinyLlama(config).double()


def test_shape_counts_match_the_built_in_model(tiny):
    config, model = tiny
    shape = cost.ModelShape.from_config(config.to_dict())
    assert shape.parameters() == sum(p.numel() for p in model.parameters())
    assert shape.training_flops_per_token(16) == model_flops_per_token(config, 16)
    tracked = cost.tracked(shape, _settings())
    assert [m.name for m in tracked] == list(select_modules(model))


@pytest.mark.parametrize("projection", [None, cost.Projection(rank_out=8, rank_in=4)])
def test_sum_bytes_equal_what_the_passes_allocate(tiny, projection):
    config, model = tiny
    from tikmix.influence.projection import ProjectionSpec, make_projections

    modules = select_modules(model)
    projections = (
        make_projections(modules, ProjectionSpec(projection.rank_out, projection.rank_in))
        if projection
        else None
    )
    ids = torch.randint(0, 64, (4, 17))
    grads = summed_gradients(model, modules, [ids], projections=projections)
    covs = covariance_sums(model, modules, [ids], projections=projections)
    shape = cost.ModelShape.from_config(config.to_dict())
    settings = _settings(projection=projection)
    tracked = cost.tracked(shape, settings)
    assert cost.gradient_sum_bytes(tracked, settings) == sum(t.nbytes for t in grads.sums.values())
    distinct = {id(t): t for t in [*covs.activation.values(), *covs.gradient.values()]}
    assert cost.covariance_sum_bytes(tracked, settings) == sum(t.nbytes for t in distinct.values())
    assert cost.covariance_store_bytes(tracked, settings) == sum(
        t.nbytes for t in [*covs.activation.values(), *covs.gradient.values()]
    )


@pytest.mark.parametrize(
    "model_type, extra",
    [
        ("llama", {"num_key_value_heads": 2, "intermediate_size": 40}),
        ("gpt_neox", {"intermediate_size": 40}),
        ("gpt2", {"n_inner": 40}),
        ("phi", {"intermediate_size": 40}),
    ],
)
def test_tracked_layers_and_shapes_match_hugging_face_models(model_type, extra):
    transformers = pytest.importorskip("transformers")
    from tikmix.influence.tracking import gradient_shape

    common = {"vocab_size": 50, "max_position_embeddings": 32, "n_positions": 32}
    if model_type == "gpt2":
        common |= {"n_embd": 16, "n_layer": 2, "n_head": 4}
    else:
        common |= {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = transformers.AutoConfig.for_model(model_type, **common, **extra)
    model = transformers.AutoModelForCausalLM.from_config(config)
    modules = select_modules(model)
    shape = cost.ModelShape.from_config(config.to_dict())
    tracked = cost.tracked(shape, _settings())
    assert cost.tracks_modelled_layers(shape, _settings())
    assert {m.name: (m.out_dim, m.in_dim) for m in tracked} == {
        name: gradient_shape(module) for name, module in modules.items()
    }


def test_llama2_7b_covariance_sums_are_128_gb():
    shape = cost.ModelShape.from_config(LLAMA2_7B)
    assert shape.parameters() == pytest.approx(6.74e9, rel=1e-3)
    tracked = cost.tracked(shape, _settings())
    s_11008 = 11008**2 * cost.FLOAT64
    assert s_11008 / cost.GB == pytest.approx(0.97, abs=0.005)
    assert cost.covariance_sum_bytes(tracked, _settings()) / cost.GB == pytest.approx(
        127.4, abs=0.1
    )


@pytest.fixture
def study_7b(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(LLAMA2_7B))
    study = tmp_path / "study.yaml"
    study.write_text(
        "data: {seq_len: 2048}\n"
        "domains: {web: {paths: [web.jsonl]}, code: {paths: [code.jsonl]}}\n"
        "tasks: {mmlu: {path: mmlu.jsonl}}\n"
        f"checkpoints: {{llama2-7b: {tmp_path / 'ckpt'}}}\n"
        "demo: {fetch: false}\n"
        "influence: {batch_size: 2, task_batch_size: 2, precision: bf16}\n"
    )
    return study


def test_plan_flags_unprojected_ekfac_on_80_gb_and_its_fixes_fit(study_7b, capsys):
    assert main(["plan", "--configfile", str(study_7b), "--gpu", "h100"]) == 0
    out = capsys.readouterr().out
    flagged = [line for line in out.splitlines() if line.startswith("warning: ekfac_covariances")]
    assert flagged and "influence.ekfac.module_partitions" in flagged[0]
    assert "ekfac_covariances" in out and "GPU hours" in out and "MFU 0.3" in out

    shape = cost.ModelShape.from_config(LLAMA2_7B)
    config = {
        "data": {"seq_len": 2048},
        "influence": {
            "batch_size": 2,
            "task_batch_size": 2,
            "precision": "bf16",
            "projection": None,
            "tracked_modules": DEFAULT_MODULE_PATTERN,
            "domain_tokens": 65536,
            "shards_per_domain": 1,
            "ekfac": {"tokens": 131072, "shards": 2, "fisher": "sampled"},
        },
        "domains": {"web": {}, "code": {}},
        "tasks": {"mmlu": {}},
        "mixing": {
            "tikmix_m": {"response": "curvature", "curvature": {"tokens_per_domain": 16384}}
        },
        "checkpoints": {"llama2-7b": "x"},
        "stage1": {"tokens": 1, "batch_size": 1},
    }
    settings = cost.Settings.from_config(config, device="gpu")
    before = cost.plan({"7b": shape}, settings, cost.GPUS["h100"])
    flagged = {w.split()[0] for w in before.warnings}
    assert {"ekfac_covariances", "ekfac_lambda", "domain_gradients"} <= flagged
    after = cost.plan({"7b": shape}, cost.with_fixes(settings, before.fixes), cost.GPUS["h100"])
    assert after.warnings == []
    assert all(c.device_bytes <= 80 * cost.GB for c in after.costs)
    # A 141 GB GPU still cannot hold the unprojected covariance sums (~128 GB) beside the model.
    h200 = cost.plan({"7b": shape}, settings, cost.GPUS["h200"])
    assert any(w.startswith("ekfac_covariances") for w in h200.warnings)


def test_memory_request_grows_with_attempt():
    shape = cost.ModelShape.from_config(LLAMA2_7B)
    costs = {c.rule: c for c in cost.rule_costs(shape, _settings(device="gpu", seq_len=2048))}
    first = cost.job_mem_mb(costs["domain_gradients"], 1)
    assert first * cost.MIB >= costs["domain_gradients"].host_bytes
    assert cost.job_mem_mb(costs["domain_gradients"], 2) == 2 * first
    assert cost.job_runtime_min(costs["ekfac_lambda"], 3) == 3 * cost.job_runtime_min(
        costs["ekfac_lambda"], 1
    )


def test_plan_names_a_bad_config_json(tmp_path, capsys):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text('{"model_type": "mamba", "d_state": 16}')
    study = tmp_path / "study.yaml"
    study.write_text(
        "domains: {a: {paths: [a]}}\ntasks: {t: {path: t}}\n"
        f"checkpoints: {{c: {tmp_path / 'ckpt'}}}\ndemo: {{fetch: false}}\n"
    )
    assert main(["plan", "--configfile", str(study)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "config.json" in err[0] and "hidden_size" in err[0]


def test_workflow_jobs_request_the_cost_models_memory(tmp_path):
    """Through the snakemake CLI: a larger model's jobs ask for what tikmix.cost estimates."""
    import subprocess
    import sys

    import yaml
    from snakemake.utils import validate
    from workflow_helpers import REPO, parse_plan, snapshot_code

    model = {"d_model": 512, "n_layers": 6, "n_heads": 8, "d_ff": None, "tie_embeddings": True}
    workdir = snapshot_code(tmp_path / "wf")
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["model"] = model
    (workdir / "study.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--verbose", "--cores", "1"]
        + ["results/influence/stage1-100/ekfac/eigen.zarr", "--configfile", "study.yaml"],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    requested = {}
    for block in result.stdout.split("\nrule ")[1:]:
        rule = block.split(":", 1)[0]
        resources = next(line for line in block.splitlines() if "resources:" in line)
        requested[rule] = int(resources.split("mem_mb=")[1].split(",")[0])
    assert {job.rule for job in parse_plan(result.stdout)} >= {"train_stage1", "ekfac_eigen"}

    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"), set_default=True)
    (shape,) = cost.checkpoint_shapes(config, {}).values()
    costs = {c.rule: c for c in cost.rule_costs(shape, cost.Settings.from_config(config))}
    for rule in ("train_stage1", "ekfac_covariances", "ekfac_eigen"):
        assert requested[rule] == cost.job_mem_mb(costs[rule], 1), rule
    # the 6-layer model's eigen job holds 4 covariance stores: more than the demo's floor
    assert requested["ekfac_eigen"] > cost.job_mem_mb(costs["ekfac_covariances"], 1)
