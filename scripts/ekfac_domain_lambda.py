from tikmix.influence.mixture_curvature import domain_lambda_store
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    domain_lambda_store(
        eigen=snakemake.input.eigen,
        checkpoint=snakemake.input.checkpoint,
        domain=snakemake.wildcards.domain,
        out=snakemake.output[0],
        **rule_settings(snakemake),
    )
