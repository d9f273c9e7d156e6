"""Checkpoint directories: saving atomically, loading built-in and Hugging Face models.

A checkpoint is a directory. The built-in format holds

- ``model.safetensors``: the state dict (without ``lm_head.weight`` when embeddings are tied),
- ``config.json``: :meth:`ModelConfig.to_dict`,
- ``tikmix.json``: provenance, ``{format, step, tokens_seen, mixture, tokenizer, seed, extra}``,
- ``optimizer.pt``: the optimizer state, optionally (stage-2 training continues from it).

A Hugging Face directory (``config.json`` with a ``model_type``, safetensors weights) is accepted
wherever a checkpoint is; its ``tikmix.json`` is optional. A directory is written under a hidden
temporary name beside its destination and renamed into place only once complete, so a crash
never leaves a partial checkpoint under the final name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from tikmix.core.atomic import atomic_directory
from tikmix.core.checkpoint_format import CONFIG_FILE, META_FILE, OPTIMIZER_FILE, WEIGHTS_FILE
from tikmix.core.digest import named_files_sha256
from tikmix.models.hf import hf_weight_files, load_hf_model
from tikmix.models.llama import ModelConfig, TinyLlama

BUILTIN = "builtin"
HF = "hf"
_TIED_KEY = "lm_head.weight"


class CheckpointError(ValueError):
    """A checkpoint directory whose files are inconsistent or unusable."""


@dataclass
class CheckpointInfo:
    """What :func:`load_checkpoint` knows about a checkpoint besides its weights.

    The provenance fields are ``None`` for a Hugging Face directory without ``tikmix.json``.
    """

    path: Path
    format: str
    vocab_size: int
    config: dict[str, Any]
    step: int | None = None
    tokens_seen: int | None = None
    mixture: dict[str, float] | None = None
    tokenizer: str | None = None
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def has_optimizer_state(self) -> bool:
        return (self.path / OPTIMIZER_FILE).is_file()


def save_checkpoint(
    directory: str | Path,
    model: nn.Module,
    model_config: ModelConfig | None = None,
    *,
    step: int,
    tokens_seen: int,
    mixture: Mapping[str, float],
    tokenizer: str,
    seed: int,
    optimizer: torch.optim.Optimizer | None = None,
    extra: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a checkpoint directory atomically and return its path.

    ``model`` is a :class:`TinyLlama` (``model_config`` defaults to, and must equal, its
    config) or a Hugging Face model (saved with ``save_pretrained``; ``model_config`` must be
    None). ``tokenizer`` identifies the tokenizer (e.g. its sha256). An existing directory is an
    error unless ``overwrite``; it is then replaced only after the new one is complete.
    """
    directory = Path(directory)
    if directory.exists() and not overwrite:
        raise FileExistsError(f"checkpoint directory {directory} already exists")
    with atomic_directory(directory) as tmp:
        tmp.mkdir()
        fmt = _write_model(tmp, model, model_config)
        meta = {
            "format": fmt,
            "step": int(step),
            "tokens_seen": int(tokens_seen),
            "mixture": {str(k): float(v) for k, v in mixture.items()},
            "tokenizer": tokenizer,
            "seed": int(seed),
            "extra": dict(extra or {}),
        }
        _write_json(tmp / META_FILE, meta)
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
        # Flushed before atomic_directory renames it, so the rename cannot reach the disk first.
        _fsync_files(tmp)
    return directory


