from tikmix.influence.stages import domain_gradients
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    domain_gradients(
        checkpoint=snakemake.input.checkpoint,
        domain=snakemake.wildcards.domain,
        shard=int(snakemake.wildcards.shard),
        out=snakemake.output[0],
        **rule_settings(snakemake),
    )
