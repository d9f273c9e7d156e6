from tikmix.influence.pipeline import influence_outputs
from tikmix.workflow import script_logging

with script_logging(snakemake) as log:
    matrix = influence_outputs(
        preconditioned=snakemake.input.preconditioned,
        domain_stores=dict(zip(snakemake.params.domains, snakemake.input.domains, strict=True)),
        matrix_csv=snakemake.output.matrix,
        sidecar_json=snakemake.output.sidecar,
        per_module_parquet=snakemake.output.per_module,
    )
    log.info("benefit matrix (larger is better):\n%s", matrix.round(5).to_string())
