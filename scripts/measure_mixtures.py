from tikmix.influence.stages import measure_mixtures
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    measure_mixtures(
        checkpoint=snakemake.input.checkpoint,
        preconditioned=snakemake.input.preconditioned,
        mixtures_csv=snakemake.input.mixtures,
        design=snakemake.wildcards.design,
        shard=int(snakemake.wildcards.shard),
        out=snakemake.output[0],
        **rule_settings(snakemake),
    )
