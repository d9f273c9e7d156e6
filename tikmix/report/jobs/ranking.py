"""Rule ``ranking``: rank stability over training, trajectories and heatmaps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from tikmix.analysis import write_tables
from tikmix.analysis.ranking import ranking_analysis
from tikmix.report.figures import benefit_trajectories_figure, influence_heatmap

Paths = Sequence[str | Path]


def ranking_job(
    *,
    influence: Paths,
    stability: str | Path,
    trajectories: str | Path,
    checkpoints: Sequence[str],
    checkpoint_dirs: Mapping[str, str | Path],
    trajectories_stem: str | Path,
    heatmap_stems: Sequence[str | Path],
) -> None:
    """Rule ``ranking``: the stability and trajectory tables, the trajectories figure and a
    heatmap per checkpoint (``influence`` in the order of ``checkpoints``)."""
    matrices, trajectory_table, stability_table = ranking_analysis(
        dict(zip(checkpoints, influence, strict=True)), checkpoint_dirs
    )
    write_tables(((stability_table, stability, False), (trajectory_table, trajectories, False)))
    benefit_trajectories_figure(
        trajectory_table, trajectories_stem, title="Benefit of each domain over training"
    )
    for ckpt, stem in zip(checkpoints, heatmap_stems, strict=True):
        influence_heatmap(matrices[ckpt], stem, title=f"Group-influence benefit at {ckpt}")
