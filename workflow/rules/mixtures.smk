# Mixtures for the next stage (paper sections 3.2-3.3): the natural and uniform baselines,
# TiKMiX-D on each checkpoint's influence matrix, and TiKMiX-M on directly measured mixtures.


rule mixture_baseline:
    input:
        meta=expand("results/data/domains/{domain}/meta.json", domain=DOMAINS),
        influence="results/influence/{ckpt}/influence.csv",
        code=code("mixture_baseline.py"),
    output:
        "results/mixtures/{ckpt}/{baseline}.json",
    log:
        "logs/mixture_baseline/{ckpt}/{baseline}.log",
    benchmark:
        "benchmarks/rules/mixture_baseline/{ckpt}/{baseline}.tsv"
    wildcard_constraints:
        baseline="natural|uniform",
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        upstream=lambda wildcards: mixture_digest(wildcards.ckpt, wildcards.baseline),
        domains=DOMAINS,
    script:
        script_path("mixture_baseline.py")


rule mixture_tikmix_d:
    input:
        influence="results/influence/{ckpt}/influence.csv",
        sidecar="results/influence/{ckpt}/influence.json",
        prior="results/mixtures/prior.json",
        meta=expand("results/data/domains/{domain}/meta.json", domain=DOMAINS),
        code=code("mixture_tikmix_d.py"),
    output:
        "results/mixtures/{ckpt}/tikmix_d.json",
    log:
        "logs/mixture_tikmix_d/{ckpt}.log",
    benchmark:
        "benchmarks/rules/mixture_tikmix_d/{ckpt}.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        **MIXING["tikmix_d"],
        upstream=lambda wildcards: mixture_digest(wildcards.ckpt, "tikmix_d"),
        domains=DOMAINS,
        stage_tokens=MIXING["stage_tokens"],
    script:
        script_path("mixture_tikmix_d.py")


rule mixture_candidates:
    input:
        prior="results/mixtures/prior.json",
        code=code("mixture_candidates.py"),
    output:
        "results/measurements/{ckpt}/tikmix_m/mixtures.csv",
    log:
        "logs/mixture_candidates/{ckpt}.log",
    benchmark:
        "benchmarks/rules/mixture_candidates/{ckpt}.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        upstream=lambda wildcards: candidates_digest(wildcards.ckpt),
        n=MIXING["tikmix_m"]["candidates"],
        low=MIXING["tikmix_m"]["low"],
        high=MIXING["tikmix_m"]["high"],
        seed=config["seed"],
    script:
        script_path("mixture_candidates.py")


rule measure_mixtures:
    input:
        checkpoint=lambda wildcards: checkpoint_dir(wildcards.ckpt),
        preconditioned="results/influence/{ckpt}/preconditioned_tasks.zarr",
        mixtures="results/measurements/{ckpt}/{design}/mixtures.csv",
        streams=domain_files("train"),
        tasks=list(TASK_FILES.values()),
        code=code("measure_mixtures.py"),
    output:
        "results/measurements/{ckpt}/{design}/part-{shard}.csv",
    log:
        "logs/measure_mixtures/{ckpt}/{design}/part-{shard}.log",
    benchmark:
        "benchmarks/rules/measure_mixtures/{ckpt}/{design}/part-{shard}.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        upstream=lambda wildcards: measurements_digest(wildcards.ckpt, wildcards.design),
        domain_dirs={domain: domain_dir(domain) for domain in DOMAINS},
        tokens=MIXING["measurement"]["tokens"],
        response=lambda wildcards: (
            MIXING["tikmix_m"]["response"]
            if wildcards.design == "tikmix_m"
            else "influence"
        ),
        lookahead=MIXING["tikmix_m"]["lookahead"],
        task_files=TASK_FILES,
        shards=MIXING["measurement"]["shards"],
        seq_len=config["data"]["seq_len"],
        batch_size=INFLUENCE["batch_size"],
        tracked_modules=INFLUENCE["tracked_modules"],
        projection=INFLUENCE["projection"],
        precision=INFLUENCE["precision"],
        seed=config["seed"],
        device=config["device"],
    script:
        script_path("measure_mixtures.py")


rule mixture_tikmix_m:
    input:
        measurements=lambda wildcards: measurement_parts(wildcards.ckpt, "tikmix_m"),
        influence="results/influence/{ckpt}/influence.csv",
        tikmix_d="results/mixtures/{ckpt}/tikmix_d.json",
        prior="results/mixtures/prior.json",
        code=code("mixture_tikmix_m.py"),
    output:
        "results/mixtures/{ckpt}/tikmix_m.json",
    log:
        "logs/mixture_tikmix_m/{ckpt}.log",
    benchmark:
        "benchmarks/rules/mixture_tikmix_m/{ckpt}.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        upstream=lambda wildcards: mixture_digest(wildcards.ckpt, "tikmix_m"),
        eps=MIXING["tikmix_d"]["eps"],
        seed=config["seed"],
        search=MIXING["tikmix_m"]["search"],
    script:
        script_path("mixture_tikmix_m.py")


rule export_mixtures:
    input:
        documents=expand(
            "results/mixtures/{{ckpt}}/{method}.json", method=MIXTURE_METHODS
        ),
        code=code("export_mixtures.py"),
    output:
        expand(
            "results/mixtures/{{ckpt}}/exports/{method}.{format}",
            method=MIXTURE_METHODS,
            format=EXPORT_FORMATS,
        ),
    log:
        "logs/export_mixtures/{ckpt}.log",
    benchmark:
        "benchmarks/rules/export_mixtures/{ckpt}.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        upstream=lambda wildcards: mixtures_digest(wildcards.ckpt, MIXTURE_METHODS),
        methods=MIXTURE_METHODS,
        formats=EXPORT_FORMATS,
        prefixes=MEGATRON_PREFIXES,
    script:
        script_path("export_mixtures.py")
