"""Provenance digests of user inputs, strict JSON outputs, and the CLI's stated minimum rows."""

from __future__ import annotations

import inspect
import json
import math
import os

import numpy as np
import pandas as pd
import pytest

from tikmix.cli import main
from tikmix.config import MIN_SURROGATE_ROWS
from tikmix.core.atomic import restore_nan, write_json_atomic
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
