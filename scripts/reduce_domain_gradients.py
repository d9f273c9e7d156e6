from tikmix.influence.stages import reduce_domain_gradients
from tikmix.workflow import script_logging

with script_logging(snakemake):
    reduce_domain_gradients(parts=list(snakemake.input.parts), out=snakemake.output[0])
