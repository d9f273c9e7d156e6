"""``python -m tikmix mix-d`` / ``mix-m``: end to end by subprocess, errors in process."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tikmix.cli import main
from tikmix.core.mixture import parse_megatron_data_path
from tikmix.mixing.candidates import latin_hypercube_mixtures

DOMAINS = ["web", "code", "books", "news"]


def tikmix(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "tikmix", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def influence_csv(tmp_path):
    B = pd.DataFrame(
        [[0.4, 0.1, -0.2, 0.3], [-0.5, -0.1, -0.3, -0.2], [0.02, 0.05, 0.01, 0.0]],
        index=pd.Index(["arc", "hellaswag", "trivia"], name="task"),
        columns=DOMAINS,
    )
    path = tmp_path / "influence.csv"
    B.to_csv(path)
    return path, B


def test_mix_d_writes_a_feasible_canonical_mixture(tmp_path, influence_csv):
    path, B = influence_csv
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"web": 500, "code": 200, "books": 200, "news": 100}))
    out = tmp_path / "w.json"
    run = tikmix(
        "mix-d",
        "--influence",
        path,
        "--prior",
        "natural",
        "--tokens",
        tokens,
        "--out",
        out,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    doc = json.loads(out.read_text())
    assert doc["method"] == "tikmix_d" and doc["sign_convention"].startswith("benefit = -influence")
    w = pd.Series(doc["weights"])[DOMAINS].to_numpy()
    prior = np.array([0.5, 0.2, 0.2, 0.1])
    assert abs(w.sum() - 1) <= 1e-9 and (w >= 0).all()
    # Pareto within the 8-digit rounding of the written weights.
    assert (B.to_numpy() @ w >= B.to_numpy() @ prior - 1e-7).all()
    assert doc["solver"]["success"] is True
    np.testing.assert_allclose(list(doc["provenance"]["prior_weights"].values()), prior)


def test_mix_d_megatron_export_and_caps(tmp_path, influence_csv):
    path, _ = influence_csv
    prefixes = tmp_path / "prefixes.json"
    prefixes.write_text(json.dumps({d: [f"/data/{d}_text_document"] for d in DOMAINS}))
    available = tmp_path / "available.json"
    available.write_text(json.dumps({"web": 4000, "code": 3000, "books": 3000, "news": 3000}))
    out = tmp_path / "data_path.txt"
    run = tikmix(
        "mix-d", "--influence", path, "--prior", "uniform", "--available", available,
        "--stage-tokens", 10000, "--max-epochs", 1, "--format", "megatron",
        "--prefixes", prefixes, "--out", out, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    weights = parse_megatron_data_path(out.read_text(), json.loads(prefixes.read_text()))
    assert weights.sum() == pytest.approx(1.0, abs=1e-9)
    assert (weights <= pd.Series({"web": 0.4, "code": 0.3, "books": 0.3, "news": 0.3}) + 1e-8).all()


def test_mix_d_caps_count_the_stage1_exposure(tmp_path, influence_csv):
    path, _ = influence_csv
    available = tmp_path / "available.json"
    available.write_text(json.dumps({"web": 4000, "code": 3000, "books": 3000, "news": 3000}))
    exposure = tmp_path / "exposure.json"
    exposure.write_text(json.dumps({"web": 3000, "code": 0, "books": 0, "news": 0}))
    # The prior is the one mixture within the caps, so the Pareto constraint holds.
    prior = tmp_path / "prior.json"
    prior.write_text(json.dumps({"web": 0.1, "code": 0.3, "books": 0.3, "news": 0.3}))
    out = tmp_path / "d.json"
    run = tikmix(
        "mix-d", "--influence", path, "--prior", prior, "--available", available,
        "--exposure", exposure, "--stage-tokens", 10000, "--max-epochs", 1, "--out", out,
        cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    document = json.loads(out.read_text())
    # web's cap (1·4000 − 3000) / 10000 = 0.1, the others' 0.3: only one mixture fits.
    assert document["availability"]["caps"] == pytest.approx(
        {"web": 0.1, "code": 0.3, "books": 0.3, "news": 0.3}
    )
    assert document["weights"] == pytest.approx({"web": 0.1, "code": 0.3, "books": 0.3, "news": 0.3})
    assert document["planned_epochs"] == pytest.approx(dict.fromkeys(DOMAINS, 1.0), abs=1e-6)


def _mix_m_inputs(tmp_path, influence_csv):
    """A run table sampled in the box around a start, the start file and a prior (the start
    itself, so the start satisfies the Pareto constraint, as TiKMiX-D's mixture does)."""
    rng = np.random.default_rng(0)
    start = pd.Series([0.4, 0.3, 0.2, 0.1], index=DOMAINS)
    W = latin_hypercube_mixtures(start, 80, seed=0).weights
    table = W.assign(
        score=-((W - [0.3, 0.3, 0.25, 0.15]) ** 2).sum(axis=1) + rng.normal(0, 1e-4, 80)
    )
    table_path = tmp_path / "runs.csv"
    table.to_csv(table_path, index=False)
    start_path = tmp_path / "start.json"
    start_path.write_text(json.dumps({"method": "tikmix_d", "weights": start.to_dict()}))
    prior_path = tmp_path / "prior.json"
    prior_path.write_text(json.dumps(start.to_dict()))
    path, B = influence_csv
    return ["--table", table_path, "--response", "score", "--start", start_path,
            "--influence", path, "--prior", prior_path], start, B  # fmt: skip


def test_mix_m_runs_the_workflows_procedure(tmp_path, influence_csv):
    inputs, start, B = _mix_m_inputs(tmp_path, influence_csv)
    out = tmp_path / "m.json"
    run = tikmix(
        "mix-m", *inputs, "--iters", 4, "--samples", 256, "--topk", 16, "--box", 0.5, 2.0,
        "--out", out, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "held-out Spearman" in run.stderr and "gate" in run.stderr
    doc = json.loads(out.read_text())
    w = pd.Series(doc["weights"])[DOMAINS]
    assert ((w >= 0.5 * start - 1e-8) & (w <= 2.0 * start + 1e-8)).all()
    # The Pareto constraint against the prior holds (the CLI used to skip it).
    assert (B.to_numpy() @ w.to_numpy() >= B.to_numpy() @ start.to_numpy() - 1e-7).all()
    solver = doc["solver"]
    assert solver["decision"]["confirmed"] is False and "box" in solver
    assert solver["gate_passed"] == (solver["decision"]["chosen"] == "proposal")
    # A quadratic response: the linear fit is recorded, and the surrogate says which model ran.
    assert solver["surrogate"] == "lightgbm" and solver["linear_cv_r2"] < 0.99
    assert solver["surrogate_reason"] in run.stderr


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("nan", "task 'hellaswag', domain 'code' (CSV line 3)"),
        ("prior", "no weight for domain(s) ['news']"),
        ("sum", "weights sum to 0.9"),
    ],
)
def test_mix_d_bad_input(tmp_path, influence_csv, capsys, case, message):
    path, B = influence_csv
    prior = tmp_path / "prior.json"
    prior.write_text(json.dumps({"web": 0.4, "code": 0.3, "books": 0.2, "news": 0.1}))
    if case == "nan":
        B.loc["hellaswag", "code"] = np.nan
        B.to_csv(path)
    elif case == "prior":
        prior.write_text(json.dumps({"web": 0.5, "code": 0.3, "books": 0.2}))
    else:
        prior.write_text(json.dumps({"web": 0.4, "code": 0.3, "books": 0.1, "news": 0.1}))
    status = main(
        [
            "mix-d",
            "--influence",
            str(path),
            "--prior",
            str(prior),
            "--out",
            str(tmp_path / "w.json"),
        ]
    )
    stderr = capsys.readouterr().err
    assert status == 1
    assert stderr.startswith("tikmix mix-d: error:")
    assert message in stderr
    assert not (tmp_path / "w.json").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the run table is empty"),
        ("web,code,score\n", "has a header but no rows"),
        ("web,code,loss\n0.5,0.5,1.0\n", "response column 'score' not found"),
    ],
)
def test_mix_m_bad_table(tmp_path, influence_csv, capsys, content, message):
    inputs, _, _ = _mix_m_inputs(tmp_path, influence_csv)
    path = tmp_path / "runs.csv"
    path.write_text(content)
    status = main(["mix-m", *map(str, inputs), "--out", str(tmp_path / "m.json")])
    assert status == 1
    assert message in capsys.readouterr().err


