# The paper-style report: mixture figures, compute accounting, and results/report/report.md.

# --- to move into common.smk ---
# The influence pipeline's job outputs whose `compute` records make up TiKMiX-D's cost at a
# checkpoint (pure reductions add arrays and are not counted).
def influence_compute_sources(ckpt):
    base = f"results/influence/{ckpt}"
    return {
        "domain gradients": expand(
            base + "/grads/{domain}/part-{shard}.zarr",
            domain=DOMAINS,
            shard=range(INFLUENCE["shards_per_domain"]),
        ),
        "task gradients": expand(base + "/task_grads/{task}.zarr", task=TASKS),
        "EK-FAC": expand(base + "/ekfac/covariances/part-{shard}.zarr", shard=EKFAC_SHARDS)
        + [base + "/ekfac/eigen.zarr"]
        + expand(base + "/ekfac/lambda/part-{shard}.zarr", shard=EKFAC_SHARDS),
        "preconditioning": [base + "/preconditioned_tasks.zarr"],
        "influence matrix": [base + "/influence.json"],
    }


def compute_sources(ckpt, methods):
    """method -> component -> job outputs: TiKMiX-M = TiKMiX-D's components + its own."""
    influence = influence_compute_sources(ckpt)
    mixture = lambda method: [f"results/mixtures/{ckpt}/{method}.json"]
    sources = {}
    for method in methods:
        if method == "tikmix_d":
            sources[method] = {**influence, "TiKMiX-D solve": mixture("tikmix_d")}
        elif method == "tikmix_m":
            sources[method] = {
                **influence,
                "TiKMiX-D solve": mixture("tikmix_d"),
                "TiKMiX-M measurements and search": mixture("tikmix_m"),
            }
        else:
            sources[method] = {method: mixture(method)}
    return sources


COMPUTE_SOURCES = compute_sources(EVAL_CKPT, STAGE2_METHODS)
MIXTURE_FIGURES = {
    "weights": f"{FIGURES}/mixture_weights_{{ckpt}}",
    "benefit": f"{FIGURES}/predicted_benefit_{{ckpt}}",
}
COMPUTE_STEM = f"{FIGURES}/compute"
EVALUATION_TABLE = "results/evaluation/table.csv"


def report_figures():
    """Section of report.md -> the PNG figures shown in it."""
    fill = lambda stem: stem.format(ckpt=EVAL_CKPT) + ".png"
    return {
        "influence": [f"{stem}.png" for stem in heatmap_stems()],
        "mixtures": [fill(MIXTURE_FIGURES["weights"]), fill(MIXTURE_FIGURES["benefit"])],
        "additivity": [f"{stem}.png" for stem in additivity_stems(EVAL_CKPT)],
        "ranking": [f"{TRAJECTORIES_STEM}.png"],
        "compute": [f"{COMPUTE_STEM}.png"],
    }


# --- end of block ---


rule mixture_figures:
    input:
        influence="results/influence/{ckpt}/influence.csv",
        mixtures=expand(
            "results/mixtures/{{ckpt}}/{method}.json", method=STAGE2_METHODS
        ),
        code=code("mixture_figures.py"),
    output:
        weights=report(
            MIXTURE_FIGURES["weights"] + ".png",
            caption="../report/mixture_weights.rst",
            category="Mixtures",
            subcategory="{ckpt}",
        ),
        benefit=report(
            MIXTURE_FIGURES["benefit"] + ".png",
            caption="../report/predicted_benefit.rst",
            category="Mixtures",
            subcategory="{ckpt}",
        ),
        pdfs=[MIXTURE_FIGURES["weights"] + ".pdf", MIXTURE_FIGURES["benefit"] + ".pdf"],
    params:
        methods=STAGE2_METHODS,
        weights_stem=lambda wildcards: MIXTURE_FIGURES["weights"].format(ckpt=wildcards.ckpt),
        benefit_stem=lambda wildcards: MIXTURE_FIGURES["benefit"].format(ckpt=wildcards.ckpt),
    log:
        "logs/mixture_figures/{ckpt}.log",
    benchmark:
        "benchmarks/rules/mixture_figures/{ckpt}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        script_path("mixture_figures.py")


rule compute_table:
    input:
        records=sorted(
            {
                path
                for components in COMPUTE_SOURCES.values()
                for paths in components.values()
                for path in paths
            }
        ),
        code=code("compute_table.py"),
    output:
        summary=report(
            "results/checks/compute.csv",
            caption="../report/compute.rst",
            category="Compute",
        ),
        components="results/checks/compute_components.csv",
        figure=report(
            f"{COMPUTE_STEM}.png", caption="../report/compute.rst", category="Compute"
        ),
        pdf=f"{COMPUTE_STEM}.pdf",
    params:
        sources=COMPUTE_SOURCES,
        reference="regmix",
        figure_stem=COMPUTE_STEM,
    log:
        "logs/compute_table/compute_table.log",
    benchmark:
        "benchmarks/rules/compute_table/compute_table.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        script_path("compute_table.py")


rule report:
    input:
        influence=expand("results/influence/{ckpt}/influence.csv", ckpt=CHECKPOINTS),
        checkpoints=[checkpoint_dir(ckpt) for ckpt in CHECKPOINTS],
        mixtures=expand(
            "results/mixtures/{ckpt}/{method}.json", ckpt=EVAL_CKPT, method=STAGE2_METHODS
        ),
        additivity=f"results/checks/{EVAL_CKPT}/additivity_summary.csv",
        ranking="results/checks/ranking.csv",
        compute="results/checks/compute.csv",
        compute_components="results/checks/compute_components.csv",
        figures=[path for paths in report_figures().values() for path in paths],
        evaluation=[EVALUATION_TABLE] if STAGE2_METHODS else [],
        metrics=[] if USER_CHECKPOINTS else ["results/stage1/metrics.json"],
        code=code("report.py"),
    output:
        report=report(
            "results/report/report.md",
            caption="../report/report.rst",
            category="Report",
        ),
    params:
        checkpoints=CHECKPOINTS,
        checkpoint_dirs={ckpt: checkpoint_dir(ckpt) for ckpt in CHECKPOINTS},
        mixture_checkpoint=EVAL_CKPT,
        methods=STAGE2_METHODS,
        figures=report_figures(),
        stage1_metrics=None if USER_CHECKPOINTS else "results/stage1/metrics.json",
        evaluation=EVALUATION_TABLE if STAGE2_METHODS else None,
    log:
        "logs/report/report.log",
    benchmark:
        "benchmarks/rules/report/report.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        script_path("report.py")
