from tikmix.core.atomic import write_json_atomic
from tikmix.models.stage2 import checkpoint_task_metrics
from tikmix.workflow import script_logging

with script_logging(snakemake):
    write_json_atomic(
        snakemake.output[0],
        checkpoint_task_metrics(
            snakemake.input.checkpoint,
            snakemake.params.task_files,
            snakemake.params.eval_batch_size,
            device=snakemake.params.device,
        ),
    )
