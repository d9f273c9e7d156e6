# Stage 1: train the built-in model on the prior mixture and save checkpoints along the way.
# Users who bring their own checkpoints list them under `checkpoints:` and this rule does not run.


if not USER_CHECKPOINTS:

    rule train_stage1:
        input:
            train=domain_files("train"),
            heldout=domain_files("heldout"),
            meta=expand("results/data/domains/{domain}/meta.json", domain=DOMAINS),
            tokenizer="results/tokenizer/tokenizer.json",
            prior="results/mixtures/prior.json",
            code=code("train_stage1.py"),
        output:
            checkpoints=[
                directory(f"results/checkpoints/{name}") for name in STAGE1_CHECKPOINTS
            ],
            metrics=report(
                "results/stage1/metrics.json",
                caption="../report/stage1_metrics.rst",
                category="Stage 1",
            ),
        log:
            "logs/train_stage1/train_stage1.log",
        benchmark:
            "benchmarks/rules/train_stage1/train_stage1.tsv"
        conda:
            "../../envs/tikmix.yaml"
        threads: 2
        resources:
            mem_mb=RESOURCES.mem_mb("train_stage1"),
            runtime=RESOURCES.runtime("train_stage1"),
        params:
            upstream=user_inputs_digest("train_stage1"),
            domain_dirs={domain: domain_dir(domain) for domain in DOMAINS},
            checkpoints=STAGE1_CHECKPOINTS,
            model=config["model"],
            stage1=config["stage1"],
            seq_len=config["data"]["seq_len"],
            seed=config["seed"],
            device=config["device"],
        script:
            script_path("train_stage1.py")
