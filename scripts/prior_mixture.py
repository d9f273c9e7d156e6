from tikmix.core.mixture import write_mixture
from tikmix.mixing.priors import build_prior, domain_tokens, prior_document
from tikmix.workflow import script_logging

with script_logging(snakemake) as log:
    meta = dict(zip(snakemake.params.domains, snakemake.input.meta, strict=True))
    prior = build_prior(snakemake.params.spec, list(meta), domain_tokens(meta))
    write_mixture(snakemake.output[0], prior_document(prior, snakemake.params.spec))
    log.info("prior %s: %s", snakemake.params.spec, prior.round(4).to_dict())
