"""TiKMiX-M: LightGBM surrogate quality and the Algorithm 1 search."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linprog

from tikmix.core.mixture import MixtureInputError
from tikmix.core.settings import TikmixMSearch
from tikmix.mixing.candidates import latin_hypercube_mixtures, support_box
from tikmix.mixing.pareto import project_onto_pareto
from tikmix.mixing.search import (
    confirm_tikmix_m,
    in_support,
    kappa_schedule,
    propose_tikmix_m,
    search_mixture,
)
from tikmix.mixing.surrogate import fit_linear_response, fit_surrogate


@dataclass
class ExactResponse:
    """A stand-in surrogate with a known optimum: −‖w − w*‖²."""

    optimum: np.ndarray
    domains: list[str]

    def predict(self, W) -> np.ndarray:
        return -((np.atleast_2d(W) - self.optimum) ** 2).sum(axis=1)


def _study(seed=0, n=512):
    """A TiKMiX-M setting like the demo's: w_D far from the prior (w_D / prior from ~0.4 to ~5),
    the response's optimum w* inside w_D's box [0.5, 2]·w_D but outside the prior's box, and a
    Pareto set (B̂ w ≥ B̂ w_prior) that holds w_prior, w_D and w*. The candidates are sampled as
    the workflow samples them: in w_D's box widened to contain the prior."""
    rng = np.random.default_rng(seed)
    domains = ["web", "code", "books", "news", "wiki", "math"]
    prior = pd.Series([0.4, 0.25, 0.15, 0.1, 0.06, 0.04], index=domains)
    w_d = pd.Series([0.16, 0.2, 0.2, 0.16, 0.1, 0.18], index=domains)
    shift = np.array([1.5, 0.7, 1.3, 0.8, 1.4, 0.75])
    w_star = w_d * shift / (w_d * shift).sum()
    prior_low, prior_high = 0.5 * prior, 2.0 * prior
    assert not ((w_star >= prior_low) & (w_star <= prior_high)).all()  # outside the prior's box
    B_hat = rng.uniform(-0.2, 1.0, size=(3, len(domains)))
    floor = np.minimum.reduce([B_hat @ prior, B_hat @ w_d, B_hat @ w_star]) - 1e-3
    floor = np.minimum(floor, B_hat @ prior)
    lower, upper = support_box(w_d, 0.5, 2.0, prior=prior)
    sample = latin_hypercube_mixtures(
        w_d,
        n,
        seed=seed,
        include=prior,
        accept=lambda W: in_support(W, B_hat, floor, lower.to_numpy(), upper.to_numpy()),
    )
    return domains, prior, w_d, w_star, B_hat, floor, sample.weights


def test_tikmix_m_finds_an_optimum_outside_the_priors_box_inside_w_ds():
    # The box now also spans the prior (up to 2.5x wider per domain here), so the surrogate needs
    # twice the samples for the same precision at w*: at 512, L1 0.072 from w*.
    domains, prior, w_d, w_star, B_hat, floor, W = _study(n=1024)

    def response(W):  # noise-free, concave, best at w*
        return -((np.atleast_2d(W) - w_star.to_numpy()) ** 2).sum(axis=1)

    proposal = propose_tikmix_m(
        W, response(W.to_numpy()), w_d, prior=prior, B_hat=B_hat, pareto_floor=floor, seed=0
    )
    distance = float(np.abs(proposal.weights - w_star).sum())
    assert float(np.abs(w_d - w_star).sum()) > 0.2
    assert distance < 0.05, f"L1 {distance:.4f} from w*"
    assert proposal.quality.spearman >= 0.9 and proposal.passed, proposal.reason
    assert proposal.training_inside_box == 1.0
    # Every iterate stays in the sampled support: the box around w_D and the Pareto set.
    iterates = proposal.trace[domains].to_numpy()
    assert in_support(
        iterates, B_hat, floor, proposal.lower.to_numpy(), proposal.upper.to_numpy()
    ).all()
    weights, decision = confirm_tikmix_m(
        proposal, response(w_d.to_numpy()), response(proposal.weights.to_numpy())
    )
    assert decision["chosen"] == "proposal" and decision["response_gain"] > 0
    np.testing.assert_allclose(weights[proposal.weights.index], proposal.weights)


