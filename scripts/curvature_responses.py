from tikmix.influence.stages import curvature_responses
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    settings = rule_settings(snakemake)
    tasks, domains = settings.pop("tasks"), settings.pop("domains")
    curvature_responses(
        mixtures_csv=snakemake.input.mixtures,
        eigen=snakemake.input.eigen,
        preconditioned=snakemake.input.preconditioned,
        task_stores=dict(zip(tasks, snakemake.input.tasks, strict=True)),
        domain_stores=dict(zip(domains, snakemake.input.domains, strict=True)),
        domain_lambda_stores=dict(zip(domains, snakemake.input.domain_lambdas, strict=True)),
        out=snakemake.output[0],
        **settings,
    )
