"""Which layers influence tracks by default, and the model families that default cannot track.

Torch-free, so that the workflow's start-up checks (:mod:`tikmix.validation`) can refuse a
checkpoint from its ``config.json`` alone; :mod:`tikmix.influence.tracking` applies the same
check to a loaded model.
"""

from __future__ import annotations

from collections.abc import Mapping

#: The attention and MLP layers inside the transformer blocks of the families that dominate open
#: pre-training (the LM head, embeddings and norms are not matched):
#: Llama/Mistral/Qwen2/OLMo2/Gemma/Phi-3 and the built-in model ``layers.N.(self_attn|mlp).*_proj``;
#: GPT-NeoX/Pythia ``layers.N.attention.(query_key_value|dense)``, ``mlp.dense_h_to_4h|dense_4h_to_h``;
#: GPT-2 ``h.N.attn.(c_attn|c_proj)``, ``h.N.mlp.(c_fc|c_proj)`` (Conv1D);
#: Phi ``layers.N.self_attn.(q|k|v)_proj|dense``, ``layers.N.mlp.fc1|fc2``.
DEFAULT_MODULE_PATTERN = (
    r"(^|\.)(layers|h)\.\d+\.(self_attn|mlp|attention|attn)\."
    r"(\w+_proj|query_key_value|dense|dense_h_to_4h|dense_4h_to_h|c_attn|c_fc|fc1|fc2)$"
)

#: config.json keys whose value > 1 marks a mixture-of-experts model (Mixtral, OLMoE, Qwen-MoE, ...).
EXPERT_COUNT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")


def mixture_of_experts(model_config: Mapping) -> str | None:
    """The family name (``model_type``) of a mixture-of-experts checkpoint config, else None."""
    if any((model_config.get(key) or 0) > 1 for key in EXPERT_COUNT_KEYS):
        return str(model_config.get("model_type", "mixture-of-experts"))
    return None


def check_model_family(model_config: Mapping, pattern: str, source: str = "checkpoint") -> None:
    """Refuse the default tracked modules on a mixture-of-experts model, naming family and key.

    The expert layers of MoE families (Mixtral, OLMoE, ...) are fused 3-D parameters that are run
    on the tokens routed to them; they are not ``nn.Linear`` layers and cannot be tracked, so the
    default pattern would silently measure influence through attention only. Setting
    ``influence.tracked_modules`` explicitly (e.g. to the attention projections) accepts that.
    ``model_config`` is the checkpoint's ``config.json``; ``source`` names it in the message.
    Meant for the workflow's start-up validation as well as every job that selects modules.
    """
    family = mixture_of_experts(model_config)
    if family is not None and pattern == DEFAULT_MODULE_PATTERN:
        raise ValueError(
            f"{source}: {family} is a mixture-of-experts model; its expert layers are fused "
            "3-D parameters that tikmix cannot track (only nn.Linear and Conv1D layers). Set "
            "the config key influence.tracked_modules to the layers to track, e.g. the "
            "attention projections: '(^|\\.)layers\\.\\d+\\.self_attn\\.\\w+_proj$' "
            "(influence is then measured through attention only)."
        )
