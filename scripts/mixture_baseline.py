from tikmix.mixing.pipeline import baseline_mixture
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    settings = rule_settings(snakemake)
    baseline_mixture(
        method=snakemake.wildcards.baseline,
        domain_meta=dict(zip(settings.pop("domains"), snakemake.input.meta, strict=True)),
        influence_csv=snakemake.input.influence,
        out=snakemake.output[0],
        **settings,
    )
