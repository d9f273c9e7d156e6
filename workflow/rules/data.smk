# Data: demo corpus, tokenizer, tokenized domains and validation tasks.


if DEMO:

    rule fetch_demo_data:
        output:
            manifest=DEMO_MANIFEST,
        params:
            resources_dir="resources",
        log:
            "logs/fetch_demo_data/fetch_demo_data.log",
        benchmark:
            "benchmarks/rules/fetch_demo_data/fetch_demo_data.tsv"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=30,
        input:
            code=code("fetch_demo_data.py"),
        script:
            script_path("fetch_demo_data.py")


if config["tokenizer"]["path"]:

    rule use_tokenizer:
        input:
            tokenizer=config["tokenizer"]["path"],
            code=code("use_tokenizer.py"),
        output:
            "results/tokenizer/tokenizer.json",
        log:
            "logs/use_tokenizer/use_tokenizer.log",
        benchmark:
            "benchmarks/rules/use_tokenizer/use_tokenizer.tsv"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=5,
        script:
            script_path("use_tokenizer.py")

else:

    rule train_tokenizer:
        input:
            sources=tokenizer_sources,
            code=code("train_tokenizer.py"),
        output:
            "results/tokenizer/tokenizer.json",
        params:
            domains=config["domains"],
            vocab_size=config["tokenizer"]["vocab_size"],
            sample_chars=config["tokenizer"]["sample_chars"],
        log:
            "logs/train_tokenizer/train_tokenizer.log",
        benchmark:
            "benchmarks/rules/train_tokenizer/train_tokenizer.tsv"
        threads: 2
        resources:
            mem_mb=4000,
            runtime=30,
        script:
            script_path("train_tokenizer.py")


rule tokenize_domain:
    input:
        sources=domain_sources,
        tokenizer="results/tokenizer/tokenizer.json",
        code=code("tokenize_domain.py"),
    output:
        train="results/data/domains/{domain}/train.npy",
        heldout="results/data/domains/{domain}/heldout.npy",
        meta="results/data/domains/{domain}/meta.json",
    params:
        spec=lambda wildcards: config["domains"][wildcards.domain],
        heldout_fraction=config["data"]["heldout_fraction"],
        max_tokens=config["data"]["max_tokens_per_domain"],
        seed=config["seed"],
    log:
        "logs/tokenize_domain/{domain}.log",
    benchmark:
        "benchmarks/rules/tokenize_domain/{domain}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        script_path("tokenize_domain.py")


rule tokenize_task:
    input:
        source=task_source,
        tokenizer="results/tokenizer/tokenizer.json",
        code=code("tokenize_task.py"),
    output:
        "results/data/tasks/{task}.npz",
    params:
        path=lambda wildcards: config["tasks"][wildcards.task]["path"],
        seq_len=config["data"]["seq_len"],
    log:
        "logs/tokenize_task/{task}.log",
    benchmark:
        "benchmarks/rules/tokenize_task/{task}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        script_path("tokenize_task.py")


rule prior_mixture:
    input:
        meta=expand("results/data/domains/{domain}/meta.json", domain=DOMAINS),
        code=code("prior_mixture.py"),
    output:
        "results/mixtures/prior.json",
    params:
        domains=DOMAINS,
        spec=config["stage1"]["prior"],
    log:
        "logs/prior_mixture/prior_mixture.log",
    benchmark:
        "benchmarks/rules/prior_mixture/prior_mixture.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        script_path("prior_mixture.py")
