"""Device selection from the config's ``device: auto|cpu|cuda``."""

from __future__ import annotations

import torch


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when available; asking for ``cuda`` without a GPU is an error.

    A ``torch.device`` (or a string such as ``cuda:1``) is passed through.
    """
    if isinstance(name, torch.device):
        return name
    if name.startswith("cuda:"):
        return torch.device(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("config 'device: cuda' but no CUDA device is visible to this job")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)
