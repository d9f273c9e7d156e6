from tikmix.mixing.stages import tikmix_c_rollout_mixtures
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    tikmix_c_rollout_mixtures(
        continue_mixture=snakemake.input.continue_mixture,
        availability=snakemake.input.availability,
        out_paths=list(snakemake.output),
        **rule_settings(snakemake),
    )
