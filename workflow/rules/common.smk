# Config, wildcard constraints, paths and targets shared by the rule files, and the `upstream`
# param every rule carries. Constants and input functions of one rule file live in that file.
import glob
import os
import re
from pathlib import Path

from snakemake.exceptions import WorkflowError

from tikmix import cost
from tikmix.config import ConfigError, check_config
from tikmix.core.gradient_pass import GradientPassSettings
from tikmix.core.settings import Normalisation
from tikmix.provenance import UserInputsDigest
from tikmix.validation import CheckedFiles
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
# Fails naming the key or the file, before any job: settings the code cannot finish with, user
# checkpoints (files, architecture, vocabulary, positions) and every row of the data files (read
# once per version of a file, remembered under .snakemake/).
try:
    # A cluster job parses the workflow again: its data files were read when the run started.
    check_config(
        config,
        demo=DEMO,
        checkpoints=CHECKPOINTS,
        check_data=workflow.is_main_process,
        checked_files=CheckedFiles(),
    )
except ConfigError as error:
    raise WorkflowError(str(error)) from None

# Every rule's `upstream` param, user_inputs_digest("<rule>"): the content digest of the job's
# inputs that no rule writes (data, task, tokenizer and prior files, checkpoint directories).
# A rule's settings reach it through its own params; a rerun upstream reaches it as "input
# updated by another job" (tikmix/provenance.py says why no more is needed).
user_inputs_digest = UserInputsDigest(workflow)


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
    targets += list(RECOMMENDATION_FILES.values())  # recommend.smk
    targets += ["results/report/report.md"]
    return targets


INFLUENCE = config["influence"]
EKFAC_SHARDS = range(INFLUENCE["ekfac"]["shards"])
# The settings every gradient pass reads, built once; rules pass them as `gradient_pass`.
GRADIENT_PASS = GradientPassSettings.from_config(config).as_params()

MIXING = config["mixing"]
# Eq. 6's normaliser, used wherever P̂ is computed (mixtures, responses, figure 4).
NORMALISATION = Normalisation.from_config(config).as_params()
MIXTURE_METHODS = ["continue", "natural", "uniform", "tikmix_d", "tikmix_m"]
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


def mixture_targets():
    return expand(MIXTURE_FILE, ckpt=CHECKPOINTS, method=MIXTURE_METHODS) + expand(
        "results/mixtures/{ckpt}/exports/{method}.{format}",
        ckpt=CHECKPOINTS,
        method=MIXTURE_METHODS,
        format=EXPORT_FORMATS,
    )


STAGE2 = config["stage2"]
# The checkpoint stage 2 continues from (and whose mixtures are compared): the last by default.
EVAL_CKPT = STAGE2["checkpoint"] or CHECKPOINTS[-1]
# Rules' mem_mb and runtime from the cost model (tikmix.cost; `tikmix plan` prints the same table).
RESOURCES = cost.WorkflowResources(config, USER_CHECKPOINTS, EVAL_CKPT)
STAGE2_METHODS = list(STAGE2["methods"])
# Each task's items split by content (tikmix.data.task_split): the rules that steer read the
# steering half; only evaluate_checkpoint and evaluate_stage2 read the evaluation half.
TASK_OUTPUTS = {
    "steering": "results/data/tasks/{task}/steering.npz",
    "evaluation": "results/data/tasks/{task}/evaluation.npz",
    "split": "results/data/tasks/{task}/split.json",
}
STEERING_TASK_FILES, EVALUATION_TASK_FILES, TASK_SPLITS = (
    {task: TASK_OUTPUTS[part].format(task=task) for task in TASKS}
    for part in ("steering", "evaluation", "split")
)


def evaluation_targets():
    return list(EVALUATION_FILES.values())


# Appendix D's defaults; `checks: additivity:` in the config overrides them.
ADDITIVITY = config["checks"]["additivity"]
PROJECTION_CHECK = config["checks"]["projection"]
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


EVALUATION_FILES = {
    "table": "results/evaluation/table.csv",
    "summary": "results/evaluation/summary.csv",
    "figure4": "results/evaluation/figure4.csv",
    "figure4_stats": "results/evaluation/figure4.json",
    "paired": "results/evaluation/paired.csv",
    "paired_stats": "results/evaluation/paired.json",
}
EVALUATION_FIGURE_STEM = f"{FIGURES}/benefit_vs_improvement"


# Input functions of the rule files, by stage family (Snakemake's linter keeps them here).


def source_files(domain):
    """Source files of a domain (the demo's appear only after fetch_demo_data has run)."""
    if DEMO:
        return [DEMO_MANIFEST]
    spec = config["domains"][domain]
    return sorted(
        {f for pattern in spec["paths"] for f in glob.glob(pattern, recursive=True)}
    )


def domain_gradient_parts(wildcards):
    return expand(
        "results/influence/{ckpt}/grads/{domain}/part-{shard}.zarr",
        ckpt=wildcards.ckpt,
        domain=wildcards.domain,
        shard=range(INFLUENCE["shards_per_domain"]),
    )


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
