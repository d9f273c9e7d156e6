from tikmix.mixing.pipeline import baseline_mixture
from tikmix.workflow import script_logging

with script_logging(snakemake):
    baseline_mixture(
        snakemake.wildcards.baseline,
        dict(zip(snakemake.params.domains, snakemake.input.meta, strict=True)),
        snakemake.output[0],
        influence_csv=snakemake.input.influence,
        **snakemake.params.normalisation,
    )
