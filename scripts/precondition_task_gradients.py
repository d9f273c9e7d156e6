from tikmix.influence.stages import precondition_task_gradients
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    settings = rule_settings(snakemake)
    precondition_task_gradients(
        factors=snakemake.input.factors,
        task_stores=dict(zip(settings.pop("tasks"), snakemake.input.tasks, strict=True)),
        out=snakemake.output[0],
        **settings,
    )