def test_gate_returns_w_d_on_pure_noise_responses():
    domains, prior, w_d, w_star, B_hat, floor, W = _study(seed=1, n=128)
    noise = np.random.default_rng(1).normal(size=len(W))
    proposal = propose_tikmix_m(W, noise, w_d, prior=prior, B_hat=B_hat, pareto_floor=floor, seed=0)
    assert not proposal.passed and "Spearman" in proposal.reason
    # Even if the noisy response happened to favour the proposal, the gate has the last word.
    weights, decision = confirm_tikmix_m(proposal, [0.0], [1.0])
    assert decision["chosen"] == "start" and decision["reason"].startswith("gate:")
    np.testing.assert_allclose(weights[w_d.index], w_d)
    document = proposal.to_dict()
    assert document["gate_passed"] is False and set(document["box"]) == {"lower", "upper"}


def test_confirmation_with_replicates_needs_more_than_the_noise():
    domains, prior, w_d, w_star, B_hat, floor, W = _study(seed=2, n=128)
    y = -((W.to_numpy() - w_star.to_numpy()) ** 2).sum(axis=1)
    proposal = propose_tikmix_m(W, y, w_d, prior=prior, B_hat=B_hat, pareto_floor=floor, seed=0)
    assert proposal.passed
    close = confirm_tikmix_m(proposal, [1.0, 1.2, 0.8, 1.0], [1.1, 1.3, 0.9, 1.1])[1]
    assert close["chosen"] == "start" and close["response_margin"] > close["response_gain"]
    clear = confirm_tikmix_m(proposal, [1.0, 1.01, 0.99, 1.0], [1.5, 1.51, 1.49, 1.5])[1]
    assert clear["chosen"] == "proposal"


def test_cross_validated_quality_is_held_out():
    # On a pure-noise response the in-sample fit correlates strongly with y, but predictions
    # for held-out folds cannot: a leak of test rows into training would show here.
    rng = np.random.default_rng(1)
    W = pd.DataFrame(rng.dirichlet(np.ones(3), size=120), columns=list("abc"))
    y = rng.normal(size=120)
    fit = fit_surrogate(W, y, seed=0, early_stopping_rounds=1000)
    assert abs(fit.quality.spearman) < 0.3
    assert np.corrcoef(fit.model.predict(W), y)[0, 1] > 0.4
    assert fit.quality.n_folds == 5 and len(fit.quality.fold_pearson) == 5


def test_surrogate_is_deterministic_and_checks_columns():
    rng = np.random.default_rng(2)
    W = pd.DataFrame(rng.dirichlet(np.ones(3), size=60), columns=list("abc"))
    y = W["a"] - W["c"] ** 2
    first, again = fit_surrogate(W, y, seed=3), fit_surrogate(W, y, seed=3)
    np.testing.assert_array_equal(first.model.predict(W), again.model.predict(W))
    assert first.quality == again.quality
    # Columns are matched by name, not position.
    np.testing.assert_array_equal(first.model.predict(W[["c", "a", "b"]]), first.model.predict(W))
    with pytest.raises(MixtureInputError, match=r"lack domain column\(s\) \['c'\]"):
        first.model.predict(W[["a", "b"]])


def test_search_converges_on_an_exact_response_and_is_deterministic():
    domains = list("abcde")
    optimum = np.array([0.1, 0.4, 0.2, 0.25, 0.05])
    surrogate = ExactResponse(optimum, domains)
    w0 = pd.Series(0.2, index=domains)
    result = search_mixture(surrogate, w0, seed=0)
    assert np.abs(result.weights.to_numpy() - optimum).sum() < 0.01
    again = search_mixture(surrogate, w0, seed=0)
    pd.testing.assert_series_equal(result.weights, again.weights)
    pd.testing.assert_frame_equal(result.trace, again.trace)


