from tikmix.influence.stages import task_gradients
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    task_gradients(
        checkpoint=snakemake.input.checkpoint,
        task=snakemake.wildcards.task,
        task_file=snakemake.input.task,
        out=snakemake.output[0],
        **rule_settings(snakemake),
    )
