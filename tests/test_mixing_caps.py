"""Availability caps (issue 21): stage-1 exposure + w_d · T <= max_epochs · U_d for every method
that optimises, the capped-simplex projection, the exposure's sources and the infeasible case.

The planted study: domain ``a`` is small (U_a = 100 tokens against 1000 for the others) and
stage 1 already read 350 of its tokens, so with T = 1000 and max_epochs = 4 its cap is
(400 − 350) / 1000 = 0.05, while every method's objective wants much more of ``a``.
"""

from __future__ import annotations

import json

import cvxpy as cp
import numpy as np
import pandas as pd
import pytest

from tikmix.core.mixture import MixtureInputError, read_mixture_document
from tikmix.core.settings import AvailabilitySettings, DirichletSettings, RegmixSettings
from tikmix.mixing.availability import (
    UNKNOWN,
    Availability,
    InfeasibleCapsError,
    project_onto_capped_simplex,
    study_availability,
)
from tikmix.mixing.candidates import latin_hypercube_mixtures, support_box
from tikmix.mixing.doremi import averaged_weights
from tikmix.mixing.regmix import fit_regmix, sample_regmix_mixtures
from tikmix.mixing.search import in_support, propose_tikmix_m
from tikmix.mixing.stages import availability_caps, baseline_mixture
from tikmix.mixing.tikmix_d import solve_tikmix_d

DOMAINS = ["a", "b", "c", "d"]
UNIQUE = {"a": 100, "b": 1000, "c": 1000, "d": 1000}
STAGE1_MIXTURE = {"a": 0.35, "b": 0.25, "c": 0.2, "d": 0.2}
TOL = 1e-8


def stage1_checkpoint(tmp_path, tokens_seen=1000, mixture=STAGE1_MIXTURE):
    directory = tmp_path / "ckpt"
    directory.mkdir()
    (directory / "tikmix.json").write_text(
        json.dumps({"format": "tikmix", "step": 10, "tokens_seen": tokens_seen, "mixture": mixture})
    )
    return directory


@pytest.fixture
def planted(tmp_path) -> Availability:
    availability = study_availability(
        unique_tokens=UNIQUE,
        stage_tokens=1000,
        max_epochs=4.0,
        checkpoint=stage1_checkpoint(tmp_path),
    )
    assert availability.caps["a"] == pytest.approx(0.05)
    return availability


def within(weights: pd.Series, availability: Availability) -> None:
    """Within the caps, and so within max_epochs cumulative passes, stage 1 included."""
    assert weights.sum() == pytest.approx(1.0)
    assert (weights.reindex(DOMAINS) <= availability.caps + TOL).all()
    assert (availability.planned_epochs(weights) <= availability.max_epochs + 1e-6).all()


# --- exposure arithmetic --------------------------------------------------------------------


def test_exposure_from_the_stage1_record(tmp_path):
    checkpoint = stage1_checkpoint(tmp_path, tokens_seen=2000)
    availability = study_availability(
        unique_tokens=UNIQUE, stage_tokens=500, max_epochs=2.0, checkpoint=checkpoint
    )
    assert availability.exposure.to_dict() == {"a": 700.0, "b": 500.0, "c": 400.0, "d": 400.0}
    assert availability.exposure_source.startswith("stage-1 record")
    # cap_d = max(0, 2 U_d − E_d) / 500: a's exposure exceeds its budget, so its cap is 0.
    assert availability.caps.to_dict() == pytest.approx({"a": 0.0, "b": 3.0, "c": 3.2, "d": 3.2})
    w = pd.Series({"a": 0.0, "b": 0.5, "c": 0.25, "d": 0.25})
    assert availability.planned_epochs(w).to_dict() == pytest.approx(
        {"a": 7.0, "b": 0.75, "c": 0.525, "d": 0.525}
    )


def test_exposure_from_prior_times_stage1_tokens():
    prior = pd.Series({"a": 0.1, "b": 0.3, "c": 0.3, "d": 0.3})
    availability = study_availability(
        unique_tokens=UNIQUE, stage_tokens=1000, max_epochs=4.0, prior=prior, stage1_tokens=3000
    )
    assert availability.exposure.to_dict() == pytest.approx(
        {"a": 300.0, "b": 900.0, "c": 900.0, "d": 900.0}
    )
    assert availability.exposure_source == "prior x stage1_tokens (3000)"
    assert availability.caps.to_dict() == pytest.approx({"a": 0.1, "b": 3.1, "c": 3.1, "d": 3.1})