def load_checkpoint(
    directory: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> tuple[nn.Module, CheckpointInfo]:
    """Load a built-in or Hugging Face checkpoint in eval mode; ``dtype=None`` keeps the saved one."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    config = _read_json(directory / CONFIG_FILE)
    meta = _read_json(directory / META_FILE) if (directory / META_FILE).is_file() else {}
    fmt = HF if "model_type" in config else BUILTIN
    if meta.get("format", fmt) != fmt:
        raise CheckpointError(
            f"{directory / META_FILE} says format {meta['format']!r} but {directory / CONFIG_FILE} "
            f"is a {fmt!r} config ({'with' if fmt == HF else 'without'} 'model_type')"
        )
    if fmt == HF:
        model = load_hf_model(directory, device=device, dtype=dtype)
    elif not meta:
        raise FileNotFoundError(
            f"{directory} is neither a Hugging Face checkpoint ({CONFIG_FILE} has no 'model_type') "
            f"nor a built-in one (no {META_FILE})"
        )
    else:
        model = _load_builtin(directory, config, device, dtype)
    info = CheckpointInfo(
        path=directory,
        format=fmt,
        vocab_size=model.get_input_embeddings().weight.shape[0],
        config=config,
        step=meta.get("step"),
        tokens_seen=meta.get("tokens_seen"),
        mixture=meta.get("mixture"),
        tokenizer=meta.get("tokenizer"),
        seed=meta.get("seed"),
        extra=meta.get("extra", {}),
    )
    return model, info


def load_optimizer_state(directory: str | Path) -> dict[str, Any] | None:
    """The optimizer state saved with a checkpoint, or None if it was saved without one."""
    path = Path(directory) / OPTIMIZER_FILE
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def check_compatible(info: CheckpointInfo, vocab_size: int) -> None:
    """Raise if the tokenizer's ``vocab_size`` ids do not all have an embedding row."""
    if info.vocab_size < vocab_size:
        raise CheckpointError(
            f"checkpoint {info.path} has {info.vocab_size} embedding rows but the tokenizer has "
            f"{vocab_size} tokens: ids >= {info.vocab_size} have no embedding"
        )


def checkpoint_hash(directory: str | Path) -> str:
    """sha256 over the checkpoint's weight files (names and bytes), for provenance records."""
    directory = Path(directory)
    files = hf_weight_files(directory) if directory.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no safetensors weight files in checkpoint directory {directory}")
    return named_files_sha256(files)


def _write_model(directory: Path, model: nn.Module, model_config: ModelConfig | None) -> str:
    """Write weights and config.json into ``directory``; return the checkpoint format."""
    if isinstance(model, TinyLlama):
        if model_config is not None and model_config != model.config:
            raise ValueError(f"model_config {model_config} differs from the model's {model.config}")
        config = model.config
        is_tied = model.lm_head.weight is model.embed_tokens.weight
        if is_tied != config.tie_embeddings:
            raise ValueError(
                f"model has tie_embeddings={config.tie_embeddings} in its config but its "
                f"output head is {'' if is_tied else 'not '}tied to the embedding table"
            )
        state = {
            name: tensor.detach().to("cpu").contiguous()
            for name, tensor in model.state_dict().items()
            if not (is_tied and name == _TIED_KEY)
        }
        safetensors.torch.save_file(state, directory / WEIGHTS_FILE, metadata={"format": "pt"})
        _write_json(directory / CONFIG_FILE, config.to_dict())
        return BUILTIN
    if hasattr(model, "save_pretrained"):
        if model_config is not None:
            raise ValueError("model_config must be None for a Hugging Face model")
        model.save_pretrained(directory)
        return HF
    raise TypeError(f"cannot checkpoint a {type(model).__name__}: not TinyLlama nor a HF model")


def _load_builtin(
    directory: Path, config: dict[str, Any], device: str | torch.device, dtype: torch.dtype | None
) -> TinyLlama:
    try:
        model_config = ModelConfig.from_dict(config)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{directory / CONFIG_FILE}: {err}") from err
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"checkpoint {directory} has no {WEIGHTS_FILE}")
    state = safetensors.torch.load_file(weights, device=str(device))
    if model_config.tie_embeddings and _TIED_KEY in state:
        raise CheckpointError(
            f"{directory / CONFIG_FILE} has tie_embeddings=true but {weights} holds a separate "
            f"{_TIED_KEY}"
        )
    if not model_config.tie_embeddings and _TIED_KEY not in state:
        raise CheckpointError(
            f"{directory / CONFIG_FILE} has tie_embeddings=false but {weights} has no {_TIED_KEY}"
        )
    with torch.device("meta"):
        model = TinyLlama(model_config)
    expected = set(model.state_dict()) - ({_TIED_KEY} if model_config.tie_embeddings else set())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"{weights} does not match {directory / CONFIG_FILE}: missing {missing}, "
            f"unexpected {unexpected}"
        )
    try:
        model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as err:  # shape mismatches
        raise CheckpointError(f"{weights} does not match {directory / CONFIG_FILE}: {err}") from err
    if model_config.tie_embeddings:
        model.tie_weights()
    if dtype is not None:
        model.to(dtype)
    return model.eval()


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(value).__name__}")
    return value


def _write_json(path: Path, value: dict[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


def _fsync_files(directory: Path) -> None:
    """Flush the files to disk so that the rename cannot be persisted before their content."""
    for path in directory.iterdir():
        if path.is_file():
            with path.open("rb") as f:
                os.fsync(f.fileno())
