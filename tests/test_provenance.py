"""Provenance digests of user inputs (every rule's ``upstream`` param, the file digest helper),
strict JSON outputs, and the CLI's stated minimum rows."""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from workflow_helpers import job_counts, parse_plan, snapshot_code

from tikmix.cli import main
from tikmix.config import MIN_SURROGATE_ROWS
from tikmix.core.atomic import restore_nan, write_json_atomic
from tikmix.core.digest import file_sha256, named_files_sha256
from tikmix.mixing.candidates import latin_hypercube_mixtures
from tikmix.mixing.surrogate import fit_surrogate
from tikmix.provenance import FileDigests, settings_digest


def test_settings_digest_ignores_key_order_and_sees_every_value():
    assert settings_digest({"a": 1, "b": [2, 3]}) == settings_digest({"b": [2, 3], "a": 1})
    assert settings_digest({"a": 1, "b": [2, 3]}) != settings_digest({"a": 1, "b": [3, 2]})


def test_file_digest_follows_content_through_in_place_overwrites(tmp_path):
    """Same size, mtime restored: the inode and bytes are what the cache and digest see."""
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"a" * 64)
    cache = tmp_path / "digests.json"
    digests = FileDigests(cache)
    before = digests.file(path)
    digests.save()
    assert json.loads(cache.read_text())[str(path)][3] == before
    assert FileDigests(cache).file(path) == before, "a cache hit"

    stat = path.stat()
    path.write_bytes(b"b" * 64)  # in place: same inode and size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert FileDigests(cache).file(path) != before


def test_directory_digest_skips_snakemake_timestamps(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    digests = FileDigests(None)
    before = digests.directory(tmp_path)
    (tmp_path / ".snakemake_timestamp").write_text("")
    assert digests.directory(tmp_path) == before
    (tmp_path / "model.safetensors").write_bytes(b"x")
    assert set(digests.directory(tmp_path)) == {"config.json", "model.safetensors"}


def test_file_sha256_matches_hashlib_across_chunks(tmp_path):
    data = bytes(range(256)) * 50
    (tmp_path / "a").write_bytes(data)
    (tmp_path / "b").write_bytes(b"b")
    assert file_sha256(tmp_path / "a", chunk_bytes=1000) == hashlib.sha256(data).hexdigest()
    expected = hashlib.sha256(b"a\0" + data + b"b\0b").hexdigest()
    assert named_files_sha256([tmp_path / "a", tmp_path / "b"], chunk_bytes=7) == expected


#: A toy workflow with the real ``upstream`` param: ``made`` reads a user file, ``used`` reads
#: ``made``'s output, a user directory (a checkpoint) and its code.
TOY_WORKFLOW = """
from tikmix.provenance import UserInputsDigest

user_inputs_digest = UserInputsDigest(workflow)


rule used:
    input:
        made="made.txt",
        checkpoint="checkpoint",
        code="code.py",
    output:
        "used.txt",
    params:
        upstream=user_inputs_digest("used"),
    shell:
        "cat {input.made} > {output}"


rule made:
    input:
        "user.txt",
    output:
        "made.txt",
    params:
        upstream=user_inputs_digest("made"),
    shell:
        "cp {input} {output}"
"""


def _toy_plan(workdir: Path, *args: str) -> list:
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(workdir / "Snakefile"),
               "--directory", str(workdir), "--cores", "1", *args]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=workdir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return parse_plan(result.stdout) if "--dry-run" in args else []


def _replace_keeping_mtime(path: Path, data: bytes) -> None:
    """New bytes at an unchanged (old) modification time: Snakemake's mtime trigger is blind."""
    stat = path.stat()
    path.write_bytes(data)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.mark.workflow
def test_upstream_param_reruns_on_user_input_bytes_only(tmp_path):
    """The digest sees the bytes of the inputs no rule writes, a directory's files included, and
    Snakemake carries the rerun downstream; the rule's code input is left to Snakemake."""
    (tmp_path / "Snakefile").write_text(TOY_WORKFLOW)
    (tmp_path / "user.txt").write_text("one")
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "code.py").write_text("x = 1\n")
    _toy_plan(tmp_path)
    assert _toy_plan(tmp_path, "--dry-run") == []

    # A file copied in with its old mtime (a new inode: the digest cache recomputes it).
    (tmp_path / "user.txt").rename(tmp_path / "old.txt")
    shutil.copy2(tmp_path / "old.txt", tmp_path / "user.txt")
    _replace_keeping_mtime(tmp_path / "user.txt", b"two")
    plan = _toy_plan(tmp_path, "--dry-run")
    assert job_counts(plan) == {"made": 1, "used": 1}
    assert [j.rule for j in plan if j.reason.startswith("Params have changed")] == ["made"]
    _toy_plan(tmp_path)
    assert (tmp_path / "used.txt").read_text() == "two"

    # Weights overwritten in place, the directory's mtime restored.
    directory = (tmp_path / "checkpoint").stat()
    (tmp_path / "checkpoint" / "model.safetensors").write_bytes(b"other!!")
    os.utime(tmp_path / "checkpoint", ns=(directory.st_atime_ns, directory.st_mtime_ns))
    plan = _toy_plan(tmp_path, "--dry-run")
    assert job_counts(plan) == {"used": 1} and plan[0].reason.startswith("Params have changed")
    _toy_plan(tmp_path)

    _replace_keeping_mtime(tmp_path / "code.py", b"x = 2\n")
    assert _toy_plan(tmp_path, "--dry-run") == [], "code is Snakemake's, not the digest's"


