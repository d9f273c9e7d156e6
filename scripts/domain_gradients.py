from tikmix.influence.pipeline import domain_gradient_part
from tikmix.workflow import script_logging

with script_logging(snakemake):
    domain_gradient_part(
        checkpoint=snakemake.input.checkpoint,
        domain=snakemake.wildcards.domain,
        domain_dir=snakemake.params.domain_dir,
        shard=int(snakemake.wildcards.shard),
        out=snakemake.output[0],
        **{k: snakemake.params[k] for k in snakemake.params.keys() if k != "domain_dir"},
    )
