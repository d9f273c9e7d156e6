from tikmix.mixing.stages import tikmix_c_mixture
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    tikmix_c_mixture(
        influence_csv=snakemake.input.influence,
        influence_sidecar=snakemake.input.sidecar,
        continue_mixture=snakemake.input.continue_mixture,
        availability=snakemake.input.availability,
        rollout_mixtures=list(snakemake.input.rollout_mixtures),
        rollout_runs=list(snakemake.input.rollout_runs),
        continue_run=snakemake.input.continue_run,
        out=snakemake.output[0],
        **rule_settings(snakemake),
    )
