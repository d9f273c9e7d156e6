from tikmix.mixing.stages import tikmix_m_search
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake) as log:
    document = tikmix_m_search(
        measurements=list(snakemake.input.measurements),
        influence_csv=snakemake.input.influence,
        tikmix_d=snakemake.input.tikmix_d,
        availability=snakemake.input.availability,
        prior=snakemake.input.prior,
        out_mixtures=snakemake.output.mixtures,
        out_proposal=snakemake.output.proposal,
        **rule_settings(snakemake),
    )
    log.info("TiKMiX-M gate: %s", document["gate_reason"])
