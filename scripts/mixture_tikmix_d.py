from tikmix.mixing.pipeline import tikmix_d_mixture
from tikmix.workflow import script_logging

with script_logging(snakemake) as log:
    document = tikmix_d_mixture(
        influence_csv=snakemake.input.influence,
        influence_sidecar=snakemake.input.sidecar,
        prior=snakemake.input.prior,
        domain_meta=dict(zip(snakemake.params.domains, snakemake.input.meta, strict=True)),
        alpha=snakemake.params.alpha,
        beta=snakemake.params.beta,
        gamma=snakemake.params.gamma,
        eps=snakemake.params.eps,
        normaliser=snakemake.params.normaliser,
        max_epochs=snakemake.params.max_epochs,
        stage_tokens=snakemake.params.stage_tokens,
        out=snakemake.output[0],
    )
    log.info("TiKMiX-D: %s", document["weights"])
