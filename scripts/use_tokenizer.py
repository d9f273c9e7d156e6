from tikmix.data.stages import use_tokenizer
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    use_tokenizer(
        tokenizer_path=snakemake.input.tokenizer,
        out=snakemake.output[0],
        **rule_settings(snakemake),
    )
