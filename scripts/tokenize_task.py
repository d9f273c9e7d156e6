from tikmix.data.task_split import tokenize_task_split
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake) as log:
    summary = tokenize_task_split(
        task=snakemake.wildcards.task,
        tokenizer=snakemake.input.tokenizer,
        steering_path=snakemake.output.steering,
        evaluation_path=snakemake.output.evaluation,
        split_path=snakemake.output.split,
        **rule_settings(snakemake),
    )
    log.info("%s: %s", snakemake.wildcards.task, summary)
