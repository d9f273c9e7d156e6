from tikmix.report.markdown import EvaluationFiles, ReportInputs, write_report
from tikmix.workflow import script_logging

with script_logging(snakemake):
    p = snakemake.params
    write_report(
        snakemake.output.report,
        ReportInputs(
            influence=dict(zip(p.checkpoints, snakemake.input.influence, strict=True)),
            checkpoint_dirs=p.checkpoint_dirs,
            mixture_checkpoint=p.mixture_checkpoint,
            mixtures=dict(zip(p.methods, snakemake.input.mixtures, strict=True)),
            # No summary when the check is switched off: an empty mapping.
            additivity=dict(zip([p.mixture_checkpoint], snakemake.input.additivity, strict=False)),
            ranking=snakemake.input.ranking[0] if snakemake.input.ranking else None,
            compute=snakemake.input.compute,
            compute_components=snakemake.input.compute_components,
            figures=p.figures,
            stage1_metrics=p.stage1_metrics,
            evaluation=EvaluationFiles(**p.evaluation) if p.evaluation else None,
            projection=snakemake.input.projection[0] if snakemake.input.projection else None,
        ),
    )