@pytest.mark.parametrize(
    "given", [{}, {"prior": pd.Series(0.25, index=DOMAINS)}, {"stage1_tokens": 9}]
)
def test_unknown_exposure_counts_stage2_only(given):
    availability = study_availability(
        unique_tokens=UNIQUE, stage_tokens=1000, max_epochs=4.0, **given
    )
    assert availability.exposure is None and availability.exposure_source == UNKNOWN
    assert availability.caps.to_dict() == pytest.approx({"a": 0.4, "b": 4.0, "c": 4.0, "d": 4.0})
    record = availability.record(pd.Series(0.25, index=DOMAINS))
    assert record["availability"]["stage1_exposure"] == "unknown"
    assert record["planned_epochs"]["a"] == pytest.approx(2.5)


def test_no_caps_still_plans_epochs():
    availability = study_availability(unique_tokens=UNIQUE, stage_tokens=1000, max_epochs=None)
    assert availability.caps is None
    assert availability.record(pd.Series(0.25, index=DOMAINS))["planned_epochs"]["b"] == 0.25


def test_infeasible_caps_fail_in_one_line_naming_domains_and_keys(tmp_path):
    availability = study_availability(
        unique_tokens={"a": 100, "b": 100},
        stage_tokens=1000,
        max_epochs=4.0,
        checkpoint=stage1_checkpoint(tmp_path, tokens_seen=400, mixture={"a": 0.5, "b": 0.5}),
    )  # caps (400 − 200) / 1000 = 0.2 each
    with pytest.raises(InfeasibleCapsError) as error:
        availability.check_feasible()
    message = str(error.value)
    assert "\n" not in message
    for part in (
        "a=0.2",
        "b=0.2",
        "sum to 0.4",
        "mixing.max_epochs",
        "mixing.stage_tokens",
        "add data",
    ):
        assert part in message


def test_stage_tokens_default_to_stage2_tokens():
    config = {"mixing": {"stage_tokens": None, "max_epochs": 4.0}, "stage2": {"tokens": 777}}
    assert AvailabilitySettings.from_config(config) == AvailabilitySettings(4.0, 777)
    config["mixing"]["stage_tokens"] = 5
    assert AvailabilitySettings.from_config(config).stage_tokens == 5


# --- the capped-simplex projection ----------------------------------------------------------


def brute_force_projection(v, caps):
    w = cp.Variable(len(v))
    cp.Problem(cp.Minimize(cp.sum_squares(w - v)), [cp.sum(w) == 1, w >= 0, w <= caps]).solve(
        solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12
    )
    return w.value


def test_projection_onto_the_capped_simplex_is_the_qp_optimum():
    rng = np.random.default_rng(0)
    for _ in range(40):
        m = int(rng.integers(2, 7))
        v = rng.normal(0.3, 0.5, m)
        caps = rng.uniform(0.05, 1.2, m)
        caps[rng.integers(m)] = 1.0  # feasible
        w = project_onto_capped_simplex(v, caps)
        assert w.sum() == pytest.approx(1.0, abs=1e-12)
        assert (w >= 0).all() and (w <= caps + 1e-12).all()
        np.testing.assert_allclose(project_onto_capped_simplex(w, caps), w, atol=1e-12)
        np.testing.assert_allclose(w, brute_force_projection(v, caps), atol=1e-6)


def test_projection_leaves_a_mixture_within_the_caps_unchanged_and_rejects_infeasible_caps():
    w = np.array([0.2, 0.3, 0.5])
    np.testing.assert_allclose(project_onto_capped_simplex(w, np.array([0.2, 1.0, 0.6])), w)
    with pytest.raises(InfeasibleCapsError):
        project_onto_capped_simplex(w, np.array([0.2, 0.3, 0.4]))


# --- every optimising method stays within its caps, stage-1 exposure included ----------------


def test_tikmix_d_within_the_caps(planted):
    B = pd.DataFrame(
        [[1.0, 0.9, 0.1, 0.1], [0.5, 0.1, 0.6, 0.1]], index=["t1", "t2"], columns=DOMAINS
    )
    prior = pd.Series(0.25, index=DOMAINS)
    free = solve_tikmix_d(B, prior).weights
    assert free["a"] > 2 * planted.caps["a"]  # the objective wants more of a than it may have
    within(solve_tikmix_d(B, prior, caps=planted.caps).weights, planted)


