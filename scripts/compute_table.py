from tikmix.analysis.compute import compute_tables
from tikmix.core.atomic import atomic_output
from tikmix.report.figures import compute_bars
from tikmix.workflow import script_logging

with script_logging(snakemake):
    p = snakemake.params
    summary, components = compute_tables(p.sources, reference=p.reference)
    for table, path in (
        (summary, snakemake.output.summary),
        (components, snakemake.output.components),
    ):
        with atomic_output(path) as tmp:
            table.to_csv(tmp, index=False)
    compute_bars(summary, p.figure_stem, title="Compute spent to determine each mixture")
