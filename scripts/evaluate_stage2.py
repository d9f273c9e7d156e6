from tikmix.models.stage2 import run_stage2_seeds
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    run_stage2_seeds(
        method=snakemake.wildcards.method,
        mixture_path=snakemake.input.mixture,
        checkpoint_dir=snakemake.input.checkpoint,
        before=snakemake.input.before,
        out_paths=list(snakemake.output),
        **rule_settings(snakemake),
    )
