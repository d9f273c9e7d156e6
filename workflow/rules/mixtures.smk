# Mixtures for the next stage (paper sections 3.2-3.3): the natural and uniform baselines,
# TiKMiX-D on each checkpoint's influence matrix, and TiKMiX-M: responses of mixtures sampled
# around w_D, a surrogate, a search in the sampled support, a gate and a confirmation.

TIKMIX_M = MIXING["tikmix_m"]

from tikmix.core.settings import AvailabilitySettings

# The availability caps (mixing.max_epochs; mixing.stage_tokens, null = stage2.tokens): one
# availability.json per checkpoint, read by every mixture rule.
AVAILABILITY = AvailabilitySettings.from_config(config).as_params()
AVAILABILITY_FILE = "results/mixtures/{ckpt}/availability.json"


rule availability:
    input:
        meta=expand("results/data/domains/{domain}/meta.json", domain=DOMAINS),
        # Stage-1 exposure: the built-in checkpoint's record, or the user's prior file (with
        # stage1_tokens).
        checkpoint=lambda wildcards: (
            [] if USER_CHECKPOINTS else checkpoint_dir(wildcards.ckpt)
        ),
        prior=[config["prior"]] if USER_CHECKPOINTS and config["prior"] else [],
        code=code("availability.py"),
    output:
        AVAILABILITY_FILE,
    log:
        "logs/availability/{ckpt}.log",
    benchmark:
        "benchmarks/rules/availability/{ckpt}.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        upstream=user_inputs_digest("availability"),
        domains=DOMAINS,
        availability=AVAILABILITY,
        stage1_tokens=config["stage1_tokens"] if USER_CHECKPOINTS else None,
    script:
        script_path("availability.py")


rule mixture_baseline:
    input:
        meta=expand("results/data/domains/{domain}/meta.json", domain=DOMAINS),
        availability=AVAILABILITY_FILE,
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
        normalisation=NORMALISATION,
        upstream=user_inputs_digest("mixture_baseline"),
        domains=DOMAINS,
    script:
        script_path("mixture_baseline.py")


# The `continue` baseline: stage 1's mixture carried on unchanged (Table 1's do-nothing row).
# With your own checkpoints it is the top-level `prior` file, or natural when that is not given.
if not USER_CHECKPOINTS:
    CONTINUE_SOURCE = "results/mixtures/prior.json"
    CONTINUE_NOTE = f"stage 1's own mixture (stage1.prior: {config['stage1']['prior']})"
elif config["prior"]:
    CONTINUE_SOURCE = config["prior"]
    CONTINUE_NOTE = (
        f"the mixture your checkpoints were trained on (prior: {config['prior']})"
    )
else:
    CONTINUE_SOURCE = "results/mixtures/{ckpt}/natural.json"
    CONTINUE_NOTE = (
        "natural: the mixture your checkpoints were trained on is unknown (set the top-level "
        "`prior` to a mixture file to continue it instead)"
    )


rule mixture_continue:
    input:
        source=CONTINUE_SOURCE,
        availability=AVAILABILITY_FILE,
        influence="results/influence/{ckpt}/influence.csv",
        code=code("mixture_continue.py"),
    output:
        "results/mixtures/{ckpt}/continue.json",
    log:
        "logs/mixture_continue/{ckpt}.log",
    benchmark:
        "benchmarks/rules/mixture_continue/{ckpt}.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        normalisation=NORMALISATION,
        upstream=user_inputs_digest("mixture_continue"),
        domains=DOMAINS,
        note=CONTINUE_NOTE,
    script:
        script_path("mixture_continue.py")


from tikmix.core.settings import TikmixDSettings, TikmixMBox, TikmixMGate, TikmixMSearch

# TiKMiX-D's objective and TiKMiX-M's search, box and gate, one settings object each
# (tikmix.core.settings).
TIKMIX_D = TikmixDSettings.from_config(config).as_params()
TIKMIX_M_SEARCH = TikmixMSearch.from_config(config).as_params()
TIKMIX_M_BOX = TikmixMBox.from_config(config).as_params()
TIKMIX_M_GATE = TikmixMGate.from_config(config).as_params()


rule mixture_tikmix_d:
    input:
        influence="results/influence/{ckpt}/influence.csv",
        sidecar="results/influence/{ckpt}/influence.json",
        prior="results/mixtures/prior.json",
        availability=AVAILABILITY_FILE,
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
        tikmix_d=TIKMIX_D,
        normalisation=NORMALISATION,
        upstream=user_inputs_digest("mixture_tikmix_d"),
    script:
        script_path("mixture_tikmix_d.py")


