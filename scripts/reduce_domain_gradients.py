from tikmix.influence.pipeline import reduce_domain_gradients
from tikmix.workflow import script_logging

with script_logging(snakemake):
    reduce_domain_gradients(list(snakemake.input.parts), snakemake.output[0])
