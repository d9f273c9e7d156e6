# Shared constants, wildcard constraints and every input function of the workflow.
import glob
import os
import re
from pathlib import Path

from snakemake.exceptions import WorkflowError

from tikmix import cost
from tikmix.config import ConfigError, check_config
from tikmix.core.gradient_pass import GradientPassSettings
from tikmix.data.tokenizer import agreed_special_tokens, tokenizer_file
from tikmix.mixing.priors import prior_kind
from tikmix.provenance import FileDigests, settings_digest
from tikmix.workflow import library_dependencies

REPO = os.path.dirname(os.path.abspath(workflow.main_snakefile))
DEMO = config["demo"]["fetch"]
DEMO_MANIFEST = "resources/demo/manifest.json"

DOMAINS = sorted(config["domains"])
TASKS = sorted(config["tasks"])
USER_CHECKPOINTS = dict(config["checkpoints"])
STAGE1_CHECKPOINTS = {
    f"stage1-{round(100 * fraction):03d}": fraction
    for fraction in config["stage1"]["checkpoint_fractions"]
}
CHECKPOINTS = list(USER_CHECKPOINTS) if USER_CHECKPOINTS else list(STAGE1_CHECKPOINTS)
# Fails in seconds, naming the key or the file, before any job: settings the code cannot finish
# with, user checkpoints (files, architecture, vocabulary) and the data files' structure.
try:
    # A cluster job parses the workflow again: its data files were read when the run started.
    check_config(
        config,
        demo=DEMO,
        checkpoints=CHECKPOINTS,
        check_data=workflow.is_main_process,
    )
except ConfigError as error:
    raise WorkflowError(str(error)) from None

# The EOS (document separator) and BOS ids your checkpoints' config.json name; None for stage 1.
SPECIAL_TOKENS = agreed_special_tokens(USER_CHECKPOINTS)
# A Hugging Face tokenizer directory stands for the tokenizer.json inside it.
TOKENIZER_FILE = (
    str(tokenizer_file(config["tokenizer"]["path"]))
    if config["tokenizer"]["path"]
    else None
)


wildcard_constraints:
    domain="|".join(map(re.escape, DOMAINS)),
    task="|".join(map(re.escape, TASKS)),
    ckpt="|".join(map(re.escape, CHECKPOINTS)),
    shard=r"\d+",


def code(script):
    """The rule's script plus every tikmix module it imports: editing one reruns its rules."""
    path = os.path.join(REPO, "scripts", script)
    return [path] + [
        os.path.join(REPO, dep) for dep in library_dependencies(path, REPO)
    ]


def script_path(script):
    return os.path.join(REPO, "scripts", script)


def source_files(domain):
    """Source files of a domain (the demo's appear only after fetch_demo_data has run)."""
    if DEMO:
        return [DEMO_MANIFEST]
    spec = config["domains"][domain]
    return sorted(
        {f for pattern in spec["paths"] for f in glob.glob(pattern, recursive=True)}
    )


def domain_sources(wildcards):
    return source_files(wildcards.domain)


def task_source(wildcards):
    return DEMO_MANIFEST if DEMO else config["tasks"][wildcards.task]["path"]


def tokenizer_sources(wildcards):
    return sorted({f for domain in DOMAINS for f in source_files(domain)})


def domain_dir(domain):
    return f"results/data/domains/{domain}"


def domain_files(split):
    return [f"{domain_dir(domain)}/{split}.npy" for domain in DOMAINS]


MIXTURE_FILE = "results/mixtures/{ckpt}/{method}.json"


def mixture_file(ckpt, method):
    return MIXTURE_FILE.format(ckpt=ckpt, method=method)


def checkpoint_dir(ckpt):
    """Where a checkpoint lives: the user's directory, or the one train_stage1 writes."""
    return USER_CHECKPOINTS.get(ckpt, f"results/checkpoints/{ckpt}")


def all_targets():
    targets = ["results/stage1/metrics.json"] if not USER_CHECKPOINTS else []
    targets += expand("results/influence/{ckpt}/influence.csv", ckpt=CHECKPOINTS)
    targets += mixture_targets()
    targets += evaluation_targets() if STAGE2_METHODS else []
    targets += ["results/report/report.md"]
    return targets


