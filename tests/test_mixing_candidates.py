"""Latin-hypercube candidate mixtures and the additivity-check perturbations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tikmix.core.mixture import MixtureInputError
from tikmix.mixing.candidates import latin_hypercube_mixtures, perturbed_mixtures


def prior(d: int, seed: int = 0) -> pd.Series:
    w = np.random.default_rng(seed).dirichlet(np.full(d, 2.0))
    return pd.Series(w, index=[f"d{i}" for i in range(d)])


def test_accepted_mixtures_sum_to_one_inside_bounds():
    w = prior(12)
    sample = latin_hypercube_mixtures(w, 300, low=0.5, high=2.0, seed=1, batch_size=64)
    W = sample.weights.to_numpy()
    assert W.shape == (300, 12)
    np.testing.assert_allclose(W.sum(axis=1), 1.0, atol=1e-12)
    assert (W >= sample.lower.to_numpy()).all() and (W <= sample.upper.to_numpy()).all()
    np.testing.assert_allclose(sample.lower, 0.5 * w)
    np.testing.assert_allclose(sample.upper, 2.0 * w)
    assert len(sample.rounds) > 1  # batch 64 < 300 forces several rounds
    drawn = 64 * len(sample.rounds)
    assert 300 / drawn <= sample.acceptance_rate <= 1


def test_each_round_is_a_latin_hypercube():
    w = prior(6, seed=3)
    sample = latin_hypercube_mixtures(w, 100, seed=2, batch_size=40)
    lower, upper = sample.lower.to_numpy(), sample.upper.to_numpy()
    for raw in sample.rounds:
        assert raw.shape == (40, 6)
        strata = np.floor((raw - lower) / (upper - lower) * 40).astype(int)
        for j in range(6):
            assert sorted(strata[:, j]) == list(range(40)), f"domain {j}: not one per stratum"


def test_accepted_mixtures_are_the_in_box_normalised_draws_in_order():
    w = prior(5, seed=4)
    sample = latin_hypercube_mixtures(w, 50, seed=5, batch_size=30)
    raw = np.vstack(sample.rounds)
    normalised = raw / raw.sum(axis=1, keepdims=True)
    inside = (
        (normalised >= sample.lower.to_numpy()) & (normalised <= sample.upper.to_numpy())
    ).all(axis=1)
    np.testing.assert_array_equal(sample.weights.to_numpy(), normalised[inside][:50])


def test_deterministic_for_a_seed_and_zero_weights_stay_zero():
    w = pd.Series([0.5, 0.0, 0.3, 0.2], index=list("abcd"))
    first = latin_hypercube_mixtures(w, 20, seed=7)
    again = latin_hypercube_mixtures(w, 20, seed=7)
    other = latin_hypercube_mixtures(w, 20, seed=8)
    pd.testing.assert_frame_equal(first.weights, again.weights)
    assert not np.allclose(first.weights, other.weights)
    assert (first.weights["b"] == 0).all()


def test_impossible_acceptance_reports_the_rate():
    with pytest.raises(MixtureInputError, match=r"rate .*%.* rounds"):
        latin_hypercube_mixtures(prior(64), 500, seed=0, max_rounds=2)
    with pytest.raises(MixtureInputError, match="low <= 1 <= high"):
        latin_hypercube_mixtures(prior(4), 10, low=1.2, high=2.0)


def test_perturbed_mixtures():
    w = prior(8, seed=9)
    P = perturbed_mixtures(w, 256, low=0.5, high=2.0, seed=0)
    assert P.shape == (256, 8) and P.columns.tolist() == w.index.tolist()
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-12)
    ratio = P.to_numpy() / w.to_numpy()  # = u / Σ w u, so max/min of a row ≤ high/low
    assert (ratio.max(axis=1) / ratio.min(axis=1) <= 4.0 + 1e-12).all()
    pd.testing.assert_frame_equal(P, perturbed_mixtures(w, 256, seed=0))


def test_tikmix_m_candidates_lie_in_the_box_around_w_d_and_the_pareto_set(tmp_path):
    """Rejection keeps the feasible part of the box; where it has no volume (two tasks with
    opposite benefits pin B·w to the prior's), the box's samples are projected onto it."""
    from tikmix.core.conventions import normalised_matrix
    from tikmix.core.mixture import mixture_document, write_mixture
    from tikmix.core.settings import Normalisation, TikmixMBox
    from tikmix.mixing.availability import Availability
    from tikmix.mixing.search import in_support
    from tikmix.mixing.stages import tikmix_m_candidates

    domains = ["a", "b", "c", "d", "e"]
    rng = np.random.default_rng(0)
    row = rng.normal(size=5)
    for name, B_rows in (("open", rng.normal(size=(2, 5))), ("pinned", np.stack([row, -row]))):
        B = pd.DataFrame(B_rows, index=["t0", "t1"], columns=domains)
        B.index.name = "task"
        B.to_csv(tmp_path / f"{name}.csv")
        w_d = pd.Series([0.3, 0.25, 0.2, 0.15, 0.1], index=domains)
        for stem in ("prior", "tikmix_d"):
            write_mixture(tmp_path / f"{stem}.json", mixture_document(w_d, method=stem))
        # No caps (max_epochs null): the box alone bounds the candidates.
        Availability(pd.Series(1e6, index=domains), None, "unknown", 1000, None).write(
            tmp_path / "availability.json"
        )
        table = tikmix_m_candidates(
            tikmix_d=tmp_path / "tikmix_d.json",
            influence_csv=tmp_path / f"{name}.csv",
            prior=tmp_path / "prior.json",
            availability=tmp_path / "availability.json",
            n=40,
            box=TikmixMBox(low=0.5, high=2.0),
            seed=0,
            normalisation=Normalisation(),
            out=tmp_path / f"{name}_mixtures.csv",
        )
        B_hat = normalised_matrix(B.to_numpy())
        inside = in_support(
            table.to_numpy(),
            B_hat,
            B_hat @ w_d.to_numpy(),
            0.5 * w_d.to_numpy(),
            2 * w_d.to_numpy(),
        )
        assert len(table) == 40 and inside.all(), name
        np.testing.assert_allclose(table.sum(axis=1), 1.0)
        assert table.std().min() > 0.01  # spread over the support, not collapsed onto w_D
