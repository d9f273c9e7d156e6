"""Lint gates: ruff, snakefmt and `snakemake --lint` must be clean (issue: cluster-ready CI)."""

from __future__ import annotations

import shutil
import subprocess
import sys

from conftest import REPO


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)


def test_ruff_is_clean():
    result = _run(sys.executable, "-m", "ruff", "check", "tikmix", "scripts", "tests", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


def test_snakefmt_is_clean():
    snakefmt = shutil.which("snakefmt") or str(REPO / ".venv/bin/snakefmt")
    result = _run(snakefmt, "--check", "Snakefile", "workflow/rules")
    assert result.returncode == 0, result.stdout + result.stderr


def test_snakemake_lint_has_no_findings():
    result = _run(sys.executable, "-m", "snakemake", "--lint", "--cores", "1")
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "Lints for" not in output, output[-6000:]
