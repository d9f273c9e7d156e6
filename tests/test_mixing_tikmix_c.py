"""tikmix_c: rollout mixtures, the calibration fit, task weights, the convex solve, predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize
from snakemake.utils import validate

from tikmix.config import check_settings
from tikmix.core.errors import ConfigError
from tikmix.core.mixture import MixtureInputError, mixture_document, write_mixture
from tikmix.core.settings import Normalisation, TikmixCSettings
from tikmix.mixing.availability import study_availability
from tikmix.mixing.stages import tikmix_c_mixture, tikmix_c_rollout_mixtures
from tikmix.mixing.tikmix_c import (
    fit_calibration,
    kl_divergence,
    predict_with_se,
    sample_rollout_mixtures,
    solve_tikmix_c,
    task_weights,
)
from tikmix.mixing.tikmix_d import MixtureSolveError, solve_tikmix_d

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"
DOMAINS = [f"d{j}" for j in range(5)]
P = pd.Series([0.4, 0.3, 0.15, 0.1, 0.05], index=DOMAINS)


def benefit(n_tasks: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        rng.normal(size=(n_tasks, len(DOMAINS))),
        index=[f"task{i}" for i in range(n_tasks)],
        columns=DOMAINS,
    )


def rollouts(B, a, c, noise_sd, seed, levels=(0.02, 0.1, 0.3), per_level=4):
    """Synthetic paired rollouts from the model itself: ``a·B(w − p) − c·KL + noise``."""
    mixtures = sample_rollout_mixtures(P, levels, per_level, seed=seed)
    W = mixtures.to_numpy()
    linear = (W - P.to_numpy()) @ B.to_numpy().T
    kl = np.array([kl_divergence(w, P) for w in W])
    noise = np.random.default_rng(seed + 1000).normal(scale=noise_sd, size=linear.shape)
    measured = pd.DataFrame(
        linear * np.asarray(a) - np.outer(kl, c) + noise, index=mixtures.index, columns=B.index
    )
    return mixtures, measured


def reference_objective(B, p, a, c, t, w):
    """``Σ_v t_v (a_v B_v·(w − p) − c_v KL(w‖p))`` written out independently."""
    w = np.clip(np.asarray(w, dtype=float), 1e-300, None)
    kl = float(np.sum(w * np.log(w / p)))
    return float(np.sum(t * (a * (B @ (w - p)) - c * kl)))


def slsqp_best(B, p, a, c, t, caps=None, starts=8, seed=0):
    """The best SLSQP optimum over several random starts (an independent solver)."""
    m = len(p)
    rng = np.random.default_rng(seed)
    upper = np.ones(m) if caps is None else np.asarray(caps, dtype=float)
    best = None
    for x0 in [p, *rng.dirichlet(np.ones(m), size=starts - 1)]:
        x0 = np.minimum(x0, upper)
        x0 = x0 / x0.sum()
        result = minimize(
            lambda w: -reference_objective(B, p, a, c, t, w),
            x0,
            method="SLSQP",
            bounds=[(1e-12, u) for u in upper],
            constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}],
            options={"ftol": 1e-15, "maxiter": 1000},
        )
        if best is None or result.fun < best.fun:
            best = result
    return best.x, -best.fun


# --- rollout mixtures ------------------------------------------------------------------------


def test_rollout_mixtures_sit_at_their_kl_levels_and_repeat_with_the_seed() -> None:
    levels = (0.01, 0.05, 0.2)
    mixtures = sample_rollout_mixtures(P, levels, per_level=3, seed=7)
    assert mixtures.shape == (9, len(DOMAINS))
    assert np.allclose(mixtures.sum(axis=1), 1) and (mixtures.to_numpy() >= 0).all()
    reached = [kl_divergence(w, P) for w in mixtures.to_numpy()]
    assert np.allclose(reached, np.repeat(levels, 3), rtol=1e-6)
    pd.testing.assert_frame_equal(mixtures, sample_rollout_mixtures(P, levels, 3, seed=7))
    assert not np.allclose(mixtures, sample_rollout_mixtures(P, levels, 3, seed=8))


def test_rollout_mixtures_respect_caps_and_p_support() -> None:
    p = pd.Series([0.5, 0.3, 0.2, 0.0, 0.0], index=DOMAINS)
    caps = pd.Series([0.55, 0.6, 0.6, 1.0, 1.0], index=DOMAINS)
    mixtures = sample_rollout_mixtures(p, (0.02, 0.1), per_level=6, seed=3, caps=caps)
    assert (mixtures.to_numpy() <= caps.to_numpy() + 1e-8).all()
    assert (mixtures[["d3", "d4"]].to_numpy() == 0).all()
    assert np.allclose([kl_divergence(w, p) for w in mixtures.to_numpy()], [0.02] * 6 + [0.1] * 6)


def test_rollout_mixtures_refuse_unreachable_levels_and_p_over_caps() -> None:
    with pytest.raises(MixtureInputError, match="no mixture at KL"):
        sample_rollout_mixtures(P, (50.0,), per_level=1, seed=0)
    with pytest.raises(MixtureInputError, match="exceeds the caps"):
        sample_rollout_mixtures(P, (0.1,), 1, seed=0, caps=pd.Series(0.35, index=DOMAINS))
    with pytest.raises(MixtureInputError, match="kl_levels"):
        sample_rollout_mixtures(P, (0.0,), 1, seed=0)


# --- the fit ---------------------------------------------------------------------------------


def test_fit_recovers_planted_a_and_c_within_three_se() -> None:
    B = benefit(6, seed=1)
    a = np.array([1.0, 0.5, 2.0, 0.0, -0.7, 1.3])  # task4's influence is wrong-signed
    c = np.array([0.2, 0.5, 0.05, 0.3, 0.1, 0.0])
    mixtures, measured = rollouts(B, a, c, noise_sd=0.01, seed=11)
    fit = fit_calibration(B, P, mixtures, measured)
    assert (np.abs(fit.a - a) <= 3 * fit.se_a).all(), fit.table()
    assert (np.abs(fit.c - c) <= 3 * fit.se_c).all(), fit.table()
    assert (fit.c >= 0).all()
    assert fit.a["task4"] < 0  # the sign is the rollouts', not forced positive
    assert fit.se_a.max() < 0.1 and fit.se_c.max() < 0.1  # informative, not vacuously wide
    # the residual SD estimates the planted noise
    assert np.allclose(fit.residual_sd, 0.01, rtol=0.6)


def test_se_of_the_prediction_covers_the_truth() -> None:
    """Over repeated noisy rollouts the true mean benefit at a fixed mixture lies within 2 SE
    of the prediction about 95% of the time."""
    B = benefit(3, seed=2)
    a, c = np.array([1.0, 0.4, 0.8]), np.array([0.3, 0.1, 0.5])
    w = pd.Series([0.2, 0.2, 0.3, 0.2, 0.1], index=DOMAINS)
    truth = float(np.mean(a * (B.to_numpy() @ (w - P).to_numpy()) - c * kl_divergence(w, P)))
    covered = []
    for seed in range(200):
        mixtures, measured = rollouts(B, a, c, noise_sd=0.02, seed=seed)
        prediction = predict_with_se(fit_calibration(B, P, mixtures, measured), w)
        covered.append(abs(prediction.mean - truth) <= 2 * prediction.mean_se)
    assert 0.88 <= np.mean(covered) <= 0.995


def test_loo_r_is_the_hand_computed_leave_one_out_pearson() -> None:
    B = benefit(2, seed=3)
    mixtures, measured = rollouts(B, [1.0, 0.5], [0.4, 0.2], noise_sd=0.03, seed=5, per_level=3)
    fit = fit_calibration(B, P, mixtures, measured)
    W = mixtures.to_numpy()
    for task in B.index:
        x = (W - P.to_numpy()) @ B.loc[task].to_numpy()
        kl = np.array([kl_divergence(w, P) for w in W])
        y = measured[task].to_numpy()
        held_out = []
        for i in range(len(y)):
            keep = np.arange(len(y)) != i
            coef = np.linalg.lstsq(np.column_stack([x[keep], -kl[keep]]), y[keep], rcond=None)[0]
            assert coef[1] >= 0  # the c >= 0 bound is inactive here, so plain OLS is the fit
            held_out.append(coef[0] * x[i] - coef[1] * kl[i])
        held_out = np.array(held_out)
        assert fit.loo_r[task] == pytest.approx(np.corrcoef(held_out, y)[0, 1], abs=1e-12)
        r2 = 1 - np.sum((y - held_out) ** 2) / np.sum(y**2)
        assert fit.loo_r2[task] == pytest.approx(r2, abs=1e-12)


def test_c_is_clamped_at_zero_when_the_rollouts_reward_leaving_p() -> None:
    B = benefit(1, seed=4)
    mixtures, measured = rollouts(B, [1.0], [-0.5], noise_sd=0.001, seed=6)
    fit = fit_calibration(B, P, mixtures, measured)
    assert fit.c["task0"] == 0 and fit.c_clamped["task0"]
    x = (mixtures.to_numpy() - P.to_numpy()) @ B.loc["task0"].to_numpy()
    y = measured["task0"].to_numpy()
    assert fit.a["task0"] == pytest.approx(x @ y / (x @ x), rel=1e-12)


def test_replicate_sd_sets_the_noise_ceiling_and_floors_the_se() -> None:
    B = benefit(2, seed=5)
    mixtures, measured = rollouts(B, [1.0, 0.5], [0.3, 0.3], noise_sd=0.005, seed=8)
    plain = fit_calibration(B, P, mixtures, measured)
    noisy = fit_calibration(B, P, mixtures, measured, replicate_sd=0.05)
    assert plain.noise_ceiling is None
    n = len(measured)
    expected = np.clip(1 - n * 0.05**2 / (measured**2).sum(), 0, 1)
    assert np.allclose(noisy.noise_ceiling, expected)
    assert (noisy.se_a > 3 * plain.se_a).all()
    pd.testing.assert_series_equal(noisy.a, plain.a)


def test_fit_rejects_bad_inputs() -> None:
    B = benefit(2)
    mixtures, measured = rollouts(B, [1.0, 0.5], [0.3, 0.3], noise_sd=0.01, seed=1)
    with pytest.raises(MixtureInputError, match="needs >= 4 rollouts"):
        fit_calibration(B, P, mixtures.iloc[:3], measured.iloc[:3])
    with pytest.raises(MixtureInputError, match="lack task"):
        fit_calibration(B, P, mixtures, measured.drop(columns="task1"))
    with pytest.raises(MixtureInputError, match="same rollouts"):
        fit_calibration(B, P, mixtures, measured.iloc[::-1])


# --- task weights ----------------------------------------------------------------------------


def test_a_pure_noise_task_gets_about_zero_weight() -> None:
    """Over 100 studies of 12 rollouts, a task whose measurements are pure noise (as large as
    the others' signal) gets weight 0 in most and ~1% on average; an equal split would give it
    1/3. (With 12 rollouts a noise task's held-out R² passes 0.1 by chance about 9% of the
    time, so a single draw cannot promise exactly 0.)"""
    noise_weights = []
    for seed in range(100):
        B = benefit(3, seed=seed)
        mixtures, measured = rollouts(B, [1.0, 0.6, 0.0], [0.3, 0.2, 0.0], 0.01, seed=seed)
        measured["task2"] = np.random.default_rng(seed + 50).normal(
            scale=measured[["task0", "task1"]].to_numpy().std(), size=len(measured)
        )
        weights = task_weights(fit_calibration(B, P, mixtures, measured))
        assert weights.sum() == pytest.approx(1.0)
        assert weights[["task0", "task1"]].min() > 0.3
        noise_weights.append(weights["task2"])
    noise_weights = np.array(noise_weights)
    assert noise_weights.mean() < 0.03
    assert (noise_weights == 0).mean() >= 0.8


def test_weights_are_not_the_row_scale() -> None:
    """A well-measured task with a small B row keeps its weight next to a huge noisy row."""
    B = benefit(2, seed=9)
    B.loc["task1"] *= 100.0
    mixtures, measured = rollouts(B, [1.0, 0.0], [0.3, 0.0], noise_sd=0.01, seed=2)
    measured["task1"] = np.random.default_rng(3).normal(scale=1.0, size=len(measured))
    weights = task_weights(fit_calibration(B, P, mixtures, measured))
    assert weights["task0"] == pytest.approx(1.0)


# --- the solve -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("capped", [False, True])
def test_convex_solve_matches_slsqp(seed: int, capped: bool) -> None:
    rng = np.random.default_rng(seed)
    B = benefit(4, seed=seed)
    a = rng.uniform(-0.5, 1.5, size=4)
    c = rng.uniform(0.1, 1.0, size=4)
    t = rng.dirichlet(np.ones(4))
    caps = pd.Series([0.45, 0.35, 0.3, 0.25, 0.2], index=DOMAINS) if capped else None
    series = lambda v: pd.Series(v, index=B.index)  # noqa: E731
    result = solve_tikmix_c(B, P, series(a), series(c), series(t), caps=caps)
    _, reference = slsqp_best(B.to_numpy(), P.to_numpy(), a, c, t, caps=caps)
    ours = reference_objective(B.to_numpy(), P.to_numpy(), a, c, t, result.weights.to_numpy())
    assert ours == pytest.approx(result.objective, abs=1e-9)
    assert ours >= reference - 1e-6
    assert abs(ours - reference) <= 1e-6
    if capped:
        assert (result.weights <= caps + 1e-8).all() and (result.cap_slack >= -1e-8).all()
        assert (result.weights > caps + 1e-6).sum() == 0


def test_uncapped_solve_is_the_closed_form_tilt() -> None:
    B = benefit(3, seed=12)
    a, c, t = np.array([1.0, 0.3, 0.7]), np.array([0.4, 0.2, 0.9]), np.array([0.5, 0.2, 0.3])
    series = lambda v: pd.Series(v, index=B.index)  # noqa: E731
    result = solve_tikmix_c(B, P, series(a), series(c), series(t))
    gain, cost = (t * a) @ B.to_numpy(), float(t @ c)
    tilt = P.to_numpy() * np.exp(gain / cost)
    assert np.allclose(result.weights, tilt / tilt.sum(), atol=1e-7)


def test_no_headroom_returns_p() -> None:
    B = benefit(3, seed=13)
    ones = pd.Series(1.0, index=B.index)
    zero = pd.Series(0.0, index=B.index)
    # no task's influence carries over to training: only the cost of leaving p remains
    result = solve_tikmix_c(B, P, zero, ones, ones / 3)
    assert np.allclose(result.weights, P, atol=1e-6) and result.kl < 1e-12
    # every domain helps every task equally: no direction gains
    flat = pd.DataFrame(np.outer([0.5, 1.0, 2.0], np.ones(len(DOMAINS))), B.index, DOMAINS)
    assert np.allclose(solve_tikmix_c(flat, P, ones, ones, ones / 3).weights, P, atol=1e-6)
    # no task is measured well enough to pull
    assert np.allclose(solve_tikmix_c(B, P, ones, ones, zero).weights, P, atol=1e-6)
    # ... and when p itself exceeds a cap: the mixture within the caps nearest p in KL
    caps = pd.Series([0.3, 1, 1, 1, 1], index=DOMAINS)
    capped = solve_tikmix_c(B, P, ones, ones, zero, caps=caps)
    nearest = P.to_numpy().copy()
    nearest[0] = 0.3
    nearest[1:] *= 0.7 / nearest[1:].sum()  # KL's projection: the rest scaled in proportion
    assert np.allclose(capped.weights, nearest, atol=1e-6)


def test_a_large_cost_keeps_the_solution_near_p() -> None:
    B = benefit(3, seed=14)
    ones = pd.Series(1.0, index=B.index)
    near = solve_tikmix_c(B, P, ones, 1e3 * ones, ones / 3)
    far = solve_tikmix_c(B, P, ones, 0.1 * ones, ones / 3)
    assert near.kl < 1e-4 < far.kl
    assert near.objective >= 0  # p itself scores 0, so the optimum is never worse


def test_max_kl_bounds_the_step_and_caps_that_exclude_everything_fail() -> None:
    B = benefit(3, seed=15)
    ones = pd.Series(1.0, index=B.index)
    result = solve_tikmix_c(B, P, ones, 0.01 * ones, ones / 3, max_kl=0.05)
    assert result.kl <= 0.05 + 1e-7 and result.kl > 0.04
    with pytest.raises(MixtureSolveError, match="caps"):
        solve_tikmix_c(B, P, ones, ones, ones / 3, caps=pd.Series(0.1, index=DOMAINS))
    with pytest.raises(MixtureInputError, match="c and task_weights"):
        solve_tikmix_c(B, P, ones, -ones, ones / 3)


def test_solver_report_is_json() -> None:
    B = benefit(2, seed=18)
    ones = pd.Series(1.0, index=B.index)
    caps = pd.Series(0.5, index=DOMAINS)
    result = solve_tikmix_c(B, P, ones, ones, ones / 2, caps=caps, max_kl=0.2)
    report = json.loads(json.dumps(result.solver_report()))
    assert report["status"] == "optimal" and report["params"]["max_kl"] == 0.2
    assert report["kl_to_prior"] == pytest.approx(result.kl)
    assert set(report["predicted_benefit"]) == set(B.index)
    assert min(report["constraint_slack"]["caps"].values()) >= -1e-8


def test_domains_outside_p_stay_at_zero() -> None:
    B = benefit(2, seed=16)
    p = pd.Series([0.5, 0.5, 0.0, 0.0, 0.0], index=DOMAINS)
    B.loc[:, "d4"] = 100.0  # hugely beneficial, but outside p's support: KL would be infinite
    ones = pd.Series(1.0, index=B.index)
    result = solve_tikmix_c(B, p, ones, ones, ones / 2)
    assert (result.weights[["d2", "d3", "d4"]] == 0).all()


# --- end to end ------------------------------------------------------------------------------


def test_calibrated_solve_predicts_its_planted_optimum() -> None:
    """Rollouts from a planted model → fit → weights → solve: the chosen mixture's true mean
    benefit is within 2 SE of its prediction and near the planted optimum's."""
    B = benefit(3, seed=17)
    a, c = np.array([1.0, 0.8, 1.2]), np.array([0.5, 0.4, 0.6])
    mixtures, measured = rollouts(B, a, c, noise_sd=0.005, seed=21)
    fit = fit_calibration(B, P, mixtures, measured)
    weights = task_weights(fit)
    result = solve_tikmix_c(B, P, fit.a, fit.c, weights, max_kl=0.3)
    prediction = predict_with_se(fit, result.weights, weights)
    t = weights.to_numpy()
    truth = reference_objective(B.to_numpy(), P.to_numpy(), a, c, t, result.weights.to_numpy())
    assert abs(prediction.mean - truth) <= 2 * prediction.mean_se
    assert prediction.mean == pytest.approx(result.objective, abs=1e-12)
    _, best = slsqp_best(B.to_numpy(), P.to_numpy(), a, c, t)
    assert truth > 0.9 * best > 0


@pytest.mark.parametrize(
    ("b_scale", "cost", "headroom"),
    [(0.05, 1.0, False), (1.0, 0.1, True)],
    ids=["prior-near-optimal", "planted-headroom"],
)
def test_leaves_p_only_where_training_pays(b_scale: float, cost: float, headroom: bool) -> None:
    """Reality is ``B·(w − p) − c·KL(w‖p)``. Where the influence's gains are small against the
    cost of leaving p, TiKMiX-D's linear objective still leaves p and loses in "training";
    tikmix_c stays at p within its SE. Where the gains are large, tikmix_c takes them."""
    B = benefit(4, seed=30) * b_scale
    a, c = np.ones(4), np.full(4, cost)
    mixtures, measured = rollouts(B, a, c, noise_sd=0.003, seed=31)
    fit = fit_calibration(B, P, mixtures, measured)
    result = solve_tikmix_c(B, P, fit.a, fit.c, task_weights(fit), max_kl=0.5)
    prediction = predict_with_se(fit, result.weights)

    def trained(w) -> float:  # the "measured" mean benefit of training on w
        w = np.asarray(w, dtype=float)
        return float(np.mean(a * (B.to_numpy() @ (w - P.to_numpy())) - c * kl_divergence(w, P)))

    ours, tikmix_d = trained(result.weights), trained(solve_tikmix_d(B, P).weights)
    assert abs(prediction.mean - ours) <= 2 * prediction.mean_se
    if headroom:
        assert ours > 0.1 and ours > 5 * tikmix_d > 0
    else:
        assert tikmix_d < -0.03  # the linear objective's move costs loss
        assert result.kl < 1e-3 and ours >= -2 * prediction.mean_se


# --- settings --------------------------------------------------------------------------------


def test_settings_give_log_spaced_levels_and_the_solve_bound() -> None:
    settings = TikmixCSettings()
    assert np.allclose(settings.kl_levels(), (0.02, 0.1, 0.5))
    assert settings.max_kl == 0.5
    assert TikmixCSettings(n_levels=1).kl_levels() == (0.02,)
    assert TikmixCSettings(max_kl_multiple=None).max_kl is None
    mixtures = sample_rollout_mixtures(P, settings.kl_levels(), settings.per_level, settings.seed)
    assert len(mixtures) == 12


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"kl_min": 1.0}, "mixing.tikmix_c.kl_min"),
        ({"n_levels": 1, "per_level": 3}, "mixing.tikmix_c.per_level"),
    ],
)
def test_start_up_refuses_settings_the_fit_cannot_use(change: dict, key: str) -> None:
    config = {"domains": {"a": {"paths": ["x"]}}, "tasks": {"t": {"path": "y"}}}
    config["mixing"] = {"tikmix_c": change}
    validate(config, str(SCHEMA), set_default=True)
    with pytest.raises(ConfigError, match=f"config key '{key}'"):
        check_settings(config, ["stage1-100"])


