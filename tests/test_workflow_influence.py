"""The influence, mixture and check stages of the completed tiny workflow."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tikmix.core.conventions import row_scales
from tikmix.core.mixture import read_mixture

pytestmark = pytest.mark.workflow

CHECKPOINTS = ("stage1-050", "stage1-100")


def test_influence_matrix_for_every_checkpoint_recovers_planted_domains(
    completed_workflow, synthetic_corpus
):
    results = completed_workflow.workdir / "results"
    for ckpt in CHECKPOINTS:
        matrix = pd.read_csv(results / f"influence/{ckpt}/influence.csv", index_col=0)
        sidecar = json.loads((results / f"influence/{ckpt}/influence.json").read_text())
        assert sidecar["orientation"] == "benefit" and sidecar["total_compute"]["flops"] > 0
        assert set(matrix.columns) == set(synthetic_corpus.domain_files)
    for task, sources in synthetic_corpus.ground_truth.items():
        assert matrix.loc[task].idxmax() in sources, (task, matrix.loc[task].to_dict())


def test_every_mixture_is_written_for_every_checkpoint_and_beats_the_prior(completed_workflow):
    results = completed_workflow.workdir / "results"
    prior = read_mixture(results / "mixtures/prior.json")
    for ckpt in CHECKPOINTS:
        docs = {
            m: json.loads((results / f"mixtures/{ckpt}/{m}.json").read_text())
            for m in ("natural", "uniform", "tikmix_d", "tikmix_m")
        }
        B = pd.read_csv(results / f"influence/{ckpt}/influence.csv", index_col=0)
        prior_benefit = B.to_numpy() @ prior.reindex(B.columns).to_numpy()
        scale = row_scales(B.to_numpy())
        # Where the Pareto set {B w >= B p} holds mixtures other than p, both methods leave p
        # and predict more; where it is p alone (as many tasks as domains, pulling apart), p is
        # the only answer the paper's constraint allows.
        headroom = _pareto_headroom(B.to_numpy(), prior.reindex(B.columns).to_numpy(), scale)
        for method in ("tikmix_d", "tikmix_m"):
            w = read_mixture(results / f"mixtures/{ckpt}/{method}.json", domains=list(B.columns))
            assert abs(w.sum() - 1) < 1e-9 and (w >= 0).all()
            predicted = docs[method]["predicted"]["total_normalised_benefit"]
            if headroom > 1e-6:
                assert (w - prior.reindex(w.index)).abs().sum() > 1e-3, f"{method} equals p"
                assert predicted > (prior_benefit / scale).sum(), (method, ckpt)
            else:
                assert (w - prior.reindex(w.index)).abs().sum() < 1e-4, (method, ckpt)
        # Availability caps (on by default), stage-1 exposure read from the checkpoint's record.
        availability = json.loads((results / f"mixtures/{ckpt}/availability.json").read_text())
        assert availability["stage1_exposure"].startswith("stage-1 record")
        assert availability["max_epochs"] == 4.0 and availability["stage_tokens"] == 16384
        caps = pd.Series({d: v["cap"] for d, v in availability["domains"].items()})
        for method, document in docs.items():
            assert set(document["planned_epochs"]) == set(B.columns), method
            if method in ("tikmix_d", "tikmix_m"):
                assert (pd.Series(document["weights"]) <= caps + 1e-8).all(), method
        d_benefit = B.to_numpy() @ pd.Series(docs["tikmix_d"]["weights"])[B.columns].to_numpy()
        assert (d_benefit / scale >= prior_benefit / scale - 1e-6).all(), "Pareto constraint"
        assert docs["tikmix_d"]["solver"]["success"]
        # TiKMiX-M searched in its sampled support: the box around w_D, cut by the Pareto set.
        search = docs["tikmix_m"]["solver"]
        w_d = pd.Series(docs["tikmix_d"]["weights"])
        proposal = pd.Series(search["proposal"])[w_d.index]
        p = prior.reindex(w_d.index)
        low, high = np.minimum(0.5 * w_d, p), np.maximum(2.0 * w_d, p)  # the box holds p
        assert (proposal >= low - 1e-7).all() and (proposal <= high + 1e-7).all()
        assert search["response"] == "curvature"
        # (With no headroom the support is the point p, which sampled candidates do not hit.)
        assert search["training_inside_box"] == 1.0 or headroom <= 1e-6
        chosen = proposal if search["decision"]["chosen"] == "proposal" else w_d
        pd.testing.assert_series_equal(
            pd.Series(docs["tikmix_m"]["weights"])[w_d.index], chosen, atol=1e-7, check_names=False
        )


def _pareto_headroom(B: np.ndarray, p: np.ndarray, scale: np.ndarray) -> float:
    """The largest gain in Σ_v (B w)_v / s_v over mixtures w with B w >= B p (a linear
    program, solved independently of the workflow's solvers); 0 when p is the only one."""
    from scipy.optimize import linprog

    n = B.shape[1]
    result = linprog(
        -(B / scale[:, None]).sum(axis=0),
        A_ub=-B,
        b_ub=-(B @ p),
        A_eq=np.ones((1, n)),
        b_eq=[1.0],
        bounds=[(0, None)] * n,
        method="highs",
    )
    assert result.status == 0, result.message
    return float(-result.fun - (B @ p / scale).sum())


def test_projection_agreement_on_the_workflow_data_is_exact_at_full_rank(completed_workflow):
    """The scale check's library function on the tiny run's real files: a rank at or above every
    layer's width (32 and 96 here) projects nothing, so its benefit rows equal the unprojected
    ones; a rank of 2 is a real projection, and the record counts every matrix's tokens."""
    from tikmix.analysis.projection_agreement import run_projection_agreement
    from tikmix.core.mixture import read_mixture

    results = completed_workflow.workdir / "results"
    domains = sorted(p.name for p in (results / "data/domains").iterdir())
    tasks = {p.parent.name: p for p in sorted((results / "data/tasks").glob("*/steering.npz"))}
    table, record = run_projection_agreement(
        checkpoint=results / "checkpoints/stage1-100",
        domain_dirs={d: results / "data/domains" / d for d in domains},
        task_files=tasks,
        prior=read_mixture(results / "mixtures/prior.json").to_dict(),
        ranks=[2, 128],
        tokens_per_domain=2048,
        fit_tokens=4096,
        seq_len=32,
        batch_size=16,
        tracked_modules=r"(^|\.)layers\.\d+\.(self_attn|mlp)\.\w+_proj$",
        fisher="sampled",
        seed=0,
        device="cpu",
    )
    print(table.to_string(index=False))
    assert sorted(table["task"].unique()) == sorted(tasks)
    full = table[table["rank"] == 128]
    assert (full["spearman"] == 1.0).all() and (full["pearson"] > 1 - 1e-9).all()
    assert table[table["rank"] == 2]["pearson"].lt(1 - 1e-6).any()
    assert record["ranks"] == [2, 128] and record["compute"]["tokens"] > 3 * 2 * 4096
