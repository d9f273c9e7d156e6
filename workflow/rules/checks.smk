# Assumption checks (paper appendix D and sec. 1): additivity of group influence around TiKMiX-D's
# mixture, the stability of the domains' benefit rankings over training, and (for the scale
# option) whether gradient projection preserves the benefit rankings.

from tikmix.core.settings import AdditivitySettings


rule additivity:
    input:
        checkpoint=lambda wildcards: checkpoint_dir(wildcards.ckpt),
        streams=domain_files("train"),
        influence="results/influence/{ckpt}/influence.csv",
        preconditioned="results/influence/{ckpt}/preconditioned_tasks.zarr",
        reference="results/mixtures/{ckpt}/tikmix_d.json",
        code=code("additivity.py"),
    output:
        points="results/checks/{ckpt}/additivity.csv",
        summary=report(
            "results/checks/{ckpt}/additivity_summary.csv",
            caption="../report/additivity.rst",
            category="Checks",
            subcategory="Additivity",
        ),
        mixtures="results/checks/{ckpt}/additivity_mixtures.csv",
        record="results/checks/{ckpt}/additivity.json",
        figures=[
            report(
                path,
                caption="../report/additivity_figure.rst",
                category="Checks",
                subcategory="Additivity",
            )
            for path in [f"{stem}.png" for stem in additivity_stems("{ckpt}")]
        ],
        pdfs=[f"{stem}.pdf" for stem in additivity_stems("{ckpt}")],
    log:
        "logs/additivity/{ckpt}.log",
    benchmark:
        "benchmarks/rules/additivity/{ckpt}.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=RESOURCES.mem_mb("additivity"),
        runtime=RESOURCES.runtime("additivity"),
    params:
        upstream=user_inputs_digest("additivity"),
        domain_dirs={domain: domain_dir(domain) for domain in DOMAINS},
        tasks=TASKS,
        figure_stems=lambda wildcards: additivity_stems(wildcards.ckpt),
        gradient_pass=GRADIENT_PASS,
        additivity_settings=AdditivitySettings.from_config(config).as_params(),
    script:
        script_path("additivity.py")


rule ranking:
    input:
        influence=expand("results/influence/{ckpt}/influence.csv", ckpt=CHECKPOINTS),
        checkpoints=[checkpoint_dir(ckpt) for ckpt in CHECKPOINTS],
        code=code("ranking.py"),
    output:
        stability=report(
            "results/checks/ranking.csv",
            caption="../report/ranking.rst",
            category="Checks",
            subcategory="Ranking invariance",
        ),
        trajectories="results/checks/benefit_trajectories.csv",
        figures=[
            report(
                f"{TRAJECTORIES_STEM}.png",
                caption="../report/benefit_trajectories.rst",
                category="Checks",
                subcategory="Ranking invariance",
            ),
            f"{TRAJECTORIES_STEM}.pdf",
        ],
        heatmaps=[
            report(
                f"{stem}.png",
                caption="../report/influence_heatmap.rst",
                category="Influence",
                subcategory="Heatmaps",
            )
            for stem in heatmap_stems()
        ],
        heatmap_pdfs=[f"{stem}.pdf" for stem in heatmap_stems()],
    log:
        "logs/ranking/ranking.log",
    benchmark:
        "benchmarks/rules/ranking/ranking.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        upstream=user_inputs_digest("ranking"),
        checkpoints=CHECKPOINTS,
        checkpoint_dirs={ckpt: checkpoint_dir(ckpt) for ckpt in CHECKPOINTS},
        trajectories_stem=lambda wildcards, output: output.figures[0].removesuffix(
            ".png"
        ),
        heatmap_stems=heatmap_stems(),
    script:
        script_path("ranking.py")


rule projection_agreement:
    input:
        checkpoint=lambda wildcards: checkpoint_dir(wildcards.ckpt),
        streams=domain_files("train"),
        tasks=list(STEERING_TASK_FILES.values()),
        prior="results/mixtures/prior.json",
        code=code("projection_agreement.py"),
    output:
        table=report(
            "results/checks/{ckpt}/projection_agreement.csv",
            caption="../report/projection_agreement.rst",
            category="Checks",
            subcategory="Gradient projection",
        ),
        record="results/checks/{ckpt}/projection_agreement.json",
        figure=report(
            f"{PROJECTION_STEM}.png",
            caption="../report/projection_agreement.rst",
            category="Checks",
            subcategory="Gradient projection",
        ),
        pdf=f"{PROJECTION_STEM}.pdf",
    log:
        "logs/projection_agreement/{ckpt}.log",
    benchmark:
        "benchmarks/rules/projection_agreement/{ckpt}.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
    params:
        upstream=user_inputs_digest("projection_agreement"),
        tasks=TASKS,
        figure_stem=lambda wildcards, output: output.figure.removesuffix(".png"),
        gradient_pass=GRADIENT_PASS,
        domain_dirs={domain: domain_dir(domain) for domain in DOMAINS},
        ranks=PROJECTION_CHECK["ranks"],
        tokens_per_domain=PROJECTION_CHECK["tokens_per_domain"],
        fit_tokens=PROJECTION_CHECK["fit_tokens"],
        fisher=INFLUENCE["ekfac"]["fisher"],
    script:
        script_path("projection_agreement.py")
