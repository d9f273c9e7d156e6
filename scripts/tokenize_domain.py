from pathlib import Path

from tikmix.data.config import domain_sources
from tikmix.data.domains import tokenize_domain
from tikmix.workflow import script_logging

with script_logging(snakemake) as log:
    domain = snakemake.wildcards.domain
    source = domain_sources({domain: snakemake.params.spec})[domain]
    meta = tokenize_domain(
        source,
        snakemake.input.tokenizer,
        Path(snakemake.output.meta).parent,
        seed=snakemake.params.seed,
        heldout_fraction=snakemake.params.heldout_fraction,
        max_tokens=snakemake.params.max_tokens,
        special_tokens=snakemake.params.special_tokens,
    )
    log.info(
        "%s: %d train / %d held-out tokens",
        domain,
        meta["n_tokens_train"],
        meta["n_tokens_heldout"],
    )