INFLUENCE = config["influence"]
EKFAC_SHARDS = range(INFLUENCE["ekfac"]["shards"])
# The settings every gradient pass reads, built once; rules pass them as `gradient_pass`.
GRADIENT_PASS = GradientPassSettings.from_config(config).as_params()
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


def domain_gradient_parts(wildcards):
    return expand(
        "results/influence/{ckpt}/grads/{domain}/part-{shard}.zarr",
        ckpt=wildcards.ckpt,
        domain=wildcards.domain,
        shard=range(INFLUENCE["shards_per_domain"]),
    )


MIXING = config["mixing"]
TIKMIX_M = MIXING["tikmix_m"]
# Eq. 6's normaliser, used wherever P̂ is computed (mixtures, responses, figure 4).
NORMALISATION = {
    "eps": MIXING["tikmix_d"]["eps"],
    "normaliser": MIXING["tikmix_d"]["normaliser"],
}
# TiKMiX-M confirms its proposal against w_D with the response: once if it is deterministic.
CONFIRM_REPLICATES = (
    1 if TIKMIX_M["response"] == "curvature" else TIKMIX_M["gate"]["replicates"]
)
MIXTURE_METHODS = ["natural", "uniform", "tikmix_d", "tikmix_m"]
MEGATRON_PREFIXES = {
    domain: spec["megatron_prefixes"]
    for domain, spec in config["domains"].items()
    if "megatron_prefixes" in spec
}
EXPORT_FORMATS = [
    fmt
    for fmt in MIXING["exports"]
    if fmt != "megatron.txt" or len(MEGATRON_PREFIXES) == len(DOMAINS)
]


def measurement_parts(ckpt, design):
    return expand(
        "results/measurements/{ckpt}/{design}/part-{shard}.csv",
        ckpt=ckpt,
        design=design,
        shard=range(MIXING["measurement"]["shards"]),
    )


def tikmix_m_responses(ckpt, design):
    """A TiKMiX-M design's measured responses: one curvature table, or the measurement parts."""
    if TIKMIX_M["response"] == "curvature":
        return [f"results/measurements/{ckpt}/{design}/curvature.csv"]
    return measurement_parts(ckpt, design)


def domain_lambda_stores(ckpt):
    return expand(
        "results/influence/{ckpt}/ekfac/domain_lambda/{domain}.zarr",
        ckpt=ckpt,
        domain=DOMAINS,
    )


def mixture_targets():
    return expand(MIXTURE_FILE, ckpt=CHECKPOINTS, method=MIXTURE_METHODS) + expand(
        "results/mixtures/{ckpt}/exports/{method}.{format}",
        ckpt=CHECKPOINTS,
        method=MIXTURE_METHODS,
        format=EXPORT_FORMATS,
    )


STAGE2 = config["stage2"]
BASELINES = config["baselines"]
# The checkpoint stage 2 continues from (and whose mixtures are compared): the last by default.
EVAL_CKPT = STAGE2["checkpoint"] or CHECKPOINTS[-1]
STAGE2_METHODS = list(STAGE2["methods"])
STAGE2_SEEDS = list(STAGE2["seeds"])
# The mixtures the report and its figures compare: a mixtures-only study (stage2.methods: [])
# shows the workflow's own mixtures.
REPORT_METHODS = STAGE2_METHODS or MIXTURE_METHODS
DOMAIN_DIRS = {domain: domain_dir(domain) for domain in DOMAINS}
TASK_FILES = {task: f"results/data/tasks/{task}.npz" for task in TASKS}
# Settings of tikmix.models.stage2.run_stage2 (STAGE2_KEYS), without the evaluation plan.
STAGE2_SETTINGS = {
    key: STAGE2[key]
    for key in (
        "tokens",
        "batch_size",
        "lr",
        "weight_decay",
        "schedule",
        "warmup_fraction",
        "optimizer_policy",
        "eval_batch_size",
    )
}


# The evaluation checkpoint's own task metrics: the "before" of every stage-2 record.
CHECKPOINT_TASK_METRICS = "results/evaluation/checkpoint_tasks.json"


