from tikmix.mixing.stages import tikmix_m_mixture
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake) as log:
    document = tikmix_m_mixture(
        proposal=snakemake.input.proposal,
        confirmations=list(snakemake.input.confirmations),
        measurements=list(snakemake.input.measurements),
        influence_csv=snakemake.input.influence,
        tikmix_d=snakemake.input.tikmix_d,
        availability=snakemake.input.availability,
        out=snakemake.output[0],
        **rule_settings(snakemake),
    )
    log.info("TiKMiX-M: %s (%s)", document["weights"], document["solver"]["decision"]["reason"])
