# tikmix_c, the calibrated method (docs/tikmix_c.md): short rollouts at mixtures around the
# `continue` mixture p, each continuing the stage-2 checkpoint for the pilot's tokens with one
# seed and scored on the steering half, fit a_v·B_v·(w − p) − c_v·KL(w‖p) per task; the fit is
# solved within the caps. Only at the stage-2 checkpoint: the rollouts train from it.

from tikmix.core.settings import TikmixCSettings

TIKMIX_C = TikmixCSettings.from_config(config)
ROLLOUTS = [f"r{k:02d}" for k in range(TIKMIX_C.n_levels * TIKMIX_C.per_level)]
ROLLOUT_MIXTURE = "results/tikmix_c/rollouts/{rollout}.json"
ROLLOUT_RUN = f"results/tikmix_c/runs/{{method}}/seed{TIKMIX_C.rollout_seed}.json"
ROLLOUT_RUNS = [ROLLOUT_RUN.format(method=r) for r in ROLLOUTS]
CONTINUE_RUN = ROLLOUT_RUN.format(method="continue")
# tikmix_c's cost in the compute table: the influence matrix, the rollouts, the fit and solve.
TIKMIX_C_COMPUTE = {
    **influence_compute_sources(EVAL_CKPT),
    "tikmix_c rollouts": [CONTINUE_RUN, *ROLLOUT_RUNS],
    "tikmix_c fit and solve": [mixture_file(EVAL_CKPT, "tikmix_c")],
}


rule tikmix_c_rollout_mixtures:
    input:
        continue_mixture=mixture_file(EVAL_CKPT, "continue"),
        availability=AVAILABILITY_FILE.format(ckpt=EVAL_CKPT),
        code=code("tikmix_c_rollout_mixtures.py"),
    output:
        [ROLLOUT_MIXTURE.format(rollout=r) for r in ROLLOUTS],
    log:
        "logs/tikmix_c_rollout_mixtures/tikmix_c_rollout_mixtures.log",
    benchmark:
        "benchmarks/rules/tikmix_c_rollout_mixtures/tikmix_c_rollout_mixtures.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        upstream=user_inputs_digest("tikmix_c_rollout_mixtures"),
        tikmix_c=TIKMIX_C.as_params(),
    script:
        script_path("tikmix_c_rollout_mixtures.py")


# One rollout (or continue's reference run) per job: the stage-2 job with the pilot's tokens,
# the rollout seed, scored on the steering half.
rule tikmix_c_rollout:
    input:
        mixture=lambda wildcards: (
            mixture_file(EVAL_CKPT, "continue")
            if wildcards.method == "continue"
            else ROLLOUT_MIXTURE.format(rollout=wildcards.method)
        ),
        checkpoint=checkpoint_dir(EVAL_CKPT),
        before=PILOT_CHECKPOINT_METRICS,
        streams=domain_files("train"),
        tasks=list(STEERING_TASK_FILES.values()),
        code=code("evaluate_stage2.py"),
    output:
        ROLLOUT_RUN,
    log:
        "logs/tikmix_c_rollout/{method}.log",
    benchmark:
        "benchmarks/rules/tikmix_c_rollout/{method}.tsv"
    wildcard_constraints:
        method=r"continue|r\d+",
    conda:
        "../../envs/tikmix.yaml"
    threads: 2
    resources:
        mem_mb=RESOURCES.mem_mb("tikmix_c_rollout"),
        runtime=RESOURCES.runtime("tikmix_c_rollout"),
    params:
        upstream=user_inputs_digest("tikmix_c_rollout"),
        domain_dirs=DOMAIN_DIRS,
        task_files=STEERING_TASK_FILES,
        stage2=PILOT_STAGE2,
        seeds=[TIKMIX_C.rollout_seed],
        seq_len=config["data"]["seq_len"],
        device=config["device"],
    script:
        script_path("evaluate_stage2.py")


rule mixture_tikmix_c:
    input:
        influence=f"results/influence/{EVAL_CKPT}/influence.csv",
        sidecar=f"results/influence/{EVAL_CKPT}/influence.json",
        continue_mixture=mixture_file(EVAL_CKPT, "continue"),
        availability=AVAILABILITY_FILE.format(ckpt=EVAL_CKPT),
        rollout_mixtures=[ROLLOUT_MIXTURE.format(rollout=r) for r in ROLLOUTS],
        rollout_runs=ROLLOUT_RUNS,
        continue_run=CONTINUE_RUN,
        code=code("mixture_tikmix_c.py"),
    output:
        mixture_file(EVAL_CKPT, "tikmix_c"),
    log:
        "logs/mixture_tikmix_c/mixture_tikmix_c.log",
    benchmark:
        "benchmarks/rules/mixture_tikmix_c/mixture_tikmix_c.tsv"
    conda:
        "../../envs/tikmix.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        upstream=user_inputs_digest("mixture_tikmix_c"),
        tikmix_c=TIKMIX_C.as_params(),
        normalisation=NORMALISATION,
    script:
        script_path("mixture_tikmix_c.py")