def stage2_mixture(wildcards):
    return mixture_file(EVAL_CKPT, wildcards.method)


def evaluation_targets():
    return list(EVALUATION_FILES.values())


# Appendix D's defaults; `checks: additivity:` in the config overrides them.
ADDITIVITY = config["checks"]["additivity"]
PROJECTION_CHECK = config["checks"]["projection"]
RANKING_CHECK = config["checks"]["ranking"]
FIGURES = "results/report/figures"


def additivity_stems(ckpt):
    return [f"{FIGURES}/additivity_{ckpt}_{task}" for task in TASKS]


def heatmap_stems():
    return [f"{FIGURES}/influence_{ckpt}" for ckpt in CHECKPOINTS]


TRAJECTORIES_STEM = f"{FIGURES}/benefit_trajectories"


def projection_check_targets():
    """The projection-agreement table at the mixtures' checkpoint, when ranks are configured."""
    if not PROJECTION_CHECK["ranks"]:
        return []
    return [f"results/checks/{EVAL_CKPT}/projection_agreement.csv"]


PROJECTION_STEM = f"{FIGURES}/projection_agreement_{{ckpt}}"


# The influence pipeline's job outputs whose `compute` records make up TiKMiX-D's cost at a
# checkpoint (pure reductions add arrays and are not counted).
def influence_compute_sources(ckpt):
    influence = lambda *parts: os.path.join("results", "influence", ckpt, *parts)
    return {
        "domain gradients": expand(
            influence("grads", "{domain}", "part-{shard}.zarr"),
            domain=DOMAINS,
            shard=range(INFLUENCE["shards_per_domain"]),
        ),
        "task gradients": expand(influence("task_grads", "{task}.zarr"), task=TASKS),
        "EK-FAC": expand(
            influence("ekfac", "{kind}", "part-{shard}.zarr"),
            kind=["covariances", "lambda"],
            shard=EKFAC_SHARDS,
        )
        + [influence("ekfac", "eigen.zarr")],
        "preconditioning": [influence("preconditioned_tasks.zarr")],
        "influence matrix": [influence("influence.json")],
    }


def compute_sources(ckpt, methods):
    """method -> component -> job outputs: TiKMiX-M = TiKMiX-D's components + its own."""
    influence = influence_compute_sources(ckpt)
    mixture = lambda method: [mixture_file(ckpt, method)]
    sources = {}
    for method in methods:
        if method == "tikmix_d":
            sources[method] = {**influence, "TiKMiX-D solve": mixture("tikmix_d")}
        elif method == "tikmix_m":
            sources[method] = {
                **influence,
                "TiKMiX-D solve": mixture("tikmix_d"),
                "TiKMiX-M measurements and search": mixture("tikmix_m"),
            }
        else:
            sources[method] = {method: mixture(method)}
    return sources


COMPUTE_SOURCES = compute_sources(EVAL_CKPT, REPORT_METHODS)
MIXTURE_FIGURES = {
    "weights": f"{FIGURES}/mixture_weights_{{ckpt}}",
    "benefit": f"{FIGURES}/predicted_benefit_{{ckpt}}",
}
COMPUTE_STEM = f"{FIGURES}/compute"


def report_figures():
    """Section of report.md -> the PNG figures shown in it."""
    fill = lambda stem: stem.format(ckpt=EVAL_CKPT) + ".png"
    ranking = RANKING_CHECK["enabled"]
    return {
        "influence": [f"{stem}.png" for stem in heatmap_stems()] if ranking else [],
        "mixtures": [
            fill(MIXTURE_FIGURES["weights"]),
            fill(MIXTURE_FIGURES["benefit"]),
        ],
        "additivity": [
            f"{stem}.png"
            for stem in additivity_stems(EVAL_CKPT)
            if ADDITIVITY["enabled"]
        ],
        "ranking": [f"{TRAJECTORIES_STEM}.png"] if ranking else [],
        "compute": [f"{COMPUTE_STEM}.png"],
        "projection": [
            PROJECTION_STEM.format(ckpt=EVAL_CKPT) + ".png"
            for _ in projection_check_targets()
        ],
    }


