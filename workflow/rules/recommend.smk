# The recommendation for the next stage (docs/recommendation.md): each candidate mixture is
# trained for a pilot budget from the stage-2 checkpoint with the same seeds, scored on the
# steering half of every task, and compared with `continue`. Without pilots
# (recommendation.pilot: null) it is TiKMiX-M's own decision, labelled proxy-only.

from dataclasses import replace

RECOMMENDATION = config["recommendation"]
CANDIDATES = list(RECOMMENDATION["candidates"])
PILOT = RECOMMENDATION["pilot"]
PILOT_SEEDS = list(PILOT["seeds"]) if PILOT else []
# Stage 2's training, for the pilot's tokens (null: stage 2's).
PILOT_STAGE2 = replace(
    Stage2Settings.from_config(config),
    tokens=(PILOT or {}).get("tokens") or STAGE2["tokens"],
).as_params()
# A candidate that is `continue`'s mixture by construction (natural, when stage 1 trained on
# natural) trains nothing: the decision reads its mixture and calls it the same mixture.
SAME_AS_CONTINUE = (
    {"natural"}
    if (
        not config["prior"]
        if USER_CHECKPOINTS
        else config["stage1"]["prior"] == "natural"
    )
    else set()
)
PILOTED = [m for m in CANDIDATES if m not in SAME_AS_CONTINUE] if PILOT else []
PILOT_RECORD = "results/recommendation/pilots/{method}/seed{seed}.json"
RECOMMENDATION_FILES = {
    "recommendation": "results/recommendation/recommendation.json",
    "pilots": "results/recommendation/pilots.csv",
}
# The evaluation checkpoint's own metrics on the steering half: the "before" of every pilot.
PILOT_CHECKPOINT_METRICS = "results/recommendation/checkpoint_tasks.json"


rule evaluate_checkpoint_steering:
    input:
        checkpoint=checkpoint_dir(EVAL_CKPT),
        tasks=list(STEERING_TASK_FILES.values()),
        code=code("evaluate_checkpoint.py"),
    output:
        PILOT_CHECKPOINT_METRICS,
    log:
        "logs/evaluate_checkpoint_steering/evaluate_checkpoint_steering.log",
    benchmark:
        "benchmarks/rules/evaluate_checkpoint_steering/evaluate_checkpoint_steering.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 2
    resources:
        mem_mb=RESOURCES.mem_mb("evaluate_checkpoint"),
        runtime=RESOURCES.runtime("evaluate_checkpoint"),
    params:
        upstream=user_inputs_digest("evaluate_checkpoint_steering"),
        task_files=STEERING_TASK_FILES,
        eval_batch_size=STAGE2["eval_batch_size"],
        device=config["device"],
    script:
        script_path("evaluate_checkpoint.py")


# One job per candidate runs all pilot seeds in one process (the stage-2 job, other seeds and
# tokens, scored on the steering half).
rule pilot_stage2:
    input:
        mixture=lambda wildcards: mixture_file(EVAL_CKPT, wildcards.method),
        checkpoint=checkpoint_dir(EVAL_CKPT),
        before=PILOT_CHECKPOINT_METRICS,
        streams=domain_files("train"),
        tasks=list(STEERING_TASK_FILES.values()),
        code=code("evaluate_stage2.py"),
    output:
        expand(PILOT_RECORD, method="{method}", seed=PILOT_SEEDS),
    log:
        "logs/pilot_stage2/{method}.log",
    benchmark:
        "benchmarks/rules/pilot_stage2/{method}.tsv"
    wildcard_constraints:
        method="[A-Za-z0-9_.-]+",
    conda:
        "../../envs/tikmix.yaml"
    threads: 2
    resources:
        mem_mb=RESOURCES.mem_mb("pilot_stage2"),
        runtime=RESOURCES.runtime("pilot_stage2"),
    params:
        upstream=user_inputs_digest("pilot_stage2"),
        domain_dirs=DOMAIN_DIRS,
        task_files=STEERING_TASK_FILES,
        stage2=PILOT_STAGE2,
        seeds=PILOT_SEEDS,
        seq_len=config["data"]["seq_len"],
        device=config["device"],
    script:
        script_path("evaluate_stage2.py")


rule recommendation:
    input:
        mixtures=expand(MIXTURE_FILE, ckpt=EVAL_CKPT, method=CANDIDATES),
        records=expand(PILOT_RECORD, method=PILOTED, seed=PILOT_SEEDS),
        tikmix_m=[] if PILOT else mixture_file(EVAL_CKPT, "tikmix_m"),
        code=code("recommendation.py"),
    output:
        recommendation=RECOMMENDATION_FILES["recommendation"],
        table=report(
            RECOMMENDATION_FILES["pilots"],
            caption="../report/pilots.rst",
            category="Recommendation",
        ),
    log:
        "logs/recommendation/recommendation.log",
    benchmark:
        "benchmarks/rules/recommendation/recommendation.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        upstream=user_inputs_digest("recommendation"),
        candidates=CANDIDATES,
    script:
        script_path("recommendation.py")
