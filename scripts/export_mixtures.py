from pathlib import Path

from tikmix.mixing.pipeline import export_mixture
from tikmix.workflow import script_logging

with script_logging(snakemake):
    documents = dict(zip(snakemake.params.methods, snakemake.input.documents, strict=True))
    for out in snakemake.output:
        method, _, suffix = Path(out).name.partition(".")
        export_mixture(
            documents[method], out, suffix.removesuffix(".txt"), snakemake.params.prefixes
        )
