from tikmix.data.stages import tokenize_domain
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    tokenize_domain(
        domain=snakemake.wildcards.domain,
        tokenizer_path=snakemake.input.tokenizer,
        meta=snakemake.output.meta,
        **rule_settings(snakemake),
    )
