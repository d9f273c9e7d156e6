from tikmix.models.stage2 import run_stage2
from tikmix.workflow import script_logging

with script_logging(snakemake):
    run_stage2(
        method=snakemake.wildcards.method,
        mixture_path=snakemake.input.mixture,
        checkpoint_dir=snakemake.input.checkpoint,
        domain_dirs=snakemake.params.domain_dirs,
        task_files=snakemake.params.task_files,
        stage2=snakemake.params.stage2,
        seq_len=snakemake.params.seq_len,
        seed=int(snakemake.wildcards.seed),
        out_path=snakemake.output[0],
        device=snakemake.params.device,
    )