rule mixture_candidates:
    input:
        tikmix_d="results/mixtures/{ckpt}/tikmix_d.json",
        influence="results/influence/{ckpt}/influence.csv",
        prior="results/mixtures/prior.json",
        availability=AVAILABILITY_FILE,
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
        normalisation=NORMALISATION,
        upstream=user_inputs_digest("mixture_candidates"),
        n=TIKMIX_M["candidates"],
        box=TIKMIX_M_BOX,
        seed=config["seed"],
    script:
        script_path("mixture_candidates.py")


rule measure_mixtures:
    input:
        checkpoint=lambda wildcards: checkpoint_dir(wildcards.ckpt),
        preconditioned="results/influence/{ckpt}/preconditioned_tasks.zarr",
        mixtures="results/measurements/{ckpt}/{design}/mixtures.csv",
        streams=domain_files("train"),
        tasks=list(STEERING_TASK_FILES.values()),
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
        upstream=user_inputs_digest("measure_mixtures"),
        domain_dirs={domain: domain_dir(domain) for domain in DOMAINS},
        tokens=MIXING["measurement"]["tokens"],
        response=TIKMIX_M["response"],
        lookahead=TIKMIX_M["lookahead"],
        task_files=STEERING_TASK_FILES,
        shards=MIXING["measurement"]["shards"],
        gradient_pass=GRADIENT_PASS,
    script:
        script_path("measure_mixtures.py")


rule curvature_responses:
    input:
        mixtures="results/measurements/{ckpt}/{design}/mixtures.csv",
        eigen="results/influence/{ckpt}/ekfac/eigen.zarr",
        preconditioned="results/influence/{ckpt}/preconditioned_tasks.zarr",
        tasks=expand("results/influence/{{ckpt}}/task_grads/{task}.zarr", task=TASKS),
        domains=expand("results/influence/{{ckpt}}/grads/{domain}.zarr", domain=DOMAINS),
        domain_lambdas=lambda wildcards: domain_lambda_stores(wildcards.ckpt),
        code=code("curvature_responses.py"),
    output:
        "results/measurements/{ckpt}/{design}/curvature.csv",
    log:
        "logs/curvature_responses/{ckpt}/{design}.log",
    benchmark:
        "benchmarks/rules/curvature_responses/{ckpt}/{design}.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        upstream=user_inputs_digest("curvature_responses"),
        tasks=TASKS,
        domains=DOMAINS,
        # The Λ_d passes are counted once, in TiKMiX-M's training design.
        count_passes=lambda wildcards: wildcards.design == "tikmix_m",
    script:
        script_path("curvature_responses.py")


rule tikmix_m_search:
    input:
        measurements=lambda wildcards: tikmix_m_responses(wildcards.ckpt, "tikmix_m"),
        influence="results/influence/{ckpt}/influence.csv",
        tikmix_d="results/mixtures/{ckpt}/tikmix_d.json",
        prior="results/mixtures/prior.json",
        availability=AVAILABILITY_FILE,
        code=code("tikmix_m_search.py"),
    output:
        mixtures="results/measurements/{ckpt}/tikmix_m_confirm/mixtures.csv",
        proposal="results/measurements/{ckpt}/tikmix_m/proposal.json",
    log:
        "logs/tikmix_m_search/{ckpt}.log",
    benchmark:
        "benchmarks/rules/tikmix_m_search/{ckpt}.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        normalisation=NORMALISATION,
        upstream=user_inputs_digest("tikmix_m_search"),
        box=TIKMIX_M_BOX,
        gate=TIKMIX_M_GATE,
        seed=config["seed"],
        search=TIKMIX_M_SEARCH,
    script:
        script_path("tikmix_m_search.py")


rule mixture_tikmix_m:
    input:
        proposal="results/measurements/{ckpt}/tikmix_m/proposal.json",
        confirmations=lambda wildcards: tikmix_m_responses(
            wildcards.ckpt, "tikmix_m_confirm"
        ),
        measurements=lambda wildcards: tikmix_m_responses(wildcards.ckpt, "tikmix_m"),
        influence="results/influence/{ckpt}/influence.csv",
        tikmix_d="results/mixtures/{ckpt}/tikmix_d.json",
        availability=AVAILABILITY_FILE,
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
        normalisation=NORMALISATION,
        upstream=user_inputs_digest("mixture_tikmix_m"),
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
        upstream=user_inputs_digest("export_mixtures"),
        methods=MIXTURE_METHODS,
        formats=EXPORT_FORMATS,
        prefixes=MEGATRON_PREFIXES,
    script:
        script_path("export_mixtures.py")
