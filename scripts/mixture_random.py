from tikmix.analysis.evaluation import write_random_mixture
from tikmix.workflow import script_logging

with script_logging(snakemake):
    write_random_mixture(
        snakemake.output[0],
        snakemake.params.domains,
        seed=snakemake.params.seed,
        index=int(snakemake.wildcards.k),
        influence_csv=snakemake.input.influence,
        **snakemake.params.normalisation,
    )
