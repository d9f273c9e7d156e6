from tikmix.mixing.pipeline import tikmix_m_mixture
from tikmix.workflow import script_logging

with script_logging(snakemake) as log:
    document = tikmix_m_mixture(
        measurements=list(snakemake.input.measurements),
        influence_csv=snakemake.input.influence,
        tikmix_d=snakemake.input.tikmix_d,
        prior=snakemake.input.prior,
        eps=snakemake.params.eps,
        seed=snakemake.params.seed,
        search=snakemake.params.search,
        out=snakemake.output[0],
    )
    log.info("TiKMiX-M: %s", document["weights"])
