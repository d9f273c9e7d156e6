# Data: demo corpus, tokenizer, tokenized domains and validation tasks.

from tikmix.data.tokenizer import agreed_special_tokens, tokenizer_file
from tikmix.mixing.priors import prior_kind

# The EOS (document separator) and BOS ids your checkpoints' config.json name; None for stage 1.
SPECIAL_TOKENS = agreed_special_tokens(USER_CHECKPOINTS)
# A Hugging Face tokenizer directory stands for the tokenizer.json inside it.
TOKENIZER_FILE = (
    str(tokenizer_file(config["tokenizer"]["path"]))
    if config["tokenizer"]["path"]
    else None
)
# The weights file named by stage1.prior, or None for natural / uniform / natural:<t>.
PRIOR_FILE = (
    config["stage1"]["prior"]
    if prior_kind(config["stage1"]["prior"]) == "file"
    else None
)


if DEMO:

    rule fetch_demo_data:
        input:
            code=code("fetch_demo_data.py"),
        output:
            manifest=DEMO_MANIFEST,
        log:
            "logs/fetch_demo_data/fetch_demo_data.log",
        benchmark:
            "benchmarks/rules/fetch_demo_data/fetch_demo_data.tsv"
        conda:
            "../../envs/tikmix.yaml"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=30,
        params:
            upstream=user_inputs_digest("fetch_demo_data"),
            resources_dir=lambda wildcards, output: str(
                Path(output.manifest).parents[1]
            ),
        script:
            script_path("fetch_demo_data.py")


if config["tokenizer"]["path"]:

    rule use_tokenizer:
        input:
            tokenizer=TOKENIZER_FILE,
            code=code("use_tokenizer.py"),
        output:
            "results/tokenizer/tokenizer.json",
        log:
            "logs/use_tokenizer/use_tokenizer.log",
        benchmark:
            "benchmarks/rules/use_tokenizer/use_tokenizer.tsv"
        conda:
            "../../envs/tikmix.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=5,
        params:
            upstream=user_inputs_digest("use_tokenizer"),
        script:
            script_path("use_tokenizer.py")

else:

    rule train_tokenizer:
        input:
            sources=lambda wildcards: sorted(
                {f for domain in DOMAINS for f in source_files(domain)}
            ),
            code=code("train_tokenizer.py"),
        output:
            "results/tokenizer/tokenizer.json",
        log:
            "logs/train_tokenizer/train_tokenizer.log",
        benchmark:
            "benchmarks/rules/train_tokenizer/train_tokenizer.tsv"
        conda:
            "../../envs/tikmix.yaml"
        threads: 2
        resources:
            mem_mb=4000,
            runtime=30,
        params:
            upstream=user_inputs_digest("train_tokenizer"),
            domains=config["domains"],
            vocab_size=config["tokenizer"]["vocab_size"],
            sample_chars=config["tokenizer"]["sample_chars"],
        script:
            script_path("train_tokenizer.py")


rule tokenize_domain:
    input:
        sources=lambda wildcards: source_files(wildcards.domain),
        tokenizer="results/tokenizer/tokenizer.json",
        code=code("tokenize_domain.py"),
    output:
        train="results/data/domains/{domain}/train.npy",
        heldout="results/data/domains/{domain}/heldout.npy",
        meta="results/data/domains/{domain}/meta.json",
    log:
        "logs/tokenize_domain/{domain}.log",
    benchmark:
        "benchmarks/rules/tokenize_domain/{domain}.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        upstream=user_inputs_digest("tokenize_domain"),
        spec=lambda wildcards: config["domains"][wildcards.domain],
        heldout_fraction=config["data"]["heldout_fraction"],
        max_tokens=config["data"]["max_tokens_per_domain"],
        seed=config["seed"],
        special_tokens=SPECIAL_TOKENS,
    script:
        script_path("tokenize_domain.py")


rule tokenize_task:
    input:
        source=lambda wildcards: (
            DEMO_MANIFEST if DEMO else config["tasks"][wildcards.task]["path"]
        ),
        tokenizer="results/tokenizer/tokenizer.json",
        code=code("tokenize_task.py"),
    output:
        steering=TASK_OUTPUTS["steering"],
        evaluation=TASK_OUTPUTS["evaluation"],
        split=TASK_OUTPUTS["split"],
    log:
        "logs/tokenize_task/{task}.log",
    benchmark:
        "benchmarks/rules/tokenize_task/{task}.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        upstream=user_inputs_digest("tokenize_task"),
        path=lambda wildcards: config["tasks"][wildcards.task]["path"],
        seq_len=config["data"]["seq_len"],
        steering_fraction=config["data"]["steering_fraction"],
    script:
        script_path("tokenize_task.py")


rule prior_mixture:
    input:
        meta=expand("results/data/domains/{domain}/meta.json", domain=DOMAINS),
        # A weights file named by stage1.prior is an input: editing it reruns the prior.
        weights=[PRIOR_FILE] if PRIOR_FILE else [],
        code=code("prior_mixture.py"),
    output:
        "results/mixtures/prior.json",
    log:
        "logs/prior_mixture/prior_mixture.log",
    benchmark:
        "benchmarks/rules/prior_mixture/prior_mixture.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        upstream=user_inputs_digest("prior_mixture"),
        domains=DOMAINS,
        spec=config["stage1"]["prior"],
    script:
        script_path("prior_mixture.py")
