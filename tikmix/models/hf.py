"""Loading a user's local Hugging Face causal-LM checkpoint, never touching the Hub.

A Hugging Face checkpoint is a directory with a ``config.json`` that names a ``model_type`` and
safetensors weights (``model.safetensors`` or shards listed in ``model.safetensors.index.json``),
as written by ``save_pretrained``. ``transformers`` is an optional dependency (``tikmix[hf]``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

SAFETENSORS_INDEX = "model.safetensors.index.json"


def hf_weight_files(directory: Path) -> list[Path]:
    """The safetensors weight files of a Hugging Face checkpoint directory, sorted by name."""
    return sorted(directory.glob("*.safetensors"))


def load_hf_model(
    directory: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> nn.Module:
    """Load ``AutoModelForCausalLM`` from a local directory, offline, in eval mode.

    ``dtype=None`` keeps the dtype the weights were saved in. The Hub is never contacted:
    ``local_files_only=True``, and ``HF_HUB_OFFLINE=1`` is set if the Hub client was not
    imported yet (it reads the variable once, at import).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"Hugging Face checkpoint directory {directory} does not exist")
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory} has no config.json: not a Hugging Face checkpoint")
    if not hf_weight_files(directory):
        others = sorted(p.name for p in directory.iterdir())
        raise FileNotFoundError(
            f"{directory} has no safetensors weights (model.safetensors or shards with "
            f"{SAFETENSORS_INDEX}); found {others}. Re-save the model with "
            "save_pretrained(..., safe_serialization=True)."
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from transformers import AutoModelForCausalLM
    except ImportError as err:
        raise ImportError(
            f"loading the Hugging Face checkpoint {directory} needs the 'transformers' package: "
            "pip install 'tikmix[hf]'"
        ) from err
    model = AutoModelForCausalLM.from_pretrained(
        directory, local_files_only=True, use_safetensors=True, dtype=dtype or "auto"
    )
    return model.to(device).eval()