def test_floor_lets_a_zero_weight_move_and_projection_keeps_the_box():
    domains = list("abc")
    surrogate = ExactResponse(np.array([0.3, 0.3, 0.4]), domains)
    w0 = pd.Series([0.5, 0.5, 0.0], index=domains)
    result = search_mixture(surrogate, w0, seed=1)
    assert result.weights["c"] > 0.3
    lower = np.array([0.35, 0.35, 0.0])
    upper = np.array([0.6, 0.6, 0.2])
    no_task = (np.zeros((1, 3)), np.zeros(1))
    bounded = search_mixture(
        surrogate,
        w0,
        seed=1,
        project=lambda W: project_onto_pareto(W, *no_task, lower=lower, upper=upper),
    )
    w = bounded.trace[domains].to_numpy()
    assert (w >= lower - 1e-9).all() and (w <= upper + 1e-9).all()
    assert bounded.weights["c"] > 0.15  # pushed towards the optimum, up to the bound
    with pytest.raises(MixtureInputError, match="floor must be > 0"):
        search_mixture(surrogate, w0, settings=TikmixMSearch(floor=0.0))


def test_uninformative_surrogate_does_not_pull_towards_uniform():
    # With the old floor added to every concentration, 20 iterations of a constant surrogate
    # moved 24% of the way to uniform; now the draws' mean is w_best itself.
    domains = list("abcdef")
    w0 = pd.Series([0.5, 0.2, 0.1, 0.1, 0.05, 0.05], index=domains)

    class Constant:
        def __init__(self):
            self.domains = domains

        def predict(self, W):
            return np.zeros(len(np.atleast_2d(W)))

    uniform = np.full(6, 1 / 6)
    direction = w0.to_numpy() - uniform
    moved = [  # share of the way to uniform; a random walk without drift averages to ~0
        (w0.to_numpy() - search_mixture(Constant(), w0, seed=seed).weights.to_numpy())
        @ direction
        / (direction @ direction)
        for seed in range(8)
    ]
    assert abs(np.mean(moved)) < 0.05, moved


def test_kappa_schedule_rises_log_spaced():
    kappa = kappa_schedule(10.0, 1000.0, 3)
    np.testing.assert_allclose(kappa, [10.0, 100.0, 1000.0])
    with pytest.raises(MixtureInputError, match="kappa_min <= kappa_max"):
        kappa_schedule(100.0, 10.0, 3)


def test_search_with_projection_keeps_every_iterate_feasible():
    """A linear constraint (like TiKMiX's Pareto one) holds at every iterate of Algorithm 1,
    and the search still moves from w0 towards the constrained optimum along the boundary."""
    rng = np.random.default_rng(0)
    domains = ["a", "b", "c"]
    W = pd.DataFrame(rng.dirichlet(np.ones(3), size=400), columns=domains)
    y = -((W.to_numpy() - [0.6, 0.3, 0.1]) ** 2).sum(axis=1)
    fit = fit_surrogate(W, y, seed=0)
    # Weight of "c" at least 0.25: excludes the unconstrained optimum, whose constrained
    # counterpart is the projection (0.5, 0.25, 0.25) when w0 starts on the boundary.
    B_hat, floor = np.array([[0.0, 0.0, 1.0]]), np.array([0.25])
    w0 = pd.Series([0.2, 0.55, 0.25], index=domains)
    result = search_mixture(
        fit.model,
        w0,
        settings=TikmixMSearch(iters=8, samples=256, top_k=16),
        project=lambda ws: project_onto_pareto(ws, B_hat, floor),
    )
    assert (result.trace["c"] >= 0.25 - 1e-9).all()
    assert result.weights["c"] >= 0.25 - 1e-9
    assert np.abs(result.weights.to_numpy() - [0.5, 0.25, 0.25]).sum() < 0.1


