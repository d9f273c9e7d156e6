from tikmix.analysis.evaluation import write_evaluation_tables
from tikmix.report.figures import benefit_improvement_scatter
from tikmix.workflow import script_logging

with script_logging(snakemake) as log:
    p = snakemake.params
    points, stats = write_evaluation_tables(
        snakemake.input.records,
        dict(zip(p.methods, snakemake.input.mixtures, strict=True)),
        snakemake.input.influence,
        table_path=snakemake.output.table,
        summary_path=snakemake.output.summary,
        figure4_path=snakemake.output.figure4,
        figure4_stats_path=snakemake.output.figure4_stats,
        random_mixtures=p.random_mixtures,
        reference=p.reference,
        **p.normalisation,
    )
    benefit_improvement_scatter(
        points,
        stats,
        p.figure_stem,
        title=f"Predicted benefit vs stage-2 improvement (checkpoint {p.checkpoint})",
    )
    log.info("predicted benefit vs measured improvement: %s", stats)
