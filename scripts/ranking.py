from tikmix.report.jobs.ranking import ranking_job
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    ranking_job(
        influence=snakemake.input.influence,
        stability=snakemake.output.stability,
        trajectories=snakemake.output.trajectories,
        **rule_settings(snakemake),
    )
