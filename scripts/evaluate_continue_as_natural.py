from tikmix.models.stage2 import records_of_the_same_mixture
from tikmix.workflow import script_logging

with script_logging(snakemake):
    records_of_the_same_mixture(
        method="continue",
        mixture_path=snakemake.input.mixture,
        source_mixture_path=snakemake.input.natural,
        source_records=snakemake.input.records,
        out_paths=list(snakemake.output),
    )
