from tikmix.analysis.additivity import run_additivity_check, write_additivity
from tikmix.report.figures import additivity_figures
from tikmix.workflow import script_logging

with script_logging(snakemake):
    p = snakemake.params
    options = dict(
        n_mixtures=p.mixtures,
        low=p.low,
        high=p.high,
        tokens=p.tokens,
        seq_len=p.seq_len,
        batch_size=p.batch_size,
        seed=p.seed,
        outlier_threshold=p.outlier_threshold,
        noise_mixtures=p.noise["mixtures"],
        noise_replicates=p.noise["replicates"],
        projection=p.projection,
        precision=p.precision,
    )
    result = run_additivity_check(
        checkpoint=snakemake.input.checkpoint,
        domain_dirs=p.domain_dirs,
        influence_csv=snakemake.input.influence,
        reference_mixture=snakemake.input.reference,
        preconditioned=snakemake.input.preconditioned,
        tracked_modules=p.tracked_modules,
        device=p.device,
        **options,
    )
    write_additivity(
        result,
        points=snakemake.output.points,
        summary=snakemake.output.summary,
        mixtures=snakemake.output.mixtures,
        record=snakemake.output.record,
        settings=options,
    )
    additivity_figures(
        result.points,
        result.summary,
        dict(zip(p.tasks, p.figure_stems, strict=True)),
        checkpoint=snakemake.wildcards.ckpt,
    )
