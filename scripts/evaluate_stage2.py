from tikmix.models.stage2 import read_checkpoint_task_metrics, run_stage2_seeds
from tikmix.workflow import script_logging

with script_logging(snakemake):
    run_stage2_seeds(
        method=snakemake.wildcards.method,
        mixture_path=snakemake.input.mixture,
        checkpoint_dir=snakemake.input.checkpoint,
        domain_dirs=snakemake.params.domain_dirs,
        task_files=snakemake.params.task_files,
        stage2=snakemake.params.stage2,
        seq_len=snakemake.params.seq_len,
        seeds=snakemake.params.seeds,
        out_paths=list(snakemake.output),
        device=snakemake.params.device,
        before=read_checkpoint_task_metrics(snakemake.input.before),
    )
