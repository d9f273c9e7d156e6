from tikmix.mixing.weights import read_influence_matrix
from tikmix.report.figures import mixture_figures
from tikmix.workflow import script_logging

with script_logging(snakemake):
    p = snakemake.params
    mixture_figures(
        read_influence_matrix(snakemake.input.influence),
        dict(zip(p.methods, snakemake.input.mixtures, strict=True)),
        weights_stem=p.weights_stem,
        benefit_stem=p.benefit_stem,
        checkpoint=snakemake.wildcards.ckpt,
    )
