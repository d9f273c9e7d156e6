from tikmix.influence.pipeline import eigen_store
from tikmix.workflow import script_logging

with script_logging(snakemake):
    eigen_store(list(snakemake.input.parts), snakemake.output[0])
