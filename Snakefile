# TiKMiX: semi-dynamic data mixtures via Group Influence.
# The DAG follows the paper's figure 2: data -> checkpoints -> influence (gradients, EK-FAC, matrix)
# -> mixtures (TiKMiX-D, TiKMiX-M, baselines) -> checks -> stage-2 evaluation -> report.
import os

from snakemake.exceptions import WorkflowError
from snakemake.utils import min_version, validate

from tikmix.config import check_schema
from tikmix.core.errors import ConfigError

min_version("9.0")


# The embedded demo's config is read only when no --configfile is given: a user's file is the
# whole study (Snakemake would otherwise merge it into the demo's domains, tasks and checkpoints).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


# One line naming an unknown key or a bad value (Snakemake's validate would print the schema).
try:
    check_schema(
        config, os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml")
    )
except ConfigError as error:
    raise WorkflowError(str(error)) from None
validate(config, "workflow/schemas/config.schema.yaml", set_default=True)


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/influence.smk"
include: "workflow/rules/mixtures.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/recommend.smk"
include: "workflow/rules/calibrate.smk"
include: "workflow/rules/checks.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),


# Each rule that runs jobs carries its own upstream=user_inputs_digest("<rule>") (common.smk).
if missing_upstream := user_inputs_digest.rules_without_it():
    raise WorkflowError(
        f"rule(s) {', '.join(missing_upstream)}: params lack "
        'upstream=user_inputs_digest("<rule name>") (tikmix/provenance.py)'
    )
