from tikmix.models.stage1 import read_weights, train_stage1
from tikmix.workflow import script_logging

with script_logging(snakemake):
    train_stage1(
        domain_dirs=snakemake.params.domain_dirs,
        weights=read_weights(snakemake.input.prior),
        tokenizer_path=snakemake.input.tokenizer,
        model_options=snakemake.params.model,
        stage1=snakemake.params.stage1,
        seq_len=snakemake.params.seq_len,
        seed=snakemake.params.seed,
        checkpoints={
            name: (fraction, directory)
            for (name, fraction), directory in zip(
                snakemake.params.checkpoints.items(), snakemake.output.checkpoints, strict=True
            )
        },
        metrics_path=snakemake.output.metrics,
        device=snakemake.params.device,
    )
