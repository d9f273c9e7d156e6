from tikmix.models.stage1 import run_stage1
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    run_stage1(
        prior_path=snakemake.input.prior,
        tokenizer_path=snakemake.input.tokenizer,
        checkpoint_dirs=snakemake.output.checkpoints,
        metrics_path=snakemake.output.metrics,
        **rule_settings(snakemake),
    )
