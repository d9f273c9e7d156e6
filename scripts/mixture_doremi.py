from tikmix.models.proxies import write_doremi_mixture
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    write_doremi_mixture(
        prior_path=snakemake.input.prior,
        checkpoint_dir=snakemake.input.checkpoint,
        tokenizer_path=snakemake.input.tokenizer,
        mixture_path=snakemake.output.mixture,
        trace_path=snakemake.output.trace,
        availability_path=snakemake.input.availability,
        checkpoint_name=snakemake.wildcards.ckpt,
        **rule_settings(snakemake),
    )
