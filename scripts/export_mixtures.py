from tikmix.mixing.stages import export_mixtures
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    export_mixtures(
        documents=snakemake.input.documents, outs=snakemake.output, **rule_settings(snakemake)
    )