# Random mixtures of figure 4 (schema key stage2.random_mixtures, default 3); the names follow
# tikmix.analysis.evaluation.random_mixture_name, not imported here to keep parsing light.
RANDOM_MIXTURES = [f"random{k}" for k in range(STAGE2["random_mixtures"])]
EVALUATION_FILES = {
    "table": "results/evaluation/table.csv",
    "summary": "results/evaluation/summary.csv",
    "figure4": "results/evaluation/figure4.csv",
    "figure4_stats": "results/evaluation/figure4.json",
}
EVALUATION_FIGURE_STEM = f"{FIGURES}/benefit_vs_improvement"


# The stage-2 files report.md reads (none when no method is evaluated).
REPORT_EVALUATION_KEYS = list(EVALUATION_FILES) if STAGE2_METHODS else []
REPORT_EVALUATION_FIGURES = [f"{EVALUATION_FIGURE_STEM}.png"] if STAGE2_METHODS else []


# Provenance (tikmix.provenance): every rule's `upstream` param is the digest of all settings and
# user inputs (by content) that its inputs were computed from. A change to any of them changes
# the param of every rule downstream, so the params trigger fires at every level of the chain,
# even when an interrupted rerun lost the outputs that recorded the change. The digests of a
# stage list the settings its rule reads (its params); a rule's own params stay in its params.
FILE_DIGESTS = FileDigests()
_digest = settings_digest


def _source_digest(kind, name, spec, paths):
    # The demo's files are written by fetch_demo_data, whose code is an input of it.
    return _digest(kind, name, spec, "demo" if DEMO else FILE_DIGESTS.files(paths))


SOURCE_DIGESTS = {
    domain: _source_digest(
        "domain", domain, config["domains"][domain], source_files(domain)
    )
    for domain in DOMAINS
}
TOKENIZER_DIGEST = _digest(
    (
        _digest("file", FILE_DIGESTS.file(TOKENIZER_FILE))
        if TOKENIZER_FILE
        else _digest({**config["tokenizer"], "path": None}, SOURCE_DIGESTS)
    ),
    SPECIAL_TOKENS,
)
DATA_DIGESTS = {
    domain: _digest(
        TOKENIZER_DIGEST,
        SOURCE_DIGESTS[domain],
        config["data"]["heldout_fraction"],
        config["data"]["max_tokens_per_domain"],
        config["seed"],
    )
    for domain in DOMAINS
}
TASK_DIGESTS = {
    task: _digest(
        TOKENIZER_DIGEST,
        _source_digest(
            "task",
            task,
            config["tasks"][task],
            [] if DEMO else [config["tasks"][task]["path"]],
        ),
        config["data"]["seq_len"],
    )
    for task in TASKS
}
ALL_DATA_DIGEST = _digest(DATA_DIGESTS)
ALL_TASKS_DIGEST = _digest(TASK_DIGESTS)


def prior_file():
    """The weights file named by stage1.prior, or None for natural / uniform / natural:<t>."""
    spec = config["stage1"]["prior"]
    return spec if prior_kind(spec) == "file" else None


PRIOR_DIGEST = _digest(
    ALL_DATA_DIGEST,
    config["stage1"]["prior"],
    FILE_DIGESTS.file(prior_file()) if prior_file() else None,
)
STAGE1_DIGEST = _digest(
    ALL_DATA_DIGEST,
    TOKENIZER_DIGEST,
    PRIOR_DIGEST,
    config["model"],
    config["stage1"],
    config["data"]["seq_len"],
    config["seed"],
    config["device"],
)
CHECKPOINT_DIGESTS = {
    ckpt: (
        _digest("checkpoint", FILE_DIGESTS.directory(USER_CHECKPOINTS[ckpt]))
        if ckpt in USER_CHECKPOINTS
        else _digest(STAGE1_DIGEST, ckpt)
    )
    for ckpt in CHECKPOINTS
}
_GRADIENT_SETTINGS = _digest(
    {k: v for k, v in INFLUENCE.items() if k not in ("ekfac", "task_batch_size")},
    config["data"]["seq_len"],
    config["seed"],
    config["device"],
)
_TASK_GRADIENT_SETTINGS = _digest(
    {
        k: INFLUENCE[k]
        for k in ("task_batch_size", "tracked_modules", "projection", "precision")
    },
    config["device"],
)


