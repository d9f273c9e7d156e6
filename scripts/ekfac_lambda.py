from tikmix.influence.pipeline import lambda_part
from tikmix.models.stage1 import read_weights
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    lambda_part(
        eigen=snakemake.input.eigen,
        checkpoint=snakemake.input.checkpoint,
        weights=read_weights(snakemake.input.prior),
        shard=int(snakemake.wildcards.shard),
        out=snakemake.output[0],
        **rule_settings(snakemake),
    )
