from tikmix.data.stages import train_tokenizer
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    train_tokenizer(out=snakemake.output[0], **rule_settings(snakemake))
