"""Run the workflow through the `snakemake` CLI and read the jobs a dry-run plans.

Snakemake decides what to rerun from each output's recorded inputs, params and code, and from
modification times. The declared code inputs of every rule (``code()`` in common.smk) are absolute
paths into the code the workflow runs from. A test session therefore runs the workflow from a
*snapshot* of the code (:func:`snapshot_code`): edits to the checkout while the session runs do not
make its working directories stale, and a test can edit a module of the snapshot, which is exactly
what a developer's edit looks like to Snakemake, without touching the repository.

A :class:`Workflow` is a working directory (``config.yaml`` and everything the workflow wrote,
``.snakemake/`` metadata included) plus the code it runs. :meth:`Workflow.copy` keeps modification
times, so a copy of an up-to-date directory is up to date too, and :meth:`Workflow.plan` parses a
dry-run into :class:`Job` records (rule, wildcards, inputs, outputs, reason).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
#: What a run needs from the repository: the Snakefile finds its default profile, schema, rule
#: files, scripts, conda environment files and (through PYTHONPATH) the library relative to its
#: own directory. A new top-level path the rules refer to belongs here.
CODE_PATHS = ("Snakefile", "workflow", "scripts", "tikmix", "profiles", "config", "envs")

_JOB_HEADER = re.compile(r"^(?:local)?(?:rule|checkpoint) (\S+):$")
_STATS_ROW = re.compile(r"^(\S+)\s+(\d+)$")


def snapshot_code(dest: Path) -> Path:
    """Copy the workflow and library code (:data:`CODE_PATHS`) of the checkout to ``dest``."""
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in CODE_PATHS:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=ignore)
        else:
            shutil.copy2(source, dest / name)
    return dest


@dataclass(frozen=True)
class Job:
    """One job of a dry-run's plan, as Snakemake prints it."""

    rule: str
    wildcards: Mapping[str, str] = field(default_factory=dict)
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    reason: str = ""

    @property
    def key(self) -> tuple[str, tuple[str, ...]]:
        """What identifies a job across plans: its rule and outputs (not why it runs)."""
        return self.rule, tuple(sorted(self.outputs))

    def __str__(self) -> str:
        wildcards = ",".join(f"{k}={v}" for k, v in sorted(self.wildcards.items()))
        return f"{self.rule}[{wildcards}]" if wildcards else self.rule


def _split_list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def parse_plan(stdout: str) -> list[Job]:
    """The jobs of a dry-run's output, checked against the run's own "Job stats" table.

    Raises ``ValueError`` if the jobs found and the table disagree (the output format changed).
    """
    lines = stdout.splitlines()
    jobs: list[Job] = []
    stats: Counter[str] = Counter()
    i = 0
    while i < len(lines):
        header = _JOB_HEADER.match(lines[i])
        if header:
            fields: dict[str, str] = {}
            i += 1
            while i < len(lines) and lines[i].startswith("    "):
                key, _, value = lines[i].strip().partition(": ")
                fields[key] = value
                i += 1
            wildcards = dict(
                item.split("=", 1) for item in _split_list(fields.get("wildcards", ""))
            )
            jobs.append(
                Job(
                    rule=header.group(1),
                    wildcards=wildcards,
                    inputs=_split_list(fields.get("input", "")),
                    outputs=_split_list(fields.get("output", "")),
                    reason=fields.get("reason", ""),
                )
            )
            continue
        if lines[i].startswith("Job stats:") and not stats:
            i += 3  # title, column header, rule
            while i < len(lines) and (row := _STATS_ROW.match(lines[i])):
                if row.group(1) != "total":
                    stats[row.group(1)] = int(row.group(2))
                i += 1
            continue
        i += 1
    if Counter(job.rule for job in jobs) != stats:
        raise ValueError(
            f"dry-run listed jobs {dict(Counter(job.rule for job in jobs))} but its job stats "
            f"table says {dict(stats)}: has Snakemake's dry-run output changed?"
        )
    return jobs


def job_counts(jobs: Iterable[Job]) -> dict[str, int]:
    """Rule → number of jobs."""
    return dict(sorted(Counter(job.rule for job in jobs).items()))


def describe(jobs: Iterable[Job]) -> str:
    """A job list for a test's output: counts per rule, then every job."""
    jobs = sorted(jobs, key=str)
    counts = ", ".join(f"{rule}: {n}" for rule, n in job_counts(jobs).items())
    return f"{len(jobs)} jobs ({counts or 'none'})\n" + "".join(f"  {job}\n" for job in jobs)


def not_downstream(jobs: Iterable[Job], roots: Iterable[Job]) -> list[Job]:
    """Jobs of a plan that are neither ``roots`` nor consume an output of another planned job.

    In a plan caused by one change, every job is either directly affected by the change (a root)
    or downstream of one: anything else is a spurious rerun.
    """
    jobs = list(jobs)
    root_keys = {job.key for job in roots}
    produced = {path: job.key for job in jobs for path in job.outputs}
    return [
        job
        for job in jobs
        if job.key not in root_keys
        and not any(produced.get(path, job.key) != job.key for path in job.inputs)
    ]


def assert_plan_is_forcerun_of(
    planned: Iterable[Job], forced: Iterable[Job], roots: Iterable[Job]
) -> None:
    """``planned`` is exactly ``forced`` (a `--forcerun` of the roots) and every planned job is a
    root or consumes a planned job's output: a change reran all that follows it and no more."""
    planned, forced = list(planned), list(forced)
    spurious = not_downstream(planned, roots)
    assert not spurious, "jobs neither changed nor downstream of a change:\n" + describe(spurious)
    planned_keys, forced_keys = {job.key for job in planned}, {job.key for job in forced}
    missing = [job for job in forced if job.key not in planned_keys]
    extra = [job for job in planned if job.key not in forced_keys]
    assert not missing and not extra, (
        f"planned but not downstream of the roots:\n{describe(extra)}"
        f"downstream of the roots but not planned:\n{describe(missing)}"
    )


@dataclass(frozen=True)
class Workflow:
    """A working directory of the workflow and the code it runs (the checkout by default)."""

    workdir: Path
    code: Path = REPO

    @property
    def configfile(self) -> Path:
        return self.workdir / "config.yaml"

    def config(self) -> dict:
        return yaml.safe_load(self.configfile.read_text())

    def write_config(self, config: dict) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.configfile.write_text(yaml.safe_dump(config))

    def command(self, *args: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(self.code / "Snakefile"),
            "--directory",
            str(self.workdir),
            "--configfile",
            str(self.configfile),
            "--cores",
            "2",
            *args,
        ]

    def environment(self, **extra: str) -> dict[str, str]:
        """The jobs import the library from ``code`` (before any installed copy)."""
        path = os.pathsep.join(p for p in (str(self.code), os.environ.get("PYTHONPATH")) if p)
        return {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": path, **extra}

    def snakemake(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run ``snakemake *args``; with ``check``, an ``AssertionError`` with its output on failure."""
        result = subprocess.run(
            self.command(*args),
            capture_output=True,
            text=True,
            env=self.environment(),
            cwd=self.workdir,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"snakemake {' '.join(args)} in {self.workdir} failed ({result.returncode}):\n"
                f"{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
            )
        return result

    def plan(self, *args: str) -> list[Job]:
        """The jobs ``snakemake --dry-run *args`` would run."""
        return parse_plan(self.snakemake("--dry-run", *args).stdout)

    def copy(self, dest: Path) -> Workflow:
        """A copy of the working directory (modification times and metadata kept), same code."""
        shutil.copytree(self.workdir, dest, symlinks=True)
        return Workflow(dest, self.code)
