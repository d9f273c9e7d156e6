# Shared constants, wildcard constraints and every input function of the workflow.
import glob
import os
import re

from tikmix.config import check_config
from tikmix.workflow import library_dependencies

REPO = os.path.dirname(os.path.abspath(workflow.main_snakefile))
DEMO = config["demo"]["fetch"]
DEMO_MANIFEST = "resources/demo/manifest.json"

check_config(config, demo=DEMO)

DOMAINS = sorted(config["domains"])
TASKS = sorted(config["tasks"])
USER_CHECKPOINTS = dict(config["checkpoints"])
STAGE1_CHECKPOINTS = {
    f"stage1-{round(100 * fraction):03d}": fraction
    for fraction in config["stage1"]["checkpoint_fractions"]
}
CHECKPOINTS = list(USER_CHECKPOINTS) if USER_CHECKPOINTS else list(STAGE1_CHECKPOINTS)


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
    return sorted({f for pattern in spec["paths"] for f in glob.glob(pattern, recursive=True)})


def domain_sources(wildcards):
    return source_files(wildcards.domain)


def task_source(wildcards):
    return DEMO_MANIFEST if DEMO else config["tasks"][wildcards.task]["path"]


def tokenizer_sources(wildcards):
    return sorted({f for domain in DOMAINS for f in source_files(domain)})


def domain_dir(domain):
    return f"results/data/domains/{domain}"


def domain_files(split):
    return expand("results/data/domains/{domain}/{split}.npy", domain=DOMAINS, split=split)


def checkpoint_dir(ckpt):
    """Where a checkpoint lives: the user's directory, or the one train_stage1 writes."""
    return USER_CHECKPOINTS.get(ckpt, f"results/checkpoints/{ckpt}")


def all_targets():
    targets = ["results/stage1/metrics.json"] if not USER_CHECKPOINTS else []
    targets += expand("results/influence/{ckpt}/influence.csv", ckpt=CHECKPOINTS)
    return targets


INFLUENCE = config["influence"]
EKFAC_SHARDS = range(INFLUENCE["ekfac"]["shards"])
# The EK-FAC fit samples one dataset from the prior mixture; each shard job takes its slice.
EKFAC_SAMPLE_PARAMS = dict(
    tokens=INFLUENCE["ekfac"]["tokens"],
    shards=INFLUENCE["ekfac"]["shards"],
    fisher=INFLUENCE["ekfac"]["fisher"],
    seq_len=config["data"]["seq_len"],
    batch_size=INFLUENCE["batch_size"],
    tracked_modules=INFLUENCE["tracked_modules"],
    domain_dirs={domain: domain_dir(domain) for domain in DOMAINS},
    seed=config["seed"],
    device=config["device"],
)


def domain_gradient_parts(wildcards):
    return expand(
        "results/influence/{ckpt}/grads/{domain}/part-{shard}.zarr",
        ckpt=wildcards.ckpt,
        domain=wildcards.domain,
        shard=range(INFLUENCE["shards_per_domain"]),
    )
