from tikmix.models.proxies import write_regmix_mixture
from tikmix.workflow import rule_settings, script_logging

with script_logging(snakemake):
    write_regmix_mixture(
        prior_path=snakemake.input.prior,
        tokenizer_path=snakemake.input.tokenizer,
        mixture_path=snakemake.output.mixture,
        runs_path=snakemake.output.runs,
        availability_path=snakemake.input.availability,
        checkpoint_name=snakemake.wildcards.ckpt,
        num_threads=snakemake.threads,
        **rule_settings(snakemake),
    )
