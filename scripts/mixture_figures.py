from tikmix.report.jobs.mixtures import mixture_figures_job
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    mixture_figures_job(
        influence=snakemake.input.influence,
        mixtures=snakemake.input.mixtures,
        ckpt=snakemake.wildcards.ckpt,
        **rule_settings(snakemake),
    )
