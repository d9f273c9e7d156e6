from tikmix.influence.stages import ekfac_factors
from tikmix.workflow import script_logging

with script_logging(snakemake):
    ekfac_factors(
        eigen=snakemake.input.eigen, parts=list(snakemake.input.parts), out=snakemake.output[0]
    )
