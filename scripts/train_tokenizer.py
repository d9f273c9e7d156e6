from tikmix.data.config import domain_sources
from tikmix.data.tokenizer import sample_training_text, train_tokenizer, vocab_size
from tikmix.workflow import script_logging

with script_logging(snakemake) as log:
    sources = domain_sources(snakemake.params.domains)
    text = sample_training_text(sources, snakemake.params.sample_chars)
    tokenizer = train_tokenizer(text, snakemake.params.vocab_size, snakemake.output[0])
    log.info("byte-level BPE with %d tokens -> %s", vocab_size(tokenizer), snakemake.output[0])
