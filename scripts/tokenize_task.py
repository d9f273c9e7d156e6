from tikmix.data.tasks import tokenize_task
from tikmix.workflow import script_logging

with script_logging(snakemake) as log:
    summary = tokenize_task(
        snakemake.params.path,
        snakemake.input.tokenizer,
        snakemake.output[0],
        snakemake.params.seq_len,
    )
    log.info("%s: %s", snakemake.wildcards.task, summary)
