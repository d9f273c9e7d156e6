from tikmix.models.stage2 import evaluate_checkpoint
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    evaluate_checkpoint(
        checkpoint_dir=snakemake.input.checkpoint,
        out_path=snakemake.output[0],
        **rule_settings(snakemake),
    )
