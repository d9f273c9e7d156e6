from tikmix.mixing.pipeline import tikmix_d_mixture
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake) as log:
    settings = rule_settings(snakemake)
    document = tikmix_d_mixture(
        influence_csv=snakemake.input.influence,
        influence_sidecar=snakemake.input.sidecar,
        prior=snakemake.input.prior,
        domain_meta=dict(zip(settings.pop("domains"), snakemake.input.meta, strict=True)),
        out=snakemake.output[0],
        **settings,
    )
    log.info("TiKMiX-D: %s", document["weights"])
