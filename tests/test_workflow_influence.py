"""The influence stages through the `snakemake` CLI on the tiny synthetic config."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import run_snakemake

pytestmark = pytest.mark.workflow


def test_influence_matrix_for_every_checkpoint_recovers_planted_domains(
    workflow_dir, synthetic_corpus
):
    run_snakemake(workflow_dir)
    truth = synthetic_corpus.ground_truth
    for ckpt in ("stage1-050", "stage1-100"):
        matrix = pd.read_csv(workflow_dir / f"results/influence/{ckpt}/influence.csv", index_col=0)
        sidecar = json.loads((workflow_dir / f"results/influence/{ckpt}/influence.json").read_text())
        assert sidecar["orientation"] == "benefit"
        assert set(matrix.columns) == set(synthetic_corpus.domain_files)
    for task, sources in truth.items():
        assert matrix.loc[task].idxmax() in sources, (task, matrix.loc[task].to_dict())
