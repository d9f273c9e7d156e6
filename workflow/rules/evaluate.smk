# Stage-2 evaluation (paper table 1, figure 4): continue the evaluation checkpoint on every
# method's mixture for the same tokens and seeds, measure the tasks, and tabulate. Also the
# proxy-model baselines RegMix and DoReMi, which write mixtures like the other methods, and the
# random mixtures that join the methods in figure 4 (predicted benefit vs measured improvement).

from tikmix.core.settings import DoremiSettings, RegmixSettings, Stage2Settings

STAGE2_SEEDS = list(STAGE2["seeds"])
DOMAIN_DIRS = {domain: domain_dir(domain) for domain in DOMAINS}
# Stage 2's training (without the evaluation plan) and the baselines, one settings object each
# (tikmix.core.settings).
STAGE2_SETTINGS = Stage2Settings.from_config(config).as_params()
REGMIX = RegmixSettings.from_config(config).as_params()
DOREMI = DoremiSettings.from_config(config).as_params()


# The evaluation checkpoint's own task metrics: the "before" of every stage-2 record.
CHECKPOINT_TASK_METRICS = "results/evaluation/checkpoint_tasks.json"


# Random mixtures of figure 4 (schema key stage2.random_mixtures, default 3); the names follow
# tikmix.analysis.evaluation.random_mixture_name, not imported here to keep parsing light.
RANDOM_MIXTURES = [f"random{k}" for k in range(STAGE2["random_mixtures"])]


rule evaluate_checkpoint:
    input:
        checkpoint=checkpoint_dir(EVAL_CKPT),
        tasks=list(EVALUATION_TASK_FILES.values()),
        code=code("evaluate_checkpoint.py"),
    output:
        CHECKPOINT_TASK_METRICS,
    log:
        "logs/evaluate_checkpoint/evaluate_checkpoint.log",
    benchmark:
        "benchmarks/rules/evaluate_checkpoint/evaluate_checkpoint.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 2
    resources:
        mem_mb=RESOURCES.mem_mb("evaluate_checkpoint"),
        runtime=RESOURCES.runtime("evaluate_checkpoint"),
    params:
        upstream=user_inputs_digest("evaluate_checkpoint"),
        task_files=EVALUATION_TASK_FILES,
        eval_batch_size=STAGE2["eval_batch_size"],
        device=config["device"],
    script:
        script_path("evaluate_checkpoint.py")


# One job per method (or random mixture) runs all its seeds in one process, one record per seed.
rule evaluate_stage2:
    input:
        mixture=lambda wildcards: mixture_file(EVAL_CKPT, wildcards.method),
        checkpoint=checkpoint_dir(EVAL_CKPT),
        before=CHECKPOINT_TASK_METRICS,
        streams=domain_files("train"),
        tasks=list(EVALUATION_TASK_FILES.values()),
        code=code("evaluate_stage2.py"),
    output:
        expand("results/evaluation/{{method}}/seed{seed}.json", seed=STAGE2_SEEDS),
    log:
        "logs/evaluate_stage2/{method}.log",
    benchmark:
        "benchmarks/rules/evaluate_stage2/{method}.tsv"
    wildcard_constraints:
        method="[A-Za-z0-9_.-]+",
    conda:
        "../../envs/tikmix.yaml"
    threads: 2
    resources:
        mem_mb=RESOURCES.mem_mb("evaluate_stage2"),
        runtime=RESOURCES.runtime("evaluate_stage2"),
    params:
        upstream=user_inputs_digest("evaluate_stage2"),
        domain_dirs=DOMAIN_DIRS,
        task_files=EVALUATION_TASK_FILES,
        stage2=STAGE2_SETTINGS,
        seeds=STAGE2_SEEDS,
        seq_len=config["data"]["seq_len"],
        device=config["device"],
    script:
        script_path("evaluate_stage2.py")


# Where stage 1 trained on natural (the demo), `continue` is the natural mixture: its stage-2
# records are natural's runs, relabelled (the job checks that the weights are identical).
CONTINUE_IS_NATURAL = {"continue", "natural"} <= set(STAGE2_METHODS) and (
    not config["prior"] if USER_CHECKPOINTS else config["stage1"]["prior"] == "natural"
)

if CONTINUE_IS_NATURAL:

    ruleorder: evaluate_continue_as_natural > evaluate_stage2

    rule evaluate_continue_as_natural:
        input:
            mixture=mixture_file(EVAL_CKPT, "continue"),
            natural=mixture_file(EVAL_CKPT, "natural"),
            records=expand(
                "results/evaluation/natural/seed{seed}.json", seed=STAGE2_SEEDS
            ),
            code=code("evaluate_continue_as_natural.py"),
        output:
            expand("results/evaluation/continue/seed{seed}.json", seed=STAGE2_SEEDS),
        log:
            "logs/evaluate_continue_as_natural/evaluate_continue_as_natural.log",
        benchmark:
            "benchmarks/rules/evaluate_continue_as_natural/evaluate_continue_as_natural.tsv"
        conda:
            "../../envs/tikmix.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=5,
        params:
            upstream=user_inputs_digest("evaluate_continue_as_natural"),
        script:
            script_path("evaluate_continue_as_natural.py")


