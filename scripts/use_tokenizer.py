from tikmix.data.tokenizer import load_tokenizer, save_tokenizer, vocab_size
from tikmix.workflow import script_logging

with script_logging(snakemake) as log:
    tokenizer = load_tokenizer(snakemake.input.tokenizer)
    save_tokenizer(tokenizer, snakemake.output[0])
    log.info("using %s (%d tokens)", snakemake.input.tokenizer, vocab_size(tokenizer))
