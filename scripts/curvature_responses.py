from tikmix.influence.mixture_curvature import curvature_response_table
from tikmix.workflow import script_logging

with script_logging(snakemake):
    p = snakemake.params
    curvature_response_table(
        mixtures_csv=snakemake.input.mixtures,
        eigen=snakemake.input.eigen,
        preconditioned=snakemake.input.preconditioned,
        task_stores=dict(zip(p.tasks, snakemake.input.tasks, strict=True)),
        domain_stores=dict(zip(p.domains, snakemake.input.domains, strict=True)),
        domain_lambda_stores=dict(zip(p.domains, snakemake.input.domain_lambdas, strict=True)),
        out=snakemake.output[0],
        count_passes=p.count_passes,
    )
