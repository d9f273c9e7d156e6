from tikmix.influence.stages import ekfac_domain_lambda
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    ekfac_domain_lambda(
        eigen=snakemake.input.eigen,
        checkpoint=snakemake.input.checkpoint,
        domain=snakemake.wildcards.domain,
        out=snakemake.output[0],
        **rule_settings(snakemake),
    )