def gradients_digest(ckpt, domain):
    return _digest(CHECKPOINT_DIGESTS[ckpt], DATA_DIGESTS[domain], _GRADIENT_SETTINGS)


def task_gradients_digest(ckpt, task):
    return _digest(
        CHECKPOINT_DIGESTS[ckpt], TASK_DIGESTS[task], _TASK_GRADIENT_SETTINGS
    )


def ekfac_digest(ckpt):
    return _digest(
        CHECKPOINT_DIGESTS[ckpt], ALL_DATA_DIGEST, PRIOR_DIGEST, EKFAC_SAMPLE_PARAMS
    )


def preconditioned_digest(ckpt):
    return _digest(
        ekfac_digest(ckpt),
        {task: task_gradients_digest(ckpt, task) for task in TASKS},
        INFLUENCE["ekfac"]["damping"],
        INFLUENCE["ekfac"]["damping_factor"],
    )


def influence_digest(ckpt):
    return _digest(
        preconditioned_digest(ckpt),
        {domain: gradients_digest(ckpt, domain) for domain in DOMAINS},
    )


def domain_lambda_digest(ckpt, domain):
    return _digest(ekfac_digest(ckpt), DATA_DIGESTS[domain], DOMAIN_LAMBDA_PARAMS)


def candidates_digest(ckpt):
    return _digest(
        mixture_digest(ckpt, "tikmix_d"),
        PRIOR_DIGEST,
        NORMALISATION,
        TIKMIX_M["candidates"],
        TIKMIX_M["low"],
        TIKMIX_M["high"],
        config["seed"],
    )


def search_digest(ckpt):
    """The digest of TiKMiX-M's proposal (and so of its confirmation design)."""
    return _digest(
        measurements_digest(ckpt, "tikmix_m"),
        mixture_digest(ckpt, "tikmix_d"),
        PRIOR_DIGEST,
        NORMALISATION,
        TIKMIX_M["low"],
        TIKMIX_M["high"],
        TIKMIX_M["gate"],
        TIKMIX_M["search"],
        CONFIRM_REPLICATES,
        config["seed"],
    )


def measurements_digest(ckpt, design):
    """The digest of a TiKMiX-M design's responses (its mixtures' digest included)."""
    mixtures = candidates_digest(ckpt) if design == "tikmix_m" else search_digest(ckpt)
    if TIKMIX_M["response"] == "curvature":
        return _digest(
            mixtures,
            influence_digest(ckpt),
            {domain: domain_lambda_digest(ckpt, domain) for domain in DOMAINS},
        )
    return _digest(
        mixtures,
        CHECKPOINT_DIGESTS[ckpt],
        preconditioned_digest(ckpt),
        ALL_DATA_DIGEST,
        ALL_TASKS_DIGEST,
        MIXING["measurement"],
        TIKMIX_M["response"],
        TIKMIX_M["lookahead"],
        _GRADIENT_SETTINGS,
    )


def mixture_digest(ckpt, method):
    """The digest of results/mixtures/{ckpt}/{method}.json (any method of mixtures.smk or evaluate.smk)."""
    influence = influence_digest(ckpt)
    if method in ("natural", "uniform"):
        parts = (influence, ALL_DATA_DIGEST, NORMALISATION)
    elif method == "tikmix_d":
        parts = (
            influence,
            PRIOR_DIGEST,
            ALL_DATA_DIGEST,
            MIXING["tikmix_d"],
            MIXING["stage_tokens"],
        )
    elif method == "tikmix_m":
        parts = (
            search_digest(ckpt),
            measurements_digest(ckpt, "tikmix_m_confirm"),
            NORMALISATION,
        )
    elif method == "regmix":
        parts = (
            mixture_digest(ckpt, "natural"),
            TOKENIZER_DIGEST,
            ALL_DATA_DIGEST,
            ALL_TASKS_DIGEST,
            BASELINES["regmix"],
            STAGE2["tokens"],
        )
    elif method == "doremi":
        parts = (
            PRIOR_DIGEST,
            CHECKPOINT_DIGESTS[ckpt],
            TOKENIZER_DIGEST,
            ALL_DATA_DIGEST,
            BASELINES["doremi"],
            STAGE2["tokens"],
        )
    else:  # random{k}
        parts = (influence, NORMALISATION)
    return _digest(
        method, parts, config["data"]["seq_len"], config["seed"], config["device"]
    )


