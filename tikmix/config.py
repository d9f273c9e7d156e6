"""Checks of a workflow config that a JSON schema cannot express, run at start-up.

The schema (workflow/schemas/config.schema.yaml) checks types and names; this module checks that what
the config points to exists, so a typo fails in seconds, naming the key, before any job runs.
"""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """An invalid workflow configuration; the message names the offending key."""


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"config key '{key}': {message}")


def check_config(config: dict[str, Any], demo: bool = False) -> None:
    """Raise ConfigError for paths that do not exist and settings that contradict each other.

    With ``demo`` the domain and task files are produced by ``fetch_demo_data`` and are not checked.
    """
    if not demo:
        for domain, spec in config["domains"].items():
            for pattern in spec["paths"]:
                _require(
                    bool(glob.glob(pattern, recursive=True)),
                    f"domains.{domain}.paths",
                    f"no file matches '{pattern}' (domain '{domain}')",
                )
        for task, spec in config["tasks"].items():
            _require(
                Path(spec["path"]).is_file(), f"tasks.{task}.path", f"no file '{spec['path']}'"
            )
    tokenizer = config["tokenizer"]["path"]
    if tokenizer is not None:
        _require(
            Path(tokenizer).is_file() or (Path(tokenizer) / "tokenizer.json").is_file(),
            "tokenizer.path",
            f"no tokenizer file '{tokenizer}' (nor a directory holding tokenizer.json)",
        )
    for name, path in config["checkpoints"].items():
        _require(Path(path).is_dir(), f"checkpoints.{name}", f"no checkpoint directory '{path}'")
    if config["checkpoints"]:
        _require(
            tokenizer is not None,
            "tokenizer.path",
            "your own checkpoints need the tokenizer they were trained with",
        )
    fractions = config["stage1"]["checkpoint_fractions"]
    _require(
        fractions == sorted(set(fractions)),
        "stage1.checkpoint_fractions",
        f"must be strictly increasing, got {fractions}",
    )
    prior = config["stage1"]["prior"]
    if not (prior in ("natural", "uniform") or prior.startswith("natural:")):
        _require(Path(prior).is_file(), "stage1.prior", f"no such weights file '{prior}'")
