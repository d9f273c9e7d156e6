from tikmix.influence.pipeline import preconditioned_task_store
from tikmix.workflow import script_logging

with script_logging(snakemake):
    preconditioned_task_store(
        factors=snakemake.input.factors,
        task_stores=dict(zip(snakemake.params.tasks, snakemake.input.tasks, strict=True)),
        damping=snakemake.params.damping,
        damping_factor=snakemake.params.damping_factor,
        out=snakemake.output[0],
    )
