"""Model families: the default tracked modules of each, and the influence matrix of its saved
checkpoint through the workflow's stages against the library's in-memory computation.

Each family is a tiny random-init ``transformers`` config saved with ``save_pretrained`` (no
download). The stages (``tikmix.influence.stages``) reload the checkpoint from disk and pass
everything through Zarr stores; the reference runs ``tikmix.influence.api`` on the model object
in memory, on the same token windows. A mixture-of-experts family fails with an error that names
the family and the config key, and works once the key is set.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tikmix.core.gradient_pass import GradientPassSettings
from tikmix.data.sampler import load_streams, plan_mixture
from tikmix.influence import stages
from tikmix.influence.api import fit_ekfac, group_influence, iterate_batches
from tikmix.influence.tracking import DEFAULT_MODULE_PATTERN, select_modules
from tikmix.seeds import derive_seed

transformers = pytest.importorskip("transformers")

VOCAB, SEQ, BATCH, SEED = 64, 12, 4, 0
EKFAC_TOKENS, DOMAIN_TOKENS = 192, 96
SMALL = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, vocab_size=VOCAB)
LLAMA_LIKE = dict(SMALL, num_key_value_heads=1, intermediate_size=32, max_position_embeddings=32)
ATTENTION_ONLY = r"(^|\.)layers\.\d+\.self_attn\.\w+_proj$"

# family -> (config, the tracked layer names of block 0, relative to the block)
FAMILIES = {
    "llama": (LLAMA_LIKE, {"self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj"}),
    "mistral": (LLAMA_LIKE, {"self_attn.k_proj", "mlp.down_proj"}),
    "qwen2": (LLAMA_LIKE, {"self_attn.v_proj", "mlp.up_proj"}),
    "olmo2": (LLAMA_LIKE, {"self_attn.q_proj", "mlp.down_proj"}),
    "gemma": (dict(LLAMA_LIKE, head_dim=8), {"self_attn.o_proj", "mlp.gate_proj"}),
    "gpt_neox": (
        dict(SMALL, intermediate_size=32, max_position_embeddings=32),
        {
            "attention.query_key_value",
            "attention.dense",
            "mlp.dense_h_to_4h",
            "mlp.dense_4h_to_h",
        },
    ),
    "gpt2": (
        dict(n_embd=16, n_layer=2, n_head=2, vocab_size=VOCAB, n_positions=32),
        {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"},
    ),
    "phi": (
        dict(SMALL, intermediate_size=32, max_position_embeddings=32),
        {"self_attn.q_proj", "self_attn.dense", "mlp.fc1", "mlp.fc2"},
    ),
}
# Layers per block the default pattern tracks (every attention and MLP layer).
LAYERS_PER_BLOCK = {"gpt_neox": 4, "gpt2": 4, "phi": 6}


def _tiny(family: str, config: dict, directory) -> torch.nn.Module:
    torch.manual_seed(0)
    model_config = transformers.AutoConfig.for_model(
        family, **config, bos_token_id=None, eos_token_id=0, pad_token_id=0
    )
    model = transformers.AutoModelForCausalLM.from_config(model_config).eval()
    model.save_pretrained(directory)
    return model


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two domains' token streams and a task with a loss mask."""
    root = tmp_path_factory.mktemp("families_data")
    rng = np.random.default_rng(0)
    domains = {}
    for d in range(2):
        directory = root / f"d{d}"
        directory.mkdir()
        probs = rng.dirichlet(np.full(VOCAB, 0.3 + d))
        np.save(directory / "train.npy", rng.choice(VOCAB, 3000, p=probs).astype(np.uint16))
        domains[f"d{d}"] = directory
    ids = rng.integers(0, VOCAB, (6, SEQ + 1)).astype(np.int32)
    mask = np.ones_like(ids, dtype=np.uint8)
    mask[:, : SEQ // 2] = 0
    np.savez(root / "task.npz", input_ids=ids, loss_mask=mask)
    return domains, root / "task.npz"


def _pipeline_matrix(checkpoint, domains, task_file, pattern, out):
    """The influence matrix through the workflow's stages, from the checkpoint on disk."""
    gradient_pass = _gradient_pass(pattern)
    sample = dict(
        checkpoint=checkpoint,
        gradient_pass=gradient_pass,
        domain_dirs=domains,
        weights=dict.fromkeys(domains, 0.5),
        tokens=EKFAC_TOKENS,
        shards=1,
        shard=0,
        fisher="sampled",
    )
    stages.ekfac_covariances(**sample, out=out / "cov.zarr")
    stages.ekfac_eigen([out / "cov.zarr"], out / "eigen.zarr")
    stages.ekfac_lambda(**sample, eigen=out / "eigen.zarr", out=out / "lambda.zarr")
    stages.ekfac_factors(out / "eigen.zarr", [out / "lambda.zarr"], out / "factors.zarr")
    domain_stores = {
        domain: stages.reduce_domain_gradients(
            [
                stages.domain_gradients(
                    checkpoint=checkpoint,
                    gradient_pass=gradient_pass,
                    domain=domain,
                    domain_dir=directory,
                    tokens=DOMAIN_TOKENS,
                    shards=1,
                    shard=0,
                    out=out / f"{domain}-part.zarr",
                )
            ],
            out / f"{domain}.zarr",
        )
        for domain, directory in domains.items()
    }
    task = stages.task_gradients(
        checkpoint=checkpoint,
        gradient_pass=gradient_pass.for_tasks(BATCH),
        task="task",
        task_file=task_file,
        out=out / "task.zarr",
    )
    stages.precondition_task_gradients(
        factors=out / "factors.zarr",
        task_stores={"task": task},
        damping=None,
        damping_factor=0.1,
        out=out / "pre.zarr",
    )
    return stages.influence_matrix(
        preconditioned=out / "pre.zarr",
        domain_stores=domain_stores,
        matrix_csv=out / "influence.csv",
        sidecar_json=out / "influence.json",
        per_module_parquet=out / "per_module.parquet",
    )


def _gradient_pass(pattern):
    return GradientPassSettings(
        tracked_modules=pattern,
        projection=None,
        precision="fp32",
        batch_size=BATCH,
        seq_len=SEQ,
        seed=SEED,
        device="cpu",
    )


def _windows(domains, weights, tokens, seed) -> list[torch.Tensor]:
    """The token windows the stages sample (same sampler, same seeds), as batches."""
    streams = load_streams(domains)
    plan = plan_mixture({d: len(s) for d, s in streams.items()}, weights, tokens, SEQ, seed)
    rows = np.arange(len(plan))
    return [
        torch.from_numpy(plan.gather(streams, rows[i : i + BATCH]))
        for i in range(0, len(rows), BATCH)
    ]


def _in_memory_matrix(model, domains, task_file, pattern):
    """The same matrix from ``tikmix.influence.api`` on the model object in memory."""
    fit = _windows(domains, dict.fromkeys(domains, 0.5), EKFAC_TOKENS, derive_seed(SEED, "ekfac"))
    factors = fit_ekfac(
        model, fit, modules=pattern, fisher="true", seed=derive_seed(SEED, "fisher")
    )
    domain_batches = {
        d: _windows({d: path}, {d: 1.0}, DOMAIN_TOKENS, derive_seed(SEED, "domain_gradients", d))
        for d, path in domains.items()
    }
    with np.load(task_file) as task:
        task_batches = {"task": list(iterate_batches(task["input_ids"], task["loss_mask"], BATCH))}
    return group_influence(model, task_batches, domain_batches, factors, pattern)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_default_pattern_tracks_the_family_and_saved_checkpoint_matches_in_memory(
    family, data, tmp_path
):
    config, expected = FAMILIES[family]
    model = _tiny(family, config, tmp_path / "ckpt")
    tracked = select_modules(model)
    block0 = {name.split(".0.", 1)[1] for name in tracked if ".0." in name}
    assert expected <= block0, sorted(tracked)
    assert len(tracked) == 2 * LAYERS_PER_BLOCK.get(family, 7), sorted(tracked)
    assert not any("lm_head" in name or "emb" in name for name in tracked)
    domains, task_file = data
    on_disk = _pipeline_matrix(
        tmp_path / "ckpt", domains, task_file, DEFAULT_MODULE_PATTERN, tmp_path
    )
    in_memory = _in_memory_matrix(model, domains, task_file, DEFAULT_MODULE_PATTERN)
    assert on_disk.shape == (1, 2) and np.abs(on_disk.to_numpy()).min() > 0
    np.testing.assert_allclose(on_disk.to_numpy(), in_memory.to_numpy(), rtol=1e-6)


def test_gpt2_conv1d_gradient_is_the_transposed_weight_gradient():
    """Conv1D stores its weight [in, out]: the tracked gradient is autograd's, transposed."""
    from tikmix.influence.api import domain_gradient

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_embd=8, n_layer=1, n_head=2, vocab_size=VOCAB, n_positions=16
    )
    model = transformers.GPT2LMHeadModel(config).double().eval()
    ids = torch.randint(0, VOCAB, (3, SEQ + 1), generator=torch.Generator().manual_seed(1))
    stats = domain_gradient(model, [ids])
    logits = model(ids[:, :-1]).logits
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1), reduction="sum"
    )
    layer = model.transformer.h[0].mlp.c_fc
    weight_grad, bias_grad = torch.autograd.grad(loss, [layer.weight, layer.bias])
    expected = torch.cat([weight_grad.T, bias_grad[:, None]], dim=1)
    got = stats.sums["transformer.h.0.mlp.c_fc"]
    assert got.shape == (4 * 8, 8 + 1)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("family", ["mixtral", "olmoe"])
