from tikmix.influence.stages import ekfac_eigen
from tikmix.workflow import script_logging

with script_logging(snakemake):
    ekfac_eigen(parts=list(snakemake.input.parts), out=snakemake.output[0])