def test_availability_caps_bound_the_search():
    # The availability caps (mixing.max_epochs, stage-1 exposure counted) hold for TiKMiX-M too.
    domains, prior, w_d, w_star, B_hat, floor, W = _study(seed=3, n=128)
    y = -((W.to_numpy() - w_star.to_numpy()) ** 2).sum(axis=1)
    caps = pd.Series(1.0, index=domains)
    caps["web"] = w_d["web"] * 1.05  # w* wants 1.5x w_D's web share
    proposal = propose_tikmix_m(
        W, y, w_d, prior=prior, B_hat=B_hat, pareto_floor=floor, caps=caps, seed=0
    )
    assert (proposal.trace[domains] <= caps + 1e-9).all().all()
    assert proposal.weights["web"] <= caps["web"] + 1e-9
    assert proposal.upper["web"] == pytest.approx(caps["web"])


# --- the linear response: a linear program instead of the surrogate ------------------------------


def _no_lightgbm(*args, **kwargs):
    raise AssertionError("LightGBM was fitted although the response is linear")


def test_a_linear_response_is_solved_as_the_linear_program(monkeypatch):
    """Exactly linear response: LightGBM is never fitted, and w_M is the optimum of the linear
    program over box ∩ Pareto set ∩ caps, as an independent LP solver (HiGHS) finds it."""
    domains, prior, w_d, w_star, B_hat, floor, W = _study(seed=4, n=128)
    c = np.random.default_rng(4).normal(size=len(domains))  # generic: a unique vertex optimum
    y = 0.3 + W.to_numpy() @ c
    caps = pd.Series(1.0, index=domains)
    best = domains[int(np.argmax(c))]
    caps[best] = 1.2 * w_d[best]  # a binding cap on the domain the response likes most
    monkeypatch.setattr("tikmix.mixing.search.fit_surrogate", _no_lightgbm)
    proposal = propose_tikmix_m(
        W, y, w_d, prior=prior, B_hat=B_hat, pareto_floor=floor, caps=caps, seed=0
    )
    assert proposal.surrogate == "linear" and proposal.linear.r2 > 0.9999
    # The same LP, written out independently: the box [0.5, 2]·w_D widened to the prior.
    lower = np.minimum(0.5 * w_d, prior).to_numpy()
    upper = np.minimum(np.maximum(2.0 * w_d, prior), caps).to_numpy()
    lp = linprog(
        -c,
        A_ub=-B_hat,
        b_ub=-floor,
        A_eq=np.ones((1, len(domains))),
        b_eq=[1.0],
        bounds=list(zip(lower, upper, strict=True)),
        method="highs",
    )
    assert lp.status == 0
    np.testing.assert_allclose(proposal.weights.to_numpy(), lp.x, atol=1e-6)
    assert proposal.weights[best] == pytest.approx(caps[best])  # the cap binds
    assert proposal.predicted - proposal.predicted_start == pytest.approx(
        c @ (lp.x - w_d), abs=1e-6
    )
    assert proposal.passed and "linear R²" in proposal.reason
    document = proposal.to_dict()
    assert document["surrogate"] == "linear" and document["linear_cv_r2"] > 0.9999
    assert document["linear_r2_threshold"] == 0.99
    assert "LightGBM was skipped" in document["surrogate_reason"]
    assert "linear program" in document["name"] and document["trace"]["kappa"] == []


def test_a_sharp_quadratic_response_keeps_the_lightgbm_surrogate():
    domains, prior, w_d, w_star, B_hat, floor, W = _study(seed=2, n=128)
    y = -50 * ((W.to_numpy() - w_star.to_numpy()) ** 2).sum(axis=1)  # peaked inside the box
    proposal = propose_tikmix_m(W, y, w_d, prior=prior, B_hat=B_hat, pareto_floor=floor, seed=0)
    assert proposal.surrogate == "lightgbm" and proposal.linear.r2 < 0.9
    assert len(proposal.trace) == TikmixMSearch().iters  # Algorithm 1 ran
    document = proposal.to_dict()
    assert document["surrogate"] == "lightgbm" and "LightGBM" in document["name"]
    assert document["linear_cv_r2"] == pytest.approx(proposal.linear.r2)
    assert f"{proposal.linear.r2:.4f} is not above 0.99" in document["surrogate_reason"]
    # The threshold is what decides: below the fit's R², the same data take the linear path.
    lenient = propose_tikmix_m(
        W, y, w_d, prior=prior, B_hat=B_hat, pareto_floor=floor, linear_r2=0.0, seed=0
    )
    assert lenient.surrogate == "linear"


