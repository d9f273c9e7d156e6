from tikmix.report.markdown import report_job
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    report_job(
        report=snakemake.output.report,
        influence=snakemake.input.influence,
        mixtures=snakemake.input.mixtures,
        additivity=snakemake.input.additivity,
        ranking=snakemake.input.ranking,
        projection=snakemake.input.projection,
        compute=snakemake.input.compute,
        compute_components=snakemake.input.compute_components,
        task_splits=snakemake.input.task_splits,
        recommendation=snakemake.input.recommendation,
        **rule_settings(snakemake),
    )
