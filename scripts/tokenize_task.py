from tikmix.data.tasks import tokenize_task
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake) as log:
    summary = tokenize_task(
        tokenizer=snakemake.input.tokenizer,
        out_path=snakemake.output[0],
        **rule_settings(snakemake),
    )
    log.info("%s: %s", snakemake.wildcards.task, summary)
