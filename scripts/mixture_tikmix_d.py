from tikmix.mixing.stages import tikmix_d_mixture
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake) as log:
    document = tikmix_d_mixture(
        influence_csv=snakemake.input.influence,
        influence_sidecar=snakemake.input.sidecar,
        prior=snakemake.input.prior,
        availability=snakemake.input.availability,
        out=snakemake.output[0],
        **rule_settings(snakemake),
    )
    log.info("TiKMiX-D: %s", document["weights"])
