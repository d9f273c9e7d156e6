from tikmix.mixing.stages import availability_caps
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    availability_caps(
        meta=snakemake.input.meta,
        checkpoint=snakemake.input.checkpoint or None,
        prior=snakemake.input.prior or None,
        out=snakemake.output[0],
        **rule_settings(snakemake),
    )
