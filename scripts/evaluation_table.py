from tikmix.report.jobs.evaluation import evaluation_table_job
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    evaluation_table_job(
        records=snakemake.input.records,
        mixtures=snakemake.input.mixtures,
        influence=snakemake.input.influence,
        table=snakemake.output.table,
        summary=snakemake.output.summary,
        figure4=snakemake.output.figure4,
        figure4_stats=snakemake.output.figure4_stats,
        paired=snakemake.output.paired,
        paired_stats=snakemake.output.paired_stats,
        **rule_settings(snakemake),
    )
