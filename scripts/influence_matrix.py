from tikmix.influence.stages import influence_matrix
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake) as log:
    settings = rule_settings(snakemake)
    matrix = influence_matrix(
        preconditioned=snakemake.input.preconditioned,
        domain_stores=dict(zip(settings.pop("domains"), snakemake.input.domains, strict=True)),
        matrix_csv=snakemake.output.matrix,
        sidecar_json=snakemake.output.sidecar,
        per_module_parquet=snakemake.output.per_module,
        **settings,
    )
    log.info("benefit matrix (larger is better):\n%s", matrix.round(5).to_string())
