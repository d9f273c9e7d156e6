from tikmix.analysis.ranking import ranking_analysis
from tikmix.core.atomic import atomic_output
from tikmix.report.figures import benefit_trajectories_figure, influence_heatmap
from tikmix.workflow import script_logging

with script_logging(snakemake):
    p = snakemake.params
    matrices, trajectories, stability = ranking_analysis(
        dict(zip(p.checkpoints, snakemake.input.influence, strict=True)), p.checkpoint_dirs
    )
    for table, path in (
        (stability, snakemake.output.stability),
        (trajectories, snakemake.output.trajectories),
    ):
        with atomic_output(path) as tmp:
            table.to_csv(tmp, index=False)
    benefit_trajectories_figure(
        trajectories, p.trajectories_stem, title="Benefit of each domain over training"
    )
    for ckpt, stem in zip(p.checkpoints, p.heatmap_stems, strict=True):
        influence_heatmap(matrices[ckpt], stem, title=f"Group-influence benefit at {ckpt}")