def _run_record(path: Path, method: str, seed: int, losses: dict[str, float]) -> None:
    record = {
        "method": method,
        "seed": seed,
        "tasks": {task: {"loss": loss} for task, loss in losses.items()},
        "average_loss": float(np.mean(list(losses.values()))),
        "compute": {"tokens": 1000, "flops": 6.0e9},
    }
    path.write_text(json.dumps(record))


def test_the_workflow_jobs_fit_the_rollouts_and_write_a_capped_document(tmp_path) -> None:
    """The two tikmix_c jobs end to end on files: rollout mixtures around `continue` within the
    caps, run records from a planted truth (continue's loss minus the rollout's = a·B(w − p) −
    c·KL), and the mixture document: planted a and c recovered, the solve of the fitted model,
    the prediction, the caps and the rollouts' cost upstream."""
    B = benefit(3, seed=4)
    B.to_csv(tmp_path / "influence.csv")
    (tmp_path / "influence.json").write_text(
        json.dumps({"total_compute": {"tokens": 10, "flops": 1.0e9}})
    )
    write_mixture(tmp_path / "continue.json", mixture_document(P, method="continue"))
    unique = {d: 1_000_000 for d in DOMAINS}
    stage = study_availability(unique_tokens=unique, stage_tokens=1_000_000, max_epochs=0.6)
    stage.write(tmp_path / "availability.json")
    settings = TikmixCSettings(kl_min=0.02, kl_max=0.3, n_levels=3, per_level=4, seed=3)
    paths = [tmp_path / f"r{k:02d}.json" for k in range(12)]
    mixtures = tikmix_c_rollout_mixtures(
        continue_mixture=tmp_path / "continue.json",
        availability=tmp_path / "availability.json",
        tikmix_c=settings,
        out_paths=paths,
    )
    assert (mixtures.to_numpy() <= 0.6 + 1e-9).all()
    assert json.loads(paths[0].read_text())["provenance"]["kl_to_continue"] == pytest.approx(0.02)
    a, c = np.array([0.8, -0.3, 0.5]), np.array([0.2, 0.05, 0.4])
    reference = {task: 3.0 for task in B.index}
    _run_record(tmp_path / "continue_run.json", "continue", 2000, reference)
    runs = []
    for k, (_, w) in enumerate(mixtures.iterrows()):
        benefit_v = a * (B.to_numpy() @ (w - P).to_numpy()) - c * kl_divergence(w, P)
        runs.append(tmp_path / f"run{k:02d}.json")
        _run_record(runs[-1], f"r{k:02d}", 2000, dict(zip(B.index, 3.0 - benefit_v, strict=True)))
    document = tikmix_c_mixture(
        influence_csv=tmp_path / "influence.csv",
        influence_sidecar=tmp_path / "influence.json",
        continue_mixture=tmp_path / "continue.json",
        availability=tmp_path / "availability.json",
        rollout_mixtures=paths,
        rollout_runs=runs,
        continue_run=tmp_path / "continue_run.json",
        tikmix_c=settings,
        normalisation=Normalisation(),
        out=tmp_path / "tikmix_c.json",
    )
    fitted = pd.DataFrame.from_dict(document["solver"]["calibration"], orient="index")
    assert fitted["a"].to_numpy() == pytest.approx(a, abs=1e-6)
    assert fitted["c"].to_numpy() == pytest.approx(c, abs=1e-6)
    assert (fitted["loo_r"] > 0.99).all() and fitted["task_weight"].sum() == pytest.approx(1)
    weights = pd.Series(document["weights"])[DOMAINS]
    expected = solve_tikmix_c(
        B,
        P,
        pd.Series(a, B.index),
        pd.Series(c, B.index),
        fitted["task_weight"],
        stage.caps,
        max_kl=0.3,
    )
    assert weights.to_numpy() == pytest.approx(expected.weights.to_numpy(), abs=1e-5)
    assert (weights <= 0.6 + 1e-6).all()
    truth = np.mean(a * (B.to_numpy() @ (weights - P).to_numpy()) - c * kl_divergence(weights, P))
    assert document["solver"]["prediction"]["average"] == pytest.approx(truth, abs=1e-5)
    # the rollouts (13 runs) and the influence matrix are what determining it cost
    assert document["total_compute"]["flops"] == pytest.approx(1.0e9 + 13 * 6.0e9)
    # a run of another seed than continue's reference is not a paired difference
    _run_record(runs[0], "r00", 7, reference)
    with pytest.raises(ValueError, match="seed 7, but continue's reference run has seed 2000"):
        tikmix_c_mixture(
            influence_csv=tmp_path / "influence.csv",
            influence_sidecar=tmp_path / "influence.json",
            continue_mixture=tmp_path / "continue.json",
            availability=tmp_path / "availability.json",
            rollout_mixtures=paths,
            rollout_runs=runs,
            continue_run=tmp_path / "continue_run.json",
            tikmix_c=settings,
            normalisation=Normalisation(),
            out=tmp_path / "again.json",
        )
