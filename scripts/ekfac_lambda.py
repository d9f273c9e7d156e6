from tikmix.influence.stages import ekfac_lambda
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    ekfac_lambda(
        eigen=snakemake.input.eigen,
        checkpoint=snakemake.input.checkpoint,
        prior=snakemake.input.prior,
        shard=int(snakemake.wildcards.shard),
        out=snakemake.output[0],
        **rule_settings(snakemake),
    )
