from tikmix.mixing.stages import prior_mixture
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    prior_mixture(meta=snakemake.input.meta, out=snakemake.output[0], **rule_settings(snakemake))