@pytest.mark.workflow
def test_every_rule_must_carry_its_own_upstream_param(workflow_dir, tmp_path):
    """The Snakefile refuses a rule whose params lack ``upstream=user_inputs_digest("<rule>")``
    or name another rule; the checkout's rules all pass (every other workflow test parses it)."""
    code = snapshot_code(tmp_path / "code")
    rules = code / "workflow" / "rules"
    mixtures = (rules / "mixtures.smk").read_text()
    dropped = '        upstream=user_inputs_digest("curvature_responses"),\n'
    assert dropped in mixtures
    (rules / "mixtures.smk").write_text(mixtures.replace(dropped, ""))
    checks = (rules / "checks.smk").read_text()
    assert 'upstream=user_inputs_digest("ranking")' in checks
    checks = checks.replace('user_inputs_digest("ranking")', 'user_inputs_digest("report")')
    (rules / "checks.smk").write_text(checks)
    command = [sys.executable, "-m", "snakemake", "--snakefile", str(code / "Snakefile"),
               "--directory", str(workflow_dir), "--configfile",
               str(workflow_dir / "config.yaml"), "--cores", "1", "--dry-run"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(code)}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=workflow_dir)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "rule(s) curvature_responses, ranking: params lack upstream" in output, output[-3000:]


def test_json_outputs_write_null_and_a_reason_for_nan(tmp_path):
    path = tmp_path / "quality.json"
    write_json_atomic(path, {"spearman": float("nan"), "runs": [1.0, float("inf")], "n": 3})
    document = json.loads(path.read_text(), parse_constant=lambda name: pytest.fail(name))
    assert document["spearman"] is None and document["runs"] == [1.0, None]
    assert "nan" in document["spearman_null_reason"] and document["n"] == 3
    restored = restore_nan(document)
    assert math.isnan(restored["spearman"]) and restored["n"] == 3


# A surrogate fitted on 20 rows predicts a constant in some folds; only the row count matters here.
@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")
def test_minimum_rows_match_the_surrogate():
    folds = inspect.signature(fit_surrogate).parameters["n_folds"].default
    assert MIN_SURROGATE_ROWS == 4 * folds
    W = latin_hypercube_mixtures(
        pd.Series([0.25] * 4, index=list("abcd")), MIN_SURROGATE_ROWS
    ).weights
    fit_surrogate(W, np.arange(len(W), dtype=float), seed=0)
    with pytest.raises(ValueError, match=str(MIN_SURROGATE_ROWS)):
        fit_surrogate(W.iloc[:-1], np.arange(len(W) - 1, dtype=float), seed=0)


def _table(path, rows: int, constant: bool = False):
    W = latin_hypercube_mixtures(pd.Series([0.25] * 4, index=list("abcd")), rows, seed=0).weights
    W["score"] = 1.0 if constant else np.arange(rows, dtype=float)
    W.to_csv(path, index=False)


def test_mix_m_states_its_minimum_rows_in_help_and_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["mix-m", "--help"])
    assert f"at least {MIN_SURROGATE_ROWS} rows" in " ".join(capsys.readouterr().out.split())
    table = tmp_path / "runs.csv"
    _table(table, MIN_SURROGATE_ROWS - 1)
    influence, start = tmp_path / "influence.csv", tmp_path / "start.json"
    pd.DataFrame(
        [[1.0, 0.5, 0.2, 0.1]], index=pd.Index(["t"], name="task"), columns=list("abcd")
    ).to_csv(influence)
    start.write_text(json.dumps({d: 0.25 for d in "abcd"}))
    argv = ["mix-m", "--table", str(table), "--response", "score", "--out", str(tmp_path / "m"),
            "--influence", str(influence), "--prior", str(start), "--start", str(start)]  # fmt: skip
    assert main(argv) == 1
    error = capsys.readouterr().err
    assert f"{table}: {MIN_SURROGATE_ROWS - 1} runs" in error
    assert f"at least {MIN_SURROGATE_ROWS} rows" in error
    _table(table, MIN_SURROGATE_ROWS, constant=True)
    assert main(argv) == 1
    assert "the same value in all" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