def test_mixture_of_experts_fails_naming_family_and_key_then_works_once_set(family, data, tmp_path):
    experts = {"mixtral": "num_local_experts", "olmoe": "num_experts"}[family]
    model = _tiny(
        family, dict(LLAMA_LIKE, num_experts_per_tok=2, **{experts: 4}), tmp_path / "ckpt"
    )
    domains, task_file = data
    with pytest.raises(
        ValueError, match=rf"{family} is a mixture-of-experts.*influence\.tracked_modules"
    ):
        select_modules(model)
    with pytest.raises(ValueError, match="influence.tracked_modules"):
        stages.task_gradients(
            checkpoint=tmp_path / "ckpt",
            gradient_pass=_gradient_pass(DEFAULT_MODULE_PATTERN).for_tasks(BATCH),
            task="task",
            task_file=task_file,
            out=tmp_path / "task.zarr",
        )
    assert len(select_modules(model, ATTENTION_ONLY)) == 2 * 4
    on_disk = _pipeline_matrix(tmp_path / "ckpt", domains, task_file, ATTENTION_ONLY, tmp_path)
    in_memory = _in_memory_matrix(model, domains, task_file, ATTENTION_ONLY)
    np.testing.assert_allclose(on_disk.to_numpy(), in_memory.to_numpy(), rtol=1e-6)