rule mixture_random:
    input:
        influence="results/influence/{ckpt}/influence.csv",
        availability=AVAILABILITY_FILE,
        code=code("mixture_random.py"),
    output:
        "results/mixtures/{ckpt}/random{k}.json",
    log:
        "logs/mixture_random/{ckpt}/random{k}.log",
    benchmark:
        "benchmarks/rules/mixture_random/{ckpt}/random{k}.tsv"
    wildcard_constraints:
        k=r"\d+",
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        normalisation=NORMALISATION,
        upstream=user_inputs_digest("mixture_random"),
        domains=DOMAINS,
        seed=config["seed"],
    script:
        script_path("mixture_random.py")


rule mixture_regmix:
    input:
        prior="results/mixtures/{ckpt}/natural.json",
        tokenizer="results/tokenizer/tokenizer.json",
        streams=domain_files("train"),
        tasks=list(STEERING_TASK_FILES.values()),
        availability=AVAILABILITY_FILE,
        code=code("mixture_regmix.py"),
    output:
        mixture="results/mixtures/{ckpt}/regmix.json",
        runs="results/mixtures/{ckpt}/regmix_runs.csv",
    log:
        "logs/mixture_regmix/{ckpt}.log",
    benchmark:
        "benchmarks/rules/mixture_regmix/{ckpt}.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        upstream=user_inputs_digest("mixture_regmix"),
        regmix=REGMIX,
        domain_dirs=DOMAIN_DIRS,
        task_files=STEERING_TASK_FILES,
        seq_len=config["data"]["seq_len"],
        seed=config["seed"],
        device=config["device"],
    script:
        script_path("mixture_regmix.py")


rule mixture_doremi:
    input:
        prior="results/mixtures/prior.json",
        checkpoint=lambda wildcards: checkpoint_dir(wildcards.ckpt),
        tokenizer="results/tokenizer/tokenizer.json",
        streams=domain_files("train"),
        availability=AVAILABILITY_FILE,
        code=code("mixture_doremi.py"),
    output:
        mixture="results/mixtures/{ckpt}/doremi.json",
        trace="results/mixtures/{ckpt}/doremi_trace.csv",
    log:
        "logs/mixture_doremi/{ckpt}.log",
    benchmark:
        "benchmarks/rules/mixture_doremi/{ckpt}.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
    params:
        upstream=user_inputs_digest("mixture_doremi"),
        doremi=DOREMI,
        domain_dirs=DOMAIN_DIRS,
        seq_len=config["data"]["seq_len"],
        seed=config["seed"],
        device=config["device"],
    script:
        script_path("mixture_doremi.py")


rule evaluation_table:
    input:
        records=expand(
            "results/evaluation/{method}/seed{seed}.json",
            method=STAGE2_METHODS + RANDOM_MIXTURES,
            seed=STAGE2_SEEDS,
        ),
        mixtures=expand(
            "results/mixtures/{ckpt}/{method}.json",
            ckpt=EVAL_CKPT,
            method=STAGE2_METHODS,
        ),
        influence=f"results/influence/{EVAL_CKPT}/influence.csv",
        code=code("evaluation_table.py"),
    output:
        table=report(
            EVALUATION_FILES["table"],
            caption="../report/evaluation_table.rst",
            category="Stage-2 evaluation",
        ),
        summary=report(
            EVALUATION_FILES["summary"],
            caption="../report/evaluation_summary.rst",
            category="Stage-2 evaluation",
        ),
        figure4=report(
            EVALUATION_FILES["figure4"],
            caption="../report/figure4_table.rst",
            category="Stage-2 evaluation",
        ),
        figure4_stats=EVALUATION_FILES["figure4_stats"],
        paired=report(
            EVALUATION_FILES["paired"],
            caption="../report/paired_table.rst",
            category="Stage-2 evaluation",
        ),
        paired_stats=EVALUATION_FILES["paired_stats"],
        figure=report(
            f"{EVALUATION_FIGURE_STEM}.png",
            caption="../report/figure4.rst",
            category="Stage-2 evaluation",
        ),
        pdf=f"{EVALUATION_FIGURE_STEM}.pdf",
    log:
        "logs/evaluation_table/evaluation_table.log",
    benchmark:
        "benchmarks/rules/evaluation_table/evaluation_table.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        normalisation=NORMALISATION,
        upstream=user_inputs_digest("evaluation_table"),
        methods=STAGE2_METHODS,
        random_mixtures=RANDOM_MIXTURES,
        reference=STAGE2["improvement_reference"],
        checkpoint=EVAL_CKPT,
        figure_stem=lambda wildcards, output: output.figure.removesuffix(".png"),
    script:
        script_path("evaluation_table.py")
