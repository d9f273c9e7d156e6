"""The built-in Llama model: shapes, causality, rotary embeddings, sizes, FLOPs, HF equivalence."""

import math
import re

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tikmix.models.llama import (
    ModelConfig,
    TinyLlama,
    apply_rotary,
    model_flops_per_token,
    num_parameters,
    rotary_cos_sin,
)
from tikmix.models.loss import token_losses

TRACKED = re.compile(r"(^|\.)layers\.\d+\.(self_attn|mlp)\.\w+_proj$")  # docs/architecture.md


def tiny(**overrides) -> TinyLlama:
    values = dict(vocab_size=61, d_model=32, n_layers=2, n_heads=4, max_seq_len=24)
    torch.manual_seed(0)
    return TinyLlama(ModelConfig(**{**values, **overrides}))


def test_logits_shape_and_causality():
    model = tiny()
    ids = torch.randint(0, 61, (3, 20), generator=torch.Generator().manual_seed(1))
    logits = model(ids)
    assert logits.shape == (3, 20, 61)
    changed = ids.clone()
    changed[:, 12] = (ids[:, 12] + 1) % 61
    new_logits = model(changed)
    assert torch.equal(new_logits[:, :12], logits[:, :12])
    assert not torch.allclose(new_logits[:, 12:], logits[:, 12:])


def test_module_names_match_the_tracked_regex():
    model = tiny(n_layers=3)
    tracked = {n for n, m in model.named_modules() if TRACKED.search(n)}
    assert all(isinstance(model.get_submodule(n), torch.nn.Linear) for n in tracked)
    expected = {
        f"layers.{i}.{block}.{name}_proj"
        for i in range(3)
        for block, names in (("self_attn", "qkvo"), ("mlp", ("gate", "up", "down")))
        for name in names
    }
    assert tracked == expected
    names = {n for n, _ in model.named_modules()}
    assert {"embed_tokens", "norm", "lm_head", "layers.2.input_layernorm"} <= names
    assert "layers.2.post_attention_layernorm" in names
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Linear))


def test_every_linear_is_called_once_per_forward():
    model = tiny()
    calls = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(
                lambda m, i, o, n=name: calls.update({n: calls.get(n, 0) + 1})
            )
    model(torch.zeros(2, 5, dtype=torch.long))
    assert len(calls) == 2 * 7 + 1 and set(calls.values()) == {1}


def test_tied_and_untied_embeddings():
    tied, untied = tiny(), tiny(tie_embeddings=False)
    assert tied.lm_head.weight is tied.embed_tokens.weight
    assert untied.lm_head.weight is not untied.embed_tokens.weight
    assert num_parameters(untied) - num_parameters(tied) == 61 * 32


@pytest.mark.parametrize(
    "values, expected",
    [
        # 2048·64 embedding + 2 · (4·64² + 3·64·192 + 2·64) + 64 final norm; d_ff = 192
        (dict(vocab_size=2048, d_model=64, n_layers=2, n_heads=4), 237_888),
        (dict(vocab_size=2048, d_model=64, n_layers=2, n_heads=4, tie_embeddings=False), 368_960),
        (dict(vocab_size=100, d_model=48, n_layers=3, n_heads=3, d_ff=100), None),
    ],
)
def test_parameter_count_formula(values, expected):
    config = ModelConfig(**values)
    model = TinyLlama(config)
    actual = sum(p.numel() for p in model.parameters())
    assert num_parameters(model) == config.num_parameters() == actual
    if expected is not None:
        assert actual == expected
    embedding = config.vocab_size * config.d_model
    assert num_parameters(model, exclude_embeddings=True) == actual - embedding
    assert config.num_parameters(exclude_embeddings=True) == actual - embedding


def test_size_range_small_and_over_100m_on_meta():
    small = ModelConfig(vocab_size=1024, d_model=64, n_layers=2, n_heads=4)
    assert 0.15e6 < num_parameters(TinyLlama(small)) < 0.25e6
    big = ModelConfig(vocab_size=32000, d_model=768, n_layers=12, n_heads=12, max_seq_len=2048)
    assert big.d_ff == 2048
    with torch.device("meta"):
        model = TinyLlama(big)
    assert model.lm_head.weight.is_meta
    assert num_parameters(model) == big.num_parameters() > 100e6
    assert model(torch.zeros(1, 8, dtype=torch.long, device="meta")).shape == (1, 8, 32000)


def test_default_ffn_width_is_8_thirds_rounded_up_to_32():
    assert ModelConfig(vocab_size=10, d_model=64, n_heads=4).d_ff == 192  # 170 -> 192
    assert ModelConfig(vocab_size=10, d_model=96, n_heads=4).d_ff == 256  # 256 exactly
    assert ModelConfig(vocab_size=10, d_model=64, n_heads=4, d_ff=100).d_ff == 100


