from tikmix.report.jobs.projection import projection_agreement_job
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    projection_agreement_job(
        checkpoint=snakemake.input.checkpoint,
        prior=snakemake.input.prior,
        task_files=snakemake.input.tasks,
        table=snakemake.output.table,
        record=snakemake.output.record,
        ckpt=snakemake.wildcards.ckpt,
        **rule_settings(snakemake),
    )