def checkpoint_metrics_digest():
    """The digest of the evaluation checkpoint's task metrics before stage 2."""
    return _digest(
        CHECKPOINT_DIGESTS[EVAL_CKPT], ALL_TASKS_DIGEST, STAGE2["eval_batch_size"]
    )


def stage2_digest(method):
    return _digest(
        STAGE2_SEEDS,
        checkpoint_metrics_digest(),
        mixture_digest(EVAL_CKPT, method),
        CHECKPOINT_DIGESTS[EVAL_CKPT],
        ALL_DATA_DIGEST,
        ALL_TASKS_DIGEST,
        STAGE2_SETTINGS,
    )


def additivity_digest(ckpt):
    return _digest(
        CHECKPOINT_DIGESTS[ckpt],
        ALL_DATA_DIGEST,
        influence_digest(ckpt),
        mixture_digest(ckpt, "tikmix_d"),
        ADDITIVITY,
    )


def ranking_digest():
    return _digest(
        {
            ckpt: (CHECKPOINT_DIGESTS[ckpt], influence_digest(ckpt))
            for ckpt in CHECKPOINTS
        }
    )


def projection_digest(ckpt):
    return _digest(
        CHECKPOINT_DIGESTS[ckpt],
        ALL_DATA_DIGEST,
        ALL_TASKS_DIGEST,
        PRIOR_DIGEST,
        PROJECTION_CHECK,
    )


def evaluation_digest():
    return _digest(
        {m: stage2_digest(m) for m in STAGE2_METHODS + RANDOM_MIXTURES},
        {m: mixture_digest(EVAL_CKPT, m) for m in STAGE2_METHODS},
        influence_digest(EVAL_CKPT),
        STAGE2["improvement_reference"],
        NORMALISATION,
    )


def mixtures_digest(ckpt, methods):
    return _digest(
        influence_digest(ckpt), {m: mixture_digest(ckpt, m) for m in methods}
    )


def report_digest():
    return _digest(
        ranking_digest(),
        mixtures_digest(EVAL_CKPT, STAGE2_METHODS),
        additivity_digest(EVAL_CKPT),
        [projection_digest(EVAL_CKPT) for _ in projection_check_targets()],
        evaluation_digest() if STAGE2_METHODS else None,
        None if USER_CHECKPOINTS else STAGE1_DIGEST,
    )


FILE_DIGESTS.save()


# The checks report.md reads: each switched off in the config is absent (the report says so).
REPORT_ADDITIVITY = (
    [f"results/checks/{EVAL_CKPT}/additivity_summary.csv"]
    if ADDITIVITY["enabled"]
    else []
)
REPORT_RANKING = ["results/checks/ranking.csv"] if RANKING_CHECK["enabled"] else []


# Resources from the cost model (tikmix.cost, arithmetic on each checkpoint's config.json): a
# job's --mem is its rule's estimated host peak (with headroom), its -t 3x its estimated FLOP time
# on an H100 at 30% MFU; both grow with `attempt` on a retry. `tikmix plan` prints the same table.
COST_SHAPES = cost.checkpoint_shapes(config, USER_CHECKPOINTS)
COSTS = {
    name: {c.rule: c for c in cost.rule_costs(shape, cost.Settings.from_config(config))}
    for name, shape in COST_SHAPES.items()
}


def _rule_cost(rule, wildcards):
    # the evaluation rules have no {ckpt}: they use the evaluation checkpoint
    ckpt = wildcards.get("ckpt", EVAL_CKPT) if USER_CHECKPOINTS else "stage1"
    return COSTS[ckpt][rule]


def cost_mem_mb(rule):
    return lambda wildcards, attempt: cost.job_mem_mb(
        _rule_cost(rule, wildcards), attempt
    )


def cost_runtime(rule):
    return lambda wildcards, attempt: cost.job_runtime_min(
        _rule_cost(rule, wildcards), attempt
    )
