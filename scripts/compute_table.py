from tikmix.report.jobs.compute import compute_table_job
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    compute_table_job(
        summary=snakemake.output.summary,
        components=snakemake.output.components,
        **rule_settings(snakemake),
    )
