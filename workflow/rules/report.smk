# The paper-style report: mixture figures, compute accounting, and results/report/report.md.
# The mixtures the report and its figures compare: a mixtures-only study (stage2.methods: [])
# shows the workflow's own mixtures.

REPORT_METHODS = STAGE2_METHODS or MIXTURE_METHODS
RANKING_CHECK = config["checks"]["ranking"]


COMPUTE_SOURCES = compute_sources(EVAL_CKPT, REPORT_METHODS)
if "tikmix_c" in COMPUTE_SOURCES:
    COMPUTE_SOURCES["tikmix_c"] = TIKMIX_C_COMPUTE  # calibrate.smk
# The recommendation's pilot training (recommend.smk) is a cost of the study's decision.
if PILOTED:
    COMPUTE_SOURCES["recommendation"] = {
        "pilot training": expand(PILOT_RECORD, method=PILOTED, seed=PILOT_SEEDS)
    }
MIXTURE_FIGURES = {
    "weights": f"{FIGURES}/mixture_weights_{{ckpt}}",
    "benefit": f"{FIGURES}/predicted_benefit_{{ckpt}}",
}
COMPUTE_STEM = f"{FIGURES}/compute"


# The stage-2 files report.md reads (none when no method is evaluated).
REPORT_EVALUATION_KEYS = list(EVALUATION_FILES) if STAGE2_METHODS else []
REPORT_EVALUATION_FIGURES = [f"{EVALUATION_FIGURE_STEM}.png"] if STAGE2_METHODS else []


# The checks report.md reads: each switched off in the config is absent (the report says so).
REPORT_ADDITIVITY = (
    [f"results/checks/{EVAL_CKPT}/additivity_summary.csv"]
    if ADDITIVITY["enabled"]
    else []
)
REPORT_RANKING = ["results/checks/ranking.csv"] if RANKING_CHECK["enabled"] else []


rule mixture_figures:
    input:
        influence="results/influence/{ckpt}/influence.csv",
        mixtures=expand(
            "results/mixtures/{{ckpt}}/{method}.json", method=REPORT_METHODS
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
    log:
        "logs/mixture_figures/{ckpt}.log",
    benchmark:
        "benchmarks/rules/mixture_figures/{ckpt}.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        upstream=user_inputs_digest("mixture_figures"),
        methods=REPORT_METHODS,
        weights_stem=lambda wildcards: MIXTURE_FIGURES["weights"].format(
            ckpt=wildcards.ckpt
        ),
        benefit_stem=lambda wildcards: MIXTURE_FIGURES["benefit"].format(
            ckpt=wildcards.ckpt
        ),
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
        components=report(
            "results/checks/compute_components.csv",
            caption="../report/compute_components.rst",
            category="Compute",
        ),
        figure=report(
            f"{COMPUTE_STEM}.png", caption="../report/compute.rst", category="Compute"
        ),
        pdf=f"{COMPUTE_STEM}.pdf",
    log:
        "logs/compute_table/compute_table.log",
    benchmark:
        "benchmarks/rules/compute_table/compute_table.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        upstream=user_inputs_digest("compute_table"),
        sources=COMPUTE_SOURCES,
        reference="regmix",
        figure_stem=lambda wildcards, output: output.figure.removesuffix(".png"),
    script:
        script_path("compute_table.py")


rule report:
    input:
        influence=expand("results/influence/{ckpt}/influence.csv", ckpt=CHECKPOINTS),
        checkpoints=[checkpoint_dir(ckpt) for ckpt in CHECKPOINTS],
        mixtures=expand(
            "results/mixtures/{ckpt}/{method}.json",
            ckpt=EVAL_CKPT,
            method=REPORT_METHODS,
        ),
        additivity=REPORT_ADDITIVITY,
        ranking=REPORT_RANKING,
        projection=projection_check_targets(),
        compute="results/checks/compute.csv",
        compute_components="results/checks/compute_components.csv",
        task_splits=list(TASK_SPLITS.values()),
        figures=[path for paths in report_figures().values() for path in paths],
        evaluation=[EVALUATION_FILES[key] for key in REPORT_EVALUATION_KEYS],
        evaluation_figure=REPORT_EVALUATION_FIGURES,
        metrics=[] if USER_CHECKPOINTS else ["results/stage1/metrics.json"],
        recommendation=RECOMMENDATION_FILES["recommendation"],
        code=code("report.py"),
    output:
        report=report(
            "results/report/report.md",
            caption="../report/report.rst",
            category="Report",
        ),
    log:
        "logs/report/report.log",
    benchmark:
        "benchmarks/rules/report/report.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        upstream=user_inputs_digest("report"),
        tasks=TASKS,
        checkpoints=CHECKPOINTS,
        checkpoint_dirs={ckpt: checkpoint_dir(ckpt) for ckpt in CHECKPOINTS},
        mixture_checkpoint=EVAL_CKPT,
        methods=REPORT_METHODS,
        figures={**report_figures(), "evaluation": REPORT_EVALUATION_FIGURES},
        stage1_metrics=lambda wildcards, input: (
            input.metrics[0] if input.metrics else None
        ),
        evaluation=lambda wildcards, input: dict(
            zip(REPORT_EVALUATION_KEYS, input.evaluation, strict=True)
        ),
    script:
        script_path("report.py")