@pytest.mark.filterwarnings("ignore:An input array is constant")  # the constant response
def test_linear_fit_r2_is_held_out():
    """Cross-validated R²: ~1 for an exactly linear response, ≤ ~0 for noise (the in-sample R² of
    noise on 6 coefficients is positive: a leak would show here)."""
    rng = np.random.default_rng(5)
    W = pd.DataFrame(rng.dirichlet(np.ones(6), size=60), columns=list("abcdef"))
    exact = fit_linear_response(W, W.to_numpy() @ rng.normal(size=6) + 2.0, seed=0)
    assert exact.r2 == pytest.approx(1.0, abs=1e-9) and exact.quality.n_folds == 5
    noise = fit_linear_response(W, rng.normal(size=60), seed=0)
    assert noise.r2 < 0.05
    constant = fit_linear_response(W, np.ones(60), seed=0)
    assert np.isnan(constant.r2)


def test_the_box_contains_the_prior():
    """p outside [low·w_D, high·w_D] on three domains (below, above, and where w_D is 0): the
    box widens exactly there, and only a cap below p_d keeps p out."""
    domains = list("abcd")
    w_d = pd.Series([0.5, 0.1, 0.4, 0.0], index=domains)
    prior = pd.Series([0.1, 0.4, 0.3, 0.2], index=domains)
    assert not ((prior >= 0.5 * w_d) & (prior <= 2 * w_d)).all()
    lower, upper = support_box(w_d, 0.5, 2.0, prior=prior)
    assert ((lower <= prior) & (prior <= upper)).all()
    np.testing.assert_allclose(lower, [0.1, 0.05, 0.2, 0.0])
    np.testing.assert_allclose(upper, [1.0, 0.4, 0.8, 0.2])
    caps = pd.Series([1.0, 0.3, 1.0, 1.0], index=domains)
    assert support_box(w_d, 0.5, 2.0, caps, prior=prior)[1]["b"] == pytest.approx(0.3)
    # The Latin-hypercube candidates are drawn in the same widened box, so they reach p.
    sample = latin_hypercube_mixtures(w_d, 64, seed=0, include=prior)
    pd.testing.assert_series_equal(sample.lower, lower, check_names=False)
    pd.testing.assert_series_equal(sample.upper, upper, check_names=False)
    assert sample.weights["d"].max() > 0.1 and sample.weights["b"].max() > 0.2


def test_tikmix_m_samples_and_searches_a_box_that_holds_the_prior():
    domains, prior, w_d, w_star, B_hat, floor, W = _study(seed=3, n=128)
    outside = (prior < 0.5 * w_d) | (prior > 2.0 * w_d)
    assert outside.any()  # the demo-like prior is outside w_D's own box
    proposal = propose_tikmix_m(
        W, -(W.to_numpy() ** 2).sum(axis=1), w_d, prior=prior, B_hat=B_hat, pareto_floor=floor
    )
    assert ((proposal.lower <= prior) & (prior <= proposal.upper)).all()
    assert in_support(
        prior.to_numpy()[None], B_hat, floor, proposal.lower.to_numpy(), proposal.upper.to_numpy()
    )[0]
    # The candidates cover the widened part of the box, towards the prior.
    web = prior["web"]
    assert web > 2.0 * w_d["web"] and W["web"].max() > 2.0 * w_d["web"]


