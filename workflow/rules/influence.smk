# Group influence (paper section 3.1): per-domain mean gradients, task gradients, EK-FAC curvature
# in map-reduce form, and the tasks x domains benefit matrix, for every checkpoint.
# The task gradients' pass: the gradient pass with the task batch size.

TASK_GRADIENT_PASS = (
    GradientPassSettings.from_config(config)
    .for_tasks(INFLUENCE["task_batch_size"])
    .as_params()
)


# The EK-FAC fit samples one dataset from the prior mixture; each shard job takes its slice.
EKFAC_SAMPLE_PARAMS = dict(
    tokens=INFLUENCE["ekfac"]["tokens"],
    shards=INFLUENCE["ekfac"]["shards"],
    fisher=INFLUENCE["ekfac"]["fisher"],
    domain_dirs={domain: domain_dir(domain) for domain in DOMAINS},
    gradient_pass=GRADIENT_PASS,
)


# TiKMiX-M's curvature response: the same Λ pass as the EK-FAC fit, on each domain alone.
DOMAIN_LAMBDA_PARAMS = dict(
    fisher=INFLUENCE["ekfac"]["fisher"],
    tokens=config["mixing"]["tikmix_m"]["curvature"]["tokens_per_domain"],
    gradient_pass=GRADIENT_PASS,
)


rule domain_gradients:
    input:
        checkpoint=lambda wildcards: checkpoint_dir(wildcards.ckpt),
        stream="results/data/domains/{domain}/train.npy",
        code=code("domain_gradients.py"),
    output:
        directory("results/influence/{ckpt}/grads/{domain}/part-{shard}.zarr"),
    log:
        "logs/domain_gradients/{ckpt}/{domain}/part-{shard}.log",
    # Cached between workflows (--cache), so Snakemake forbids a benchmark file: the job's
    # wall time and peak memory are recorded in the store's attributes instead.
    cache: "omit-software"
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=RESOURCES.mem_mb("domain_gradients"),
        runtime=RESOURCES.runtime("domain_gradients"),
    params:
        upstream=user_inputs_digest("domain_gradients"),
        domain_dir=lambda wildcards: domain_dir(wildcards.domain),
        tokens=INFLUENCE["domain_tokens"],
        shards=INFLUENCE["shards_per_domain"],
        gradient_pass=GRADIENT_PASS,
    script:
        script_path("domain_gradients.py")


rule reduce_domain_gradients:
    input:
        parts=domain_gradient_parts,
        code=code("reduce_domain_gradients.py"),
    output:
        directory("results/influence/{ckpt}/grads/{domain}.zarr"),
    log:
        "logs/reduce_domain_gradients/{ckpt}/{domain}.log",
    # Cached between workflows (--cache), so Snakemake forbids a benchmark file: the job's
    # wall time and peak memory are recorded in the store's attributes instead.
    cache: "omit-software"
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=RESOURCES.mem_mb("reduce_domain_gradients"),
        runtime=RESOURCES.runtime("reduce_domain_gradients"),
    params:
        upstream=user_inputs_digest("reduce_domain_gradients"),
    script:
        script_path("reduce_domain_gradients.py")


rule task_gradients:
    input:
        checkpoint=lambda wildcards: checkpoint_dir(wildcards.ckpt),
        task=TASK_OUTPUTS["steering"],
        code=code("task_gradients.py"),
    output:
        directory("results/influence/{ckpt}/task_grads/{task}.zarr"),
    log:
        "logs/task_gradients/{ckpt}/{task}.log",
    benchmark:
        "benchmarks/rules/task_gradients/{ckpt}/{task}.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=RESOURCES.mem_mb("task_gradients"),
        runtime=RESOURCES.runtime("task_gradients"),
    params:
        upstream=user_inputs_digest("task_gradients"),
        gradient_pass=TASK_GRADIENT_PASS,
    script:
        script_path("task_gradients.py")


rule ekfac_covariances:
    input:
        checkpoint=lambda wildcards: checkpoint_dir(wildcards.ckpt),
        streams=domain_files("train"),
        prior="results/mixtures/prior.json",
        code=code("ekfac_covariances.py"),
    output:
        directory("results/influence/{ckpt}/ekfac/covariances/part-{shard}.zarr"),
    log:
        "logs/ekfac_covariances/{ckpt}/part-{shard}.log",
    benchmark:
        "benchmarks/rules/ekfac_covariances/{ckpt}/part-{shard}.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=RESOURCES.mem_mb("ekfac_covariances"),
        runtime=RESOURCES.runtime("ekfac_covariances"),
    params:
        **EKFAC_SAMPLE_PARAMS,
        upstream=user_inputs_digest("ekfac_covariances"),
    script:
        script_path("ekfac_covariances.py")


rule ekfac_eigen:
    input:
        parts=expand(
            "results/influence/{{ckpt}}/ekfac/covariances/part-{shard}.zarr",
            shard=EKFAC_SHARDS,
        ),
        code=code("ekfac_eigen.py"),
    output:
        directory("results/influence/{ckpt}/ekfac/eigen.zarr"),
    log:
        "logs/ekfac_eigen/{ckpt}.log",
    benchmark:
        "benchmarks/rules/ekfac_eigen/{ckpt}.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 2
    resources:
        mem_mb=RESOURCES.mem_mb("ekfac_eigen"),
        runtime=RESOURCES.runtime("ekfac_eigen"),
    params:
        upstream=user_inputs_digest("ekfac_eigen"),
    script:
        script_path("ekfac_eigen.py")


