from tikmix.core.mixture import read_mixture, write_mixture
from tikmix.data.tokenizer import load_tokenizer, vocab_size
from tikmix.mixing.regmix import DirichletSettings, regmix_mixture
from tikmix.workflow import script_logging

with script_logging(snakemake) as log:
    options = snakemake.params.regmix
    result = regmix_mixture(
        snakemake.params.domain_dirs,
        snakemake.params.task_files,
        read_mixture(snakemake.input.prior, snakemake.params.domain_dirs),
        options["model"],
        vocab_size=vocab_size(load_tokenizer(snakemake.input.tokenizer)),
        n_proxies=options["n_proxies"],
        tokens=options["tokens"],
        batch_size=options["batch_size"],
        seq_len=snakemake.params.seq_len,
        lr=options["lr"],
        settings=DirichletSettings(**options["dirichlet"]),
        n_simulations=options["n_simulations"],
        top_k=options["top_k"],
        seed=snakemake.params.seed,
        device=snakemake.params.device,
        num_threads=snakemake.threads,
    )
    document = result.document(
        stage_tokens=snakemake.params.stage_tokens,
        provenance={"checkpoint": snakemake.wildcards.ckpt, "prior": snakemake.input.prior},
    )
    write_mixture(snakemake.output.mixture, document)
    result.runs.to_csv(snakemake.output.runs, index=False)
    log.info("RegMix mixture: %s", result.weights.round(4).to_dict())
