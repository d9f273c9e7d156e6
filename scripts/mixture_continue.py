from tikmix.mixing.stages import continue_mixture
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    continue_mixture(
        source=snakemake.input.source,
        availability=snakemake.input.availability,
        influence_csv=snakemake.input.influence,
        out=snakemake.output[0],
        **rule_settings(snakemake),
    )
