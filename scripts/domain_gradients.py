from tikmix.influence.pipeline import domain_gradient_part
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    domain_gradient_part(
        checkpoint=snakemake.input.checkpoint,
        domain=snakemake.wildcards.domain,
        domain_dir=snakemake.params.domain_dir,
        shard=int(snakemake.wildcards.shard),
        out=snakemake.output[0],
        **{k: v for k, v in rule_settings(snakemake).items() if k != "domain_dir"},
    )
