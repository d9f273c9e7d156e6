from tikmix.mixing.config_prior import prior_from_config, write_prior
from tikmix.workflow import script_logging

with script_logging(snakemake) as log:
    prior = prior_from_config(
        snakemake.params.spec,
        dict(zip(snakemake.params.domains, snakemake.input.meta, strict=True)),
    )
    write_prior(prior, snakemake.output[0], spec=snakemake.params.spec)
    log.info("prior %s: %s", snakemake.params.spec, prior.round(4).to_dict())
