from tikmix.analysis.recommendation import recommendation_job
from tikmix.workflow import script_logging

with script_logging(snakemake):
    recommendation_job(
        mixtures=dict(zip(snakemake.params.candidates, snakemake.input.mixtures, strict=True)),
        records=list(snakemake.input.records),
        tikmix_m=snakemake.input.tikmix_m or None,
        out=snakemake.output.recommendation,
        table=snakemake.output.table,
    )
