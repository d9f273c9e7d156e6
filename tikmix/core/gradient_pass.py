"""The settings of a gradient pass, shared by every influence rule (one object, built once).

A gradient pass (domain gradients, task gradients, the EK-FAC covariance and Λ passes,
TiKMiX-M's per-domain Λ_d passes and direct measurements) reads the same seven settings. The
workflow builds :class:`GradientPassSettings` once from the config (``common.smk``), hands it
to each rule as the ``gradient_pass`` param (a plain mapping, so that Snakemake's params
trigger sees it) and :func:`tikmix.workflow.rule_settings` turns it back into this object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from tikmix.core.settings import Settings


@dataclass(frozen=True)
class GradientPassSettings(Settings):
    """What every gradient pass over a checkpoint needs besides its data.

    Attributes:
        tracked_modules: regex of the linear layers whose gradients are tracked.
        projection: ``None`` or ``{rank_out, rank_in, seed}`` (random Kronecker projection).
        precision: ``fp32``, ``bf16`` or ``auto`` (the forward passes' autocast).
        batch_size: sequences per forward/backward pass.
        seq_len: tokens per training sequence (the model reads ``seq_len + 1`` ids); ``None``
            for task gradients (a task file fixes its sequences).
        seed: the workflow's seed; each pass derives its sample seed from it (``None`` for
            task gradients, which sample nothing).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    """

    tracked_modules: str
    projection: Mapping[str, int] | None
    precision: str
    batch_size: int
    seq_len: int | None
    seed: int | None
    device: str

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> GradientPassSettings:
        """The settings a workflow config gives (``influence.*``, ``data.seq_len``, ``seed``)."""
        influence = config["influence"]
        return cls(
            tracked_modules=influence["tracked_modules"],
            projection=influence["projection"],
            precision=influence["precision"],
            batch_size=influence["batch_size"],
            seq_len=config["data"]["seq_len"],
            seed=config["seed"],
            device=config["device"],
        )

    def for_tasks(self, batch_size: int) -> GradientPassSettings:
        """The settings of a task-gradient pass: its own batch size, and no ``seq_len`` or
        ``seed`` (a task file fixes its sequences), so changing those does not rerun it."""
        return replace(self, batch_size=batch_size, seq_len=None, seed=None)
