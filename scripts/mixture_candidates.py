from tikmix.mixing.pipeline import tikmix_m_candidates
from tikmix.workflow import script_logging

with script_logging(snakemake):
    tikmix_m_candidates(
        prior=snakemake.input.prior,
        n=snakemake.params.n,
        low=snakemake.params.low,
        high=snakemake.params.high,
        seed=snakemake.params.seed,
        out=snakemake.output[0],
    )
