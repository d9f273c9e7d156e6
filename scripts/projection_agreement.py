from tikmix.analysis.projection_agreement import (
    run_projection_agreement,
    write_projection_agreement,
)
from tikmix.models.stage1 import read_weights
from tikmix.report.figures import projection_agreement_figure
from tikmix.workflow import script_logging

with script_logging(snakemake):
    p = snakemake.params
    table, record = run_projection_agreement(
        checkpoint=snakemake.input.checkpoint,
        prior=read_weights(snakemake.input.prior),
        task_files=dict(zip(p.tasks, snakemake.input.tasks, strict=True)),
        **p.options,
    )
    write_projection_agreement(
        table, record, csv=snakemake.output.table, record_path=snakemake.output.record
    )
    projection_agreement_figure(
        table,
        p.figure_stem,
        title=f"Projected vs unprojected influence at {snakemake.wildcards.ckpt}",
    )
