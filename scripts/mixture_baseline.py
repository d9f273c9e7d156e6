from tikmix.mixing.stages import baseline_mixture
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    baseline_mixture(
        method=snakemake.wildcards.baseline,
        meta=snakemake.input.meta,
        availability=snakemake.input.availability,
        influence_csv=snakemake.input.influence,
        out=snakemake.output[0],
        **rule_settings(snakemake),
    )
