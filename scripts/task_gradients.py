from tikmix.influence.pipeline import task_gradient_store
from tikmix.workflow import script_logging

with script_logging(snakemake):
    task_gradient_store(
        checkpoint=snakemake.input.checkpoint,
        task=snakemake.wildcards.task,
        task_file=snakemake.input.task,
        batch_size=snakemake.params.batch_size,
        tracked_modules=snakemake.params.tracked_modules,
        device=snakemake.params.device,
        projection=snakemake.params.projection,
        precision=snakemake.params.precision,
        out=snakemake.output[0],
    )
