from tikmix.analysis.evaluation import write_random_mixture
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    write_random_mixture(
        snakemake.output[0],
        index=int(snakemake.wildcards.k),
        influence_csv=snakemake.input.influence,
        availability=snakemake.input.availability,
        **rule_settings(snakemake),
    )