def test_the_workflow_stages_record_the_linear_path_in_the_mixture_document(tmp_path):
    """Rules tikmix_m_search and mixture_tikmix_m on a curvature response that is exactly B·w:
    the candidates cover the prior, and the document's solver says `surrogate: linear`, with
    the linear fit's R² and the reason."""
    from tikmix.core.compute import ComputeRecord
    from tikmix.core.mixture import mixture_document, read_mixture_document, write_mixture
    from tikmix.core.settings import Normalisation, TikmixMBox, TikmixMGate
    from tikmix.mixing.availability import Availability
    from tikmix.mixing.stages import tikmix_m_candidates, tikmix_m_mixture, tikmix_m_search
    from tikmix.mixing.tikmix_d import solve_tikmix_d

    domains = ["a", "b", "c", "d"]
    B = pd.DataFrame(
        [[1.0, 0.2, -0.3, 0.4], [0.1, 0.8, 0.3, -0.2]], index=["t1", "t2"], columns=domains
    )
    B.index.name = "task"
    B.to_csv(tmp_path / "influence.csv")
    prior = pd.Series([0.55, 0.05, 0.3, 0.1], index=domains)  # far from w_D on a and b
    w_d = solve_tikmix_d(B, prior).weights
    none = {"compute": ComputeRecord().to_dict()}
    write_mixture(tmp_path / "prior.json", mixture_document(prior, method="prior"))
    write_mixture(tmp_path / "tikmix_d.json", mixture_document(w_d, method="tikmix_d", **none))
    Availability(pd.Series(1e6, index=domains), None, "unknown", 1000, None).write(
        tmp_path / "availability.json"
    )
    paths = {k: tmp_path / f"{k}.json" for k in ("tikmix_d", "prior", "availability")} | {
        "influence_csv": tmp_path / "influence.csv"
    }
    candidates = tikmix_m_candidates(
        **paths,
        n=64,
        box=TikmixMBox(),
        seed=0,
        normalisation=Normalisation(),
        out=tmp_path / "W.csv",
    )
    low, high = np.minimum(0.5 * w_d, prior), np.maximum(2.0 * w_d, prior)
    assert ((candidates >= low - 1e-9) & (candidates <= high + 1e-9)).all().all()
    # ... and reach beyond w_D's own box towards the prior (p_c > 2·w_D,c and p_b < w_D,b / 2)
    assert candidates["c"].max() > 2.0 * w_d["c"] and candidates["b"].min() < 0.5 * w_d["b"]

    def measured(W: pd.DataFrame, path):
        table = W.copy()
        for task in B.index:
            table[f"benefit:{task}"] = W.to_numpy() @ B.loc[task].to_numpy()
        table = table.assign(response="curvature", tokens=0, flops=0.0)
        table.index.name = "mixture"
        table.to_csv(path)
        return path

    common = {**paths, "normalisation": Normalisation()}
    del common["prior"]
    document = tikmix_m_search(
        measurements=[measured(candidates, tmp_path / "part-0.csv")],
        prior=tmp_path / "prior.json",
        box=TikmixMBox(),
        gate=TikmixMGate(),
        seed=0,
        search=TikmixMSearch(),
        out_mixtures=tmp_path / "confirm.csv",
        out_proposal=tmp_path / "proposal.json",
        **common,
    )
    assert document["surrogate"] == "linear" and document["linear_cv_r2"] > 0.9999
    confirm = pd.read_csv(tmp_path / "confirm.csv", index_col="mixture")
    tikmix_m_mixture(
        proposal=tmp_path / "proposal.json",
        confirmations=[measured(confirm, tmp_path / "confirm-0.csv")],
        measurements=[tmp_path / "part-0.csv"],
        out=tmp_path / "tikmix_m.json",
        **common,
    )
    solver = read_mixture_document(tmp_path / "tikmix_m.json")["solver"]
    assert solver["surrogate"] == "linear" and solver["linear_cv_r2"] > 0.9999
    assert "LightGBM was skipped" in solver["surrogate_reason"]
    assert solver["name"].startswith("TiKMiX-M (linear response")
    assert solver["decision"]["chosen"] == "proposal"  # B·w itself confirms the LP's optimum