def test_tikmix_m_within_the_caps(planted):
    w_d = pd.Series({"a": 0.05, "b": 0.35, "c": 0.3, "d": 0.3})  # TiKMiX-D's capped answer
    w_star = np.array([0.3, 0.3, 0.2, 0.2])  # the response's optimum: far over a's cap
    B_hat, floor = np.ones((1, 4)), np.array([1.0 - 1e-6])  # no Pareto restriction

    def proposal(caps):
        lower, upper = (b.to_numpy() for b in support_box(w_d, 0.5, 2.0, caps, prior=w_d))
        W = latin_hypercube_mixtures(
            w_d, 96, seed=0, accept=lambda X: in_support(X, B_hat, floor, lower, upper)
        ).weights
        y = -((W.to_numpy() - w_star) ** 2).sum(axis=1)
        return propose_tikmix_m(
            W,
            y,
            w_d,
            prior=w_d,
            B_hat=B_hat,
            pareto_floor=floor,
            caps=caps,
            min_spearman=0.0,
            seed=0,
        )

    assert proposal(None).weights["a"] > planted.caps["a"] + 0.01
    capped = proposal(planted.caps)
    within(capped.weights, planted)
    assert (capped.trace[DOMAINS] <= planted.caps + TOL).all().all()
    planted.check_within(capped.weights, "TiKMiX-M")  # the rule's final check passes
    with pytest.raises(MixtureInputError, match="TiKMiX-M: mixture exceeds the availability caps"):
        planted.check_within(pd.Series(w_star, index=DOMAINS), "TiKMiX-M")


def test_regmix_within_the_caps(planted):
    prior = pd.Series(UNIQUE, dtype=float) / sum(UNIQUE.values())
    runs = sample_regmix_mixtures(prior, 24, seed=1)
    runs["average_loss"] = 3.0 - 2.0 * runs["a"]  # a is all that helps
    settings = RegmixSettings(
        n_simulations=3000, top_k=30, dirichlet=DirichletSettings(max_usage=None)
    )
    free, _, _ = fit_regmix(runs, prior, settings, seed=0)
    assert free["a"] > 2 * planted.caps["a"]
    capped, _, _ = fit_regmix(runs, prior, settings, seed=0, caps=planted.caps)
    within(capped, planted)


def test_doremi_within_the_caps(planted):
    steps = 5
    trace = pd.DataFrame(
        {
            f"weight:{d}": np.full(steps, w)
            for d, w in zip(DOMAINS, [0.6, 0.2, 0.1, 0.1], strict=True)
        }
    )
    assert averaged_weights(trace, DOMAINS)["a"] == pytest.approx(0.6)
    capped = averaged_weights(trace, DOMAINS, planted.caps)
    within(capped, planted)
    # the Euclidean projection: a's excess spread equally over the free domains
    assert capped.to_dict() == pytest.approx(
        {"a": 0.05, "b": 0.38333333, "c": 0.28333333, "d": 0.28333333}
    )


# --- the rule and the documents ----------------------------------------------------------------


def test_availability_rule_and_baseline_documents_record_planned_epochs(tmp_path):
    meta = []
    for d, n in UNIQUE.items():
        path = tmp_path / f"{d}.meta.json"
        path.write_text(json.dumps({"n_tokens_train": n}))
        meta.append(path)
    out = tmp_path / "availability.json"
    availability_caps(
        domains=DOMAINS,
        meta=meta,
        availability=AvailabilitySettings(4.0, 1000),
        out=out,
        checkpoint=stage1_checkpoint(tmp_path),
    )
    written = json.loads(out.read_text())
    assert written["domains"]["a"] == {
        "unique_tokens": 100,
        "exposure": 350.0,
        "cap": pytest.approx(0.05),
    }
    assert written["stage_tokens"] == 1000 and written["max_epochs"] == 4.0
    document = baseline_mixture(
        method="uniform", domains=DOMAINS, meta=meta, availability=out, out=tmp_path / "u.json"
    )
    assert document == read_mixture_document(tmp_path / "u.json")
    # uniform is a baseline: not capped, its planned epochs (350 + 250) / 100 = 6 > 4 recorded.
    assert document["planned_epochs"]["a"] == pytest.approx(6.0)
    assert document["availability"]["caps"]["a"] == pytest.approx(0.05)
    assert document["stage_tokens"] == 1000


def test_report_states_the_caps_and_flags_baselines_over_max_epochs(planted):
    from tikmix.report.markdown import _availability_part

    class Writer:
        def __init__(self):
            self.blocks = []

        def add(self, *blocks):
            self.blocks.extend(blocks)

    documents = {
        m: planted.record(pd.Series(w, index=DOMAINS))
        for m, w in {"uniform": [0.25] * 4, "tikmix_d": [0.05, 0.35, 0.3, 0.3]}.items()
    }
    writer = Writer()
    _availability_part(writer, documents)
    text = "\n".join(writer.blocks)
    assert "max_epochs = 4 passes" in text and "T = 1000 tokens" in text
    assert "stage-1 exposure is counted (from stage-1 record" in text
    warning = [b for b in writer.blocks if b.startswith("**Warning**")]
    assert len(warning) == 1 and "a: 6" in warning[0] and "TiKMiX-D" not in warning[0]