def test_rotary_scores_depend_only_on_relative_position():
    head_dim, theta = 16, 10000.0
    q, k = torch.randn(2, head_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    positions = torch.arange(64)
    cos, sin = rotary_cos_sin(positions, head_dim, theta, torch.float64)

    def score(m: int, n: int) -> float:
        return float(apply_rotary(q, cos[m], sin[m]) @ apply_rotary(k, cos[n], sin[n]))

    for m, n, shift in [(3, 1, 17), (0, 9, 40), (20, 20, 33)]:
        assert score(m + shift, n + shift) == pytest.approx(score(m, n), abs=1e-12)
    assert abs(score(3, 1) - score(3, 2)) > 1e-3  # but the relative offset does matter
    # rotation preserves norms
    assert apply_rotary(q, cos[37], sin[37]).norm() == pytest.approx(float(q.norm()), rel=1e-12)


def test_flops_per_token_matches_counted_matmuls():
    config = ModelConfig(vocab_size=300, d_model=64, n_layers=2, n_heads=4, max_seq_len=32)
    model = TinyLlama(config)
    ids = torch.randint(0, 300, (2, 33))
    with FlopCounterMode(display=False) as counter:
        losses, _ = token_losses(model, ids)
        losses.sum().backward()
    matmul_flops = counter.get_flop_counts()["Global"][torch.ops.aten.mm] / (2 * 32)
    attention_flops = 12 * config.n_layers * config.d_model * 32
    assert model_flops_per_token(config, seq_len=32) == matmul_flops + attention_flops
    assert model_flops_per_token(config) == model_flops_per_token(config, config.max_seq_len)


def test_float64_model_computes_in_float64():
    model = tiny(d_model=16).double()
    ids = torch.randint(0, 61, (2, 8), generator=torch.Generator().manual_seed(2))
    assert model(ids).dtype == torch.float64
    name = "layers.0.input_layernorm.weight"  # feeds attention (with rotary) and everything after
    gain = (1 + 0.1 * torch.randn(16, dtype=torch.float64)).requires_grad_()

    def loss_of(w):
        return torch.func.functional_call(model, {name: w}, (ids,)).logsumexp(-1).sum()

    # finite differences only agree this well if nothing is rounded to float32 on the way
    assert torch.autograd.gradcheck(loss_of, (gain,), eps=1e-6, atol=1e-7, rtol=1e-6)


def test_same_logits_as_huggingface_llama_with_the_same_weights():
    transformers = pytest.importorskip("transformers")
    model = tiny(tie_embeddings=False, norm_eps=1e-6, rope_theta=500.0)
    config = model.config
    hf_config = transformers.LlamaConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.d_model,
        intermediate_size=config.d_ff,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_heads,
        max_position_embeddings=config.max_seq_len,
        rms_norm_eps=config.norm_eps,
        rope_theta=config.rope_theta,
        tie_word_embeddings=False,
    )
    hf_model = transformers.LlamaForCausalLM(hf_config).eval()
    state = {
        ("" if k == "lm_head.weight" else "model.") + k: v for k, v in model.state_dict().items()
    }
    hf_model.load_state_dict(state, strict=True)
    ids = torch.randint(0, config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf_model(ids).logits, rtol=1e-5, atol=1e-6)


def test_config_round_trip_and_validation():
    config = ModelConfig(vocab_size=50, d_model=32, n_heads=2, tie_embeddings=False)
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown ModelConfig keys \\['hidden'\\]"):
        ModelConfig.from_dict({**config.to_dict(), "hidden": 3})
    with pytest.raises(ValueError, match="vocab_size"):
        ModelConfig.from_dict({"d_model": 32})
    with pytest.raises(ValueError, match="divisible by n_heads"):
        ModelConfig(vocab_size=50, d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="must be even"):
        ModelConfig(vocab_size=50, d_model=12, n_heads=4)
    with pytest.raises(ValueError, match="n_layers"):
        ModelConfig(vocab_size=50, n_layers=0)
    with pytest.raises(ValueError, match="max_seq_len 24"):
        tiny()(torch.zeros(1, 25, dtype=torch.long))


def test_initialisation_scales():
    torch.manual_seed(0)
    model = TinyLlama(ModelConfig(vocab_size=512, d_model=256, n_layers=8, n_heads=4))
    assert model.embed_tokens.weight.std().item() == pytest.approx(0.02, rel=0.02)
    residual = model.layers[0].mlp.down_proj.weight.std().item()
    assert residual == pytest.approx(0.02 / math.sqrt(16), rel=0.02)
    assert torch.equal(model.norm.weight, torch.ones(256))
