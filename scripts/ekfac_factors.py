from tikmix.influence.pipeline import factors_store
from tikmix.workflow import script_logging

with script_logging(snakemake):
    factors_store(snakemake.input.eigen, list(snakemake.input.parts), snakemake.output[0])
