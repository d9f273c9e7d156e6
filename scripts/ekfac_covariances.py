from tikmix.influence.stages import ekfac_covariances
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    ekfac_covariances(
        checkpoint=snakemake.input.checkpoint,
        prior=snakemake.input.prior,
        shard=int(snakemake.wildcards.shard),
        out=snakemake.output[0],
        **rule_settings(snakemake),
    )