def test_help_documents_every_flag(capsys):
    for command, flags in [
        (
            "mix-d",
            ["--influence", "--prior", "--alpha", "--caps", "--available", "--exposure", "--prefixes"],
        ),
        (
            "mix-m",
            ["--table", "--response", "--influence", "--start", "--box", "--min-spearman",
             "--linear-r2"],
        ),  # fmt: skip
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        for flag in [*flags, "--out", "--format", "--digits"]:
            assert flag in text


def test_mixing_does_not_import_torch(tmp_path):
    code = (
        "import sys, tikmix.cli, tikmix.core.mixture, tikmix.mixing.search, "
        "tikmix.mixing.tikmix_d, tikmix.mixing.candidates, tikmix.mixing.priors; "
        "assert 'torch' not in sys.modules"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_mix_m_table_rows_must_be_mixtures(tmp_path, influence_csv, capsys):
    inputs, _, _ = _mix_m_inputs(tmp_path, influence_csv)
    path = tmp_path / "runs.csv"
    path.write_text("web,code,books,score\n0.5,0.5,0.0,1.0\n0.5,0.4,0.0,2.0\n")
    argv = ["mix-m", *map(str, inputs), "--out", str(tmp_path / "m.json")]
    assert main(argv) == 1
    assert "runs.csv (CSV line 3): weights sum to 0.9" in capsys.readouterr().err
    assert main([*argv, "--weights-columns", "web", "math"]) == 1
    assert "weight column(s) ['math'] not found" in capsys.readouterr().err
