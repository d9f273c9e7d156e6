"""The influence, mixture and check stages of the completed tiny workflow."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tikmix.mixing.exports import read_mixture

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
        scale = B.abs().max(axis=1).to_numpy() + 1e-8
        for method in ("tikmix_d", "tikmix_m"):
            w = read_mixture(results / f"mixtures/{ckpt}/{method}.json", domains=list(B.columns))
            assert abs(w.sum() - 1) < 1e-9 and (w >= 0).all()
            assert (w - prior.reindex(w.index)).abs().sum() > 1e-3, f"{method} equals the prior"
            predicted = docs[method]["predicted"]["total_normalised_benefit"]
            assert predicted > (prior_benefit / scale).sum(), (method, ckpt)
        d_benefit = B.to_numpy() @ pd.Series(docs["tikmix_d"]["weights"])[B.columns].to_numpy()
        assert (d_benefit / scale >= prior_benefit / scale - 1e-6).all(), "Pareto constraint"
        assert docs["tikmix_d"]["solver"]["success"]
