from tikmix.mixing.stages import tikmix_m_candidates
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    tikmix_m_candidates(
        tikmix_d=snakemake.input.tikmix_d,
        availability=snakemake.input.availability,
        influence_csv=snakemake.input.influence,
        prior=snakemake.input.prior,
        out=snakemake.output[0],
        **rule_settings(snakemake),
    )