rule ekfac_lambda:
    input:
        checkpoint=lambda wildcards: checkpoint_dir(wildcards.ckpt),
        streams=domain_files("train"),
        prior="results/mixtures/prior.json",
        eigen="results/influence/{ckpt}/ekfac/eigen.zarr",
        code=code("ekfac_lambda.py"),
    output:
        directory("results/influence/{ckpt}/ekfac/lambda/part-{shard}.zarr"),
    log:
        "logs/ekfac_lambda/{ckpt}/part-{shard}.log",
    benchmark:
        "benchmarks/rules/ekfac_lambda/{ckpt}/part-{shard}.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=RESOURCES.mem_mb("ekfac_lambda"),
        runtime=RESOURCES.runtime("ekfac_lambda"),
    params:
        **EKFAC_SAMPLE_PARAMS,
        upstream=user_inputs_digest("ekfac_lambda"),
    script:
        script_path("ekfac_lambda.py")


rule ekfac_domain_lambda:
    input:
        checkpoint=lambda wildcards: checkpoint_dir(wildcards.ckpt),
        stream="results/data/domains/{domain}/train.npy",
        eigen="results/influence/{ckpt}/ekfac/eigen.zarr",
        code=code("ekfac_domain_lambda.py"),
    output:
        directory("results/influence/{ckpt}/ekfac/domain_lambda/{domain}.zarr"),
    log:
        "logs/ekfac_domain_lambda/{ckpt}/{domain}.log",
    benchmark:
        "benchmarks/rules/ekfac_domain_lambda/{ckpt}/{domain}.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=RESOURCES.mem_mb("ekfac_domain_lambda"),
        runtime=RESOURCES.runtime("ekfac_domain_lambda"),
    params:
        **DOMAIN_LAMBDA_PARAMS,
        upstream=user_inputs_digest("ekfac_domain_lambda"),
        domain_dir=lambda wildcards: domain_dir(wildcards.domain),
    script:
        script_path("ekfac_domain_lambda.py")


rule ekfac_factors:
    input:
        eigen="results/influence/{ckpt}/ekfac/eigen.zarr",
        parts=expand(
            "results/influence/{{ckpt}}/ekfac/lambda/part-{shard}.zarr",
            shard=EKFAC_SHARDS,
        ),
        code=code("ekfac_factors.py"),
    output:
        directory("results/influence/{ckpt}/ekfac.zarr"),
    log:
        "logs/ekfac_factors/{ckpt}.log",
    # Cached between workflows (--cache), so Snakemake forbids a benchmark file: the job's
    # wall time and peak memory are recorded in the store's attributes instead.
    cache: "omit-software"
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=RESOURCES.mem_mb("ekfac_factors"),
        runtime=RESOURCES.runtime("ekfac_factors"),
    params:
        upstream=user_inputs_digest("ekfac_factors"),
    script:
        script_path("ekfac_factors.py")


rule precondition_task_gradients:
    input:
        factors="results/influence/{ckpt}/ekfac.zarr",
        tasks=expand("results/influence/{{ckpt}}/task_grads/{task}.zarr", task=TASKS),
        code=code("precondition_task_gradients.py"),
    output:
        directory("results/influence/{ckpt}/preconditioned_tasks.zarr"),
    log:
        "logs/precondition_task_gradients/{ckpt}.log",
    benchmark:
        "benchmarks/rules/precondition_task_gradients/{ckpt}.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=RESOURCES.mem_mb("precondition_task_gradients"),
        runtime=RESOURCES.runtime("precondition_task_gradients"),
    params:
        upstream=user_inputs_digest("precondition_task_gradients"),
        tasks=TASKS,
        damping=INFLUENCE["ekfac"]["damping"],
        damping_factor=INFLUENCE["ekfac"]["damping_factor"],
    script:
        script_path("precondition_task_gradients.py")


rule influence_matrix:
    input:
        preconditioned="results/influence/{ckpt}/preconditioned_tasks.zarr",
        domains=expand("results/influence/{{ckpt}}/grads/{domain}.zarr", domain=DOMAINS),
        code=code("influence_matrix.py"),
    output:
        matrix=report(
            "results/influence/{ckpt}/influence.csv",
            caption="../report/influence_matrix.rst",
            category="Influence",
            subcategory="{ckpt}",
        ),
        sidecar="results/influence/{ckpt}/influence.json",
        per_module="results/influence/{ckpt}/influence_modules.parquet",
    log:
        "logs/influence_matrix/{ckpt}.log",
    benchmark:
        "benchmarks/rules/influence_matrix/{ckpt}.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=RESOURCES.mem_mb("influence_matrix"),
        runtime=RESOURCES.runtime("influence_matrix"),
    params:
        upstream=user_inputs_digest("influence_matrix"),
        domains=DOMAINS,
    script:
        script_path("influence_matrix.py")
