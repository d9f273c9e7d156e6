from tikmix.analysis.evaluation import write_evaluation_tables
from tikmix.workflow import script_logging

with script_logging(snakemake) as log:
    stats = write_evaluation_tables(
        snakemake.input.records,
        dict(zip(snakemake.params.methods, snakemake.input.mixtures, strict=True)),
        snakemake.input.influence,
        table_path=snakemake.output.table,
        summary_path=snakemake.output.summary,
        figure4_path=snakemake.output.figure4,
        figure4_stats_path=snakemake.output.figure4_stats,
        reference=snakemake.params.reference,
    )
    log.info("predicted benefit vs measured improvement: %s", stats)
