"""Where a finished demo run's time went, from Snakemake's per-rule `benchmark:` files.

    .venv/bin/python benchmarks/bench_demo_time.py [--workdir .] [--cores 2] [--seeds N ...]

Prints the run's span (first job start to last job end, from the files' times), each rule's wall
and CPU seconds, the stage-2 seconds per (mixture, seed) run, and what the run would take with
other numbers of stage-2 seeds: the measured span with stage 2's CPU time rescaled, spread over
``--cores``. On a shared machine the wall times are inflated by the other load while the CPU
times are not, so the CPU-based lower bound (all jobs' CPU seconds / cores) is printed beside the
span: a run on idle cores lies between the two.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

STAGE2_RULE = "evaluate_stage2"


def read_benchmarks(workdir: Path) -> list[dict]:
    """One row per job: rule, name of its benchmark file, wall s, CPU s, end time."""
    rows = []
    for path in sorted((workdir / "benchmarks" / "rules").rglob("*.tsv")):
        rule = path.relative_to(workdir / "benchmarks" / "rules").parts[0]
        with path.open() as handle:
            (record,) = list(csv.DictReader(handle, delimiter="\t"))[-1:]
        wall = float(record["s"])
        cpu = float(record.get("cpu_time") or 0.0)
        end = path.stat().st_mtime
        rows.append({"rule": rule, "job": path.stem, "wall": wall, "cpu": cpu, "end": end})
    if not rows:
        raise SystemExit(f"no benchmark files under {workdir / 'benchmarks' / 'rules'}")
    return rows


def stage2_runs(workdir: Path) -> int:
    """How many (mixture, seed) stage-2 records the run trained (reused records not counted)."""
    records = list((workdir / "results" / "evaluation").glob("*/seed*.json"))
    reused = [p for p in records if '"same_runs_as"' in p.read_text()]
    return len(records) - len(reused)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("."))
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="*", default=[3, 5, 7, 10])
    args = parser.parse_args()
    rows = read_benchmarks(args.workdir)
    span = max(r["end"] for r in rows) - min(r["end"] - r["wall"] for r in rows)
    by_rule: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for row in rows:
        by_rule[row["rule"]][0] += row["wall"]
        by_rule[row["rule"]][1] += row["cpu"]
        by_rule[row["rule"]][2] += 1
    total_cpu = sum(r["cpu"] for r in rows)
    print(f"span of the run: {span / 60:.1f} min; all jobs' CPU time {total_cpu / 60:.1f} min")
    print(
        f"lower bound on {args.cores} idle cores (CPU / cores): {total_cpu / args.cores / 60:.1f} min"
    )
    print(f"\n{'rule':32s} {'jobs':>5s} {'wall s':>9s} {'CPU s':>9s} {'CPU share':>9s}")
    for rule, (wall, cpu, jobs) in sorted(by_rule.items(), key=lambda kv: -kv[1][1]):
        print(f"{rule:32s} {jobs:5d} {wall:9.1f} {cpu:9.1f} {cpu / total_cpu:9.1%}")
    runs = stage2_runs(args.workdir)
    if STAGE2_RULE in by_rule and runs:
        wall, cpu, _ = by_rule[STAGE2_RULE]
        seeds = len(list((args.workdir / "results" / "evaluation").glob("natural/seed*.json")))
        per_run_cpu = cpu / runs
        print(
            f"\nstage 2: {runs} trained (mixture, seed) runs, {seeds} seeds: "
            f"{wall / runs:.1f} s wall and {per_run_cpu:.1f} s CPU per run"
        )
        mixtures = runs / max(seeds, 1)
        print(f"{'seeds':>5s} {'CPU lower bound (min)':>22s} {'span rescaled (min)':>20s}")
        for n in args.seeds:
            extra_cpu = (n - seeds) * mixtures * per_run_cpu
            bound = (total_cpu + extra_cpu) / args.cores / 60
            rescaled = (span + extra_cpu / args.cores) / 60
            print(f"{n:5d} {bound:22.1f} {rescaled:20.1f}")


if __name__ == "__main__":
    main()
