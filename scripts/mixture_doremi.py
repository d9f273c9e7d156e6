from tikmix.core.mixture import read_mixture, write_mixture
from tikmix.data.tokenizer import load_tokenizer, vocab_size
from tikmix.mixing.doremi import doremi_mixture
from tikmix.workflow import script_logging

with script_logging(snakemake) as log:
    options = snakemake.params.doremi
    result = doremi_mixture(
        snakemake.params.domain_dirs,
        read_mixture(snakemake.input.prior, snakemake.params.domain_dirs),
        options["model"],
        vocab_size=vocab_size(load_tokenizer(snakemake.input.tokenizer)),
        reference=options["reference"],
        checkpoint_dir=snakemake.input.checkpoint,
        reference_tokens=options["reference_tokens"],
        proxy_tokens=options["proxy_tokens"],
        batch_size=options["batch_size"],
        seq_len=snakemake.params.seq_len,
        lr=options["lr"],
        eta=options["eta"],
        smoothing=options["smoothing"],
        seed=snakemake.params.seed,
        device=snakemake.params.device,
    )
    document = result.document(
        stage_tokens=snakemake.params.stage_tokens,
        provenance={"checkpoint": snakemake.wildcards.ckpt, "prior": snakemake.input.prior},
    )
    write_mixture(snakemake.output.mixture, document)
    result.trace.to_csv(snakemake.output.trace)
    log.info("DoReMi mixture: %s", result.weights.round(4).to_dict())
