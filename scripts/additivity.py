from tikmix.report.jobs.additivity import additivity_job
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    additivity_job(
        checkpoint=snakemake.input.checkpoint,
        influence=snakemake.input.influence,
        reference=snakemake.input.reference,
        preconditioned=snakemake.input.preconditioned,
        points=snakemake.output.points,
        summary=snakemake.output.summary,
        mixtures_table=snakemake.output.mixtures,
        record=snakemake.output.record,
        ckpt=snakemake.wildcards.ckpt,
        **rule_settings(snakemake),
    )
