"""The cost model (tikmix.cost) against a real run's measured peaks, and its two process floors.

    .venv/bin/python benchmarks/bench_cost_model.py [RUN_DIR]

Prints the floors next to tikmix.cost's constants: the peak RSS of a process that imports a job's
libraries (the model job also runs a gradient pass of a 3-layer, d=16 model), measured both as a
plain process and as a Snakemake ``script:`` job with a ``benchmark:`` (what the workflow's jobs
are). Then, for a finished run of the demo config in RUN_DIR (default: this checkout), each
rule's estimated host peak against the largest and smallest ``max_rss`` of its jobs in
``RUN_DIR/benchmarks/rules/``.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml
from snakemake.utils import validate

from tikmix import cost

REPO = Path(__file__).resolve().parents[1]
FLOOR = """
import sys
import snakemake.script as _script  # noqa: F401  (a script job loads it to unpickle its object)
import tikmix.workflow
kind = snakemake.wildcards.kind if "snakemake" in globals() else sys.argv[1]
if kind == "model":
    import torch
    import tikmix.influence.stages
    from tikmix.influence.gradients import summed_gradients
    from tikmix.influence.tracking import select_modules
    from tikmix.models.llama import ModelConfig, TinyLlama
    config = ModelConfig(vocab_size=64, d_model=16, n_layers=3, n_heads=2, max_seq_len=32)
    model = TinyLlama(config)
    ids = torch.randint(0, 64, (4, 33))
    summed_gradients(model, select_modules(model), [ids, ids])
else:
    import pandas, zarr, tikmix.mixing.pipeline
status = open("/proc/self/status").read().splitlines()
peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
if "snakemake" in globals():
    open(snakemake.output[0], "w").write(str(peak))
else:
    print(peak)
"""


def floor_mib(kind: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", FLOOR, kind], capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip())


SNAKEFILE = """
rule all:
    input: expand("{kind}.txt", kind=["model", "light"])

rule floor:
    output: "{kind}.txt"
    benchmark: "benchmarks/{kind}.tsv"
    script: "floor.py"
"""


def snakemake_floors_mib() -> dict[str, float]:
    """``max_rss`` of the floor script run as a Snakemake job (its benchmark file)."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "Snakefile").write_text(SNAKEFILE)
        (Path(tmp) / "floor.py").write_text(FLOOR)
        subprocess.run(
            [sys.executable, "-m", "snakemake", "--cores", "1", "--quiet", "all"],
            cwd=tmp,
            check=True,
            capture_output=True,
        )
        return {
            kind: float(
                pd.read_csv(Path(tmp) / f"benchmarks/{kind}.tsv", sep="\t")["max_rss"].max()
            )
            for kind in ("model", "light")
        }


def measured(run: Path) -> pd.DataFrame:
    rows = []
    for tsv in sorted((run / "benchmarks" / "rules").rglob("*.tsv")):
        rule = tsv.relative_to(run / "benchmarks" / "rules").parts[0]
        rows.append({"rule": rule, "max_rss": pd.read_csv(tsv, sep="\t")["max_rss"].max()})
    frame = pd.DataFrame(rows)
    return frame.groupby("rule")["max_rss"].agg(["count", "min", "max"])


def main() -> None:
    run = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO
    jobs = snakemake_floors_mib()
    constants = {"model": cost.MODEL_JOB_FLOOR_MIB, "light": cost.LIGHT_JOB_FLOOR_MIB}
    for kind, constant in constants.items():
        print(
            f"{kind}-job floor: process {floor_mib(kind):.0f} MiB, Snakemake job "
            f"{jobs[kind]:.0f} MiB; tikmix.cost {constant} MiB"
        )
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"), set_default=True)
    settings = cost.Settings.from_config(config, device="cpu")  # the demo ran on 2 CPU cores
    (shape,) = cost.checkpoint_shapes(config, {}).values()
    costs = {c.rule: c for c in cost.rule_costs(shape, settings)}
    # what the workflow requests: sized for `device: auto`, i.e. tensors on a GPU
    requested = {c.rule: c for c in cost.rule_costs(shape, cost.Settings.from_config(config))}
    table = measured(run)
    print(
        f"\n{'rule':<30}{'jobs':>5}{'max MiB':>9}{'min MiB':>9}{'estimate':>10}{'est/max':>9}"
        f"{'mem_mb/max':>12}"
    )
    for rule, row in table.iterrows():
        if rule not in costs:  # a rule the cost model does not size keeps fixed resources
            print(f"{rule:<30}{int(row['count']):>5}{row['max']:>9.0f}{row['min']:>9.0f}{'-':>10}")
            continue
        estimate = costs[rule].host_bytes / cost.MIB
        request = cost.job_mem_mb(requested[rule]) / row["max"]
        print(
            f"{rule:<30}{int(row['count']):>5}{row['max']:>9.0f}{row['min']:>9.0f}"
            f"{estimate:>10.0f}{estimate / row['max']:>9.2f}{request:>12.2f}"
        )


if __name__ == "__main__":
    main()
