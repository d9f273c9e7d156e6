"""tikmix_c: the calibrated mixture method (beyond the paper; issue 22, docs/tikmix_c.md).

TiKMiX-D and TiKMiX-M predict a task's gain as linear in the mixture, so nothing charges for
leaving the prior and their optimisers head for corners. tikmix_c predicts the measured benefit
of task ``v`` (nats, larger is better, the sign of ``B``; docs/architecture.md "Sign") at a
mixture ``w``, relative to training on the ``continue`` mixture ``p``, as::

    g_v(w) = a_v · B_v·(w − p) − c_v · KL(w‖p)

``B_v`` is task ``v``'s row of the benefit matrix on the steering half. ``a_v`` (how far the
influence's first-order prediction carries over to training) and ``c_v ≥ 0`` (the price of
leaving ``p``) are fitted by least squares, with no intercept, to a few short paired rollouts at
mixtures sampled around ``p`` at graded KL (:func:`sample_rollout_mixtures`,
:func:`fit_calibration`). Tasks are weighted by how well their fit predicts held-out rollouts
(:func:`task_weights`), and the weighted mean of ``g_v`` is maximised over the simplex (and the
availability caps) as a convex program (:func:`solve_tikmix_c`). :func:`predict_with_se` gives the
prediction ± SE for any mixture from the fit's covariance.

In the workflow the rollouts are training runs from the stage-2 checkpoint
(workflow/rules/calibrate.smk; the job functions are in :mod:`tikmix.mixing.stages`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import cvxpy as cp
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from tikmix.core.mixture import MixtureInputError, validate_weights
from tikmix.core.settings import TikmixCSettings
from tikmix.mixing.tikmix_d import FEASIBILITY_TOLERANCE, SOLVER_TOLERANCE, MixtureSolveError

#: Fewest rollouts a fit accepts (two coefficients, and leave-one-out still needs a residual).
MIN_ROLLOUTS = TikmixCSettings.MIN_ROLLOUTS

#: Relative accuracy of the KL a sampled mixture reaches (bisection on the step length).
KL_RELATIVE_TOLERANCE = 1e-9

#: Random directions tried per sampled mixture before the caps or the level are declared
#: unreachable.
MAX_DIRECTION_TRIES = 1000


def kl_divergence(w: np.ndarray | pd.Series, p: np.ndarray | pd.Series) -> float:
    """``KL(w‖p) = Σ_d w_d log(w_d / p_d)`` (``0 log 0 = 0``; ``inf`` if ``w`` leaves p's support)."""
    w, p = np.asarray(w, dtype=float), np.asarray(p, dtype=float)
    positive = w > 0
    if (p[positive] <= 0).any():
        return float("inf")
    return float(w[positive] @ np.log(w[positive] / p[positive]))


# ---------------------------------------------------------------------------------------------
# Rollout mixtures


def _checked_caps(caps, domains: list[str]) -> np.ndarray | None:
    if caps is None:
        return None
    values = pd.Series(caps, dtype=float)
    missing = [d for d in domains if d not in values.index]
    unknown = [d for d in values.index if d not in set(domains)]
    if missing or unknown:
        raise MixtureInputError(f"caps: missing domain(s) {missing}, unknown domain(s) {unknown}")
    values = values.reindex(domains).to_numpy()
    if np.isnan(values).any() or (values < 0).any():
        bad = [d for d, c in zip(domains, values, strict=True) if not c >= 0]
        raise MixtureInputError(f"caps: must be >= 0 and not NaN for domain(s) {bad}")
    return np.minimum(values, 1.0)


def _tilted(log_p: np.ndarray, direction: np.ndarray, step: float) -> np.ndarray:
    """``w ∝ p · exp(step · direction)`` (a softmax in log space)."""
    z = log_p + step * direction
    z = np.exp(z - z.max())
    return z / z.sum()


def sample_rollout_mixtures(
    p: pd.Series,
    kl_levels,
    per_level: int,
    seed: int,
    caps: pd.Series | None = None,
) -> pd.DataFrame:
    """Mixtures around ``p`` at graded ``KL(w‖p)``, for the rollouts that calibrate tikmix_c.

    Each mixture tilts ``p`` along a random direction ``u`` in log space,
    ``w(t) ∝ p · exp(t·u)`` with ``u ~ N(0, I)`` on p's support, and bisects the step ``t`` until
    ``KL(w(t)‖p)`` equals the level (along such a path ``dKL/dt = t · Var_w(u) ≥ 0``, so the KL
    grows monotonically from 0). A direction whose mixture at the level exceeds a cap, or that
    cannot reach the level at all (the KL of a path is bounded by ``−log p`` of the domain
    ``u`` favours), is redrawn. Domains with ``p_d = 0`` stay at 0 (their KL would be infinite).

    Args:
        p: the ``continue`` mixture (stage 1's), domain → weight.
        kl_levels: the KL values (> 0) to sample at.
        per_level: mixtures per level.
        seed: the random generator's seed; the same seed gives the same mixtures.
        caps: optional per-domain upper bounds on ``w``; ``p`` must lie within them.

    Returns:
        One row per mixture (``per_level`` rows per level, in the order of ``kl_levels``), one
        column per domain of ``p``; the index names the level and draw, ``kl{level}_{j}``.

    Raises:
        MixtureInputError: a level is not > 0, ``per_level`` < 1, ``p`` is not a mixture or
            exceeds a cap, or a level cannot be reached within the caps.
    """
    p = validate_weights(p, source="p (the continue mixture)")
    domains = list(p.index)
    levels = [float(level) for level in np.atleast_1d(np.asarray(kl_levels, dtype=float))]
    if not levels or not all(level > 0 for level in levels):
        raise MixtureInputError(f"tikmix_c: kl_levels must be > 0, got {levels}")
    if per_level < 1:
        raise MixtureInputError(f"tikmix_c: per_level must be >= 1, got {per_level}")
    cap_values = _checked_caps(caps, domains)
    values = p.to_numpy(dtype=float)
    if cap_values is not None:
        over = values - cap_values > FEASIBILITY_TOLERANCE
        if over.any():
            raise MixtureInputError(
                f"tikmix_c: the continue mixture exceeds the caps on domain(s) "
                f"{[d for d, o in zip(domains, over, strict=True) if o]}"
            )
    support = values > 0
    log_p = np.log(values[support])
    rng = np.random.default_rng(seed)
    rows, names = [], []
    for level in levels:
        for j in range(per_level):
            w = np.zeros(len(domains))
            w[support] = _mixture_at_level(
                log_p, level, rng, None if cap_values is None else cap_values[support]
            )
            rows.append(w)
            names.append(f"kl{level:g}_{j}")
    return pd.DataFrame(rows, index=names, columns=domains)


def _mixture_at_level(log_p, level, rng, caps) -> np.ndarray:
    p = np.exp(log_p)
    for _ in range(MAX_DIRECTION_TRIES):
        u = rng.standard_normal(len(log_p))
        top = u >= u.max() - 1e-12
        if -np.log(p[top].sum()) <= level * (1 + 1e-6):
            continue  # the path's KL stays below the level
        high = 1.0
        while kl_divergence(_tilted(log_p, u, high), p) < level:
            high *= 2.0
        low = 0.0
        while high - low > KL_RELATIVE_TOLERANCE * high:
            mid = 0.5 * (low + high)
            if kl_divergence(_tilted(log_p, u, mid), p) < level:
                low = mid
            else:
                high = mid
        w = _tilted(log_p, u, high)
        if caps is not None and (w > caps + FEASIBILITY_TOLERANCE).any():
            continue
        return w
    raise MixtureInputError(
        f"tikmix_c: no mixture at KL {level:g} from the continue mixture within the caps after "
        f"{MAX_DIRECTION_TRIES} directions (lower the KL level or loosen the caps)"
    )


# ---------------------------------------------------------------------------------------------
# Calibration


@dataclass
class TikmixCCalibration:
    """The fitted ``g_v(w) = a_v · B_v·(w − p) − c_v · KL(w‖p)`` and how well it predicts.

    Attributes:
        B: the benefit matrix it was fitted with (tasks × domains).
        p: the ``continue`` mixture.
        a, c: the coefficients per task (``c ≥ 0``; ``a`` of either sign, see
            :func:`fit_calibration`).
        se_a, se_c: their standard errors (of the unconstrained least-squares fit).
        covariance: per task the 2 × 2 covariance of ``(a, c)``, shape [tasks, 2, 2].
        residual_sd: per task the residual SD of the fit (nats).
        loo_r: per task the leave-one-rollout-out Pearson r of predicted vs measured benefit.
        loo_r2: per task the leave-one-rollout-out R² against predicting no change:
            ``1 − Σ(y − ŷ₋ᵢ)² / Σy²`` (≤ 0 when the fit predicts held-out rollouts no better
            than zero).
        noise_ceiling: per task ``1 − n·σ²/Σy²`` (clipped to [0, 1]) with ``σ`` the replicate SD,
            the best R² the measurements allow; ``None`` without replicates.
        c_clamped: per task whether the unconstrained fit had ``c < 0`` (then ``c = 0``).
        n_rollouts: rollouts fitted.
    """

    B: pd.DataFrame
    p: pd.Series
    a: pd.Series
    c: pd.Series
    se_a: pd.Series
    se_c: pd.Series
    covariance: np.ndarray
    residual_sd: pd.Series
    loo_r: pd.Series
    loo_r2: pd.Series
    noise_ceiling: pd.Series | None
    c_clamped: pd.Series
    n_rollouts: int

    def table(self) -> pd.DataFrame:
        """One row per task: the coefficients, their SEs and the fit's quality."""
        columns = {
            "a": self.a,
            "se_a": self.se_a,
            "c": self.c,
            "se_c": self.se_c,
            "residual_sd": self.residual_sd,
            "loo_r": self.loo_r,
            "loo_r2": self.loo_r2,
            "c_clamped": self.c_clamped,
        }
        if self.noise_ceiling is not None:
            columns["noise_ceiling"] = self.noise_ceiling
        return pd.DataFrame(columns)


def regressors(
    B: pd.DataFrame, p: pd.Series, mixtures: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """The model's regressors per rollout: ``B_v·(w − p)`` [mixtures, tasks] and ``KL(w‖p)``
    [mixtures]."""
    W = mixtures[B.columns].to_numpy(dtype=float)
    P = p[B.columns].to_numpy(dtype=float)
    linear = (W - P) @ B.to_numpy(dtype=float).T
    kl = np.array([kl_divergence(w, P) for w in W])
    return linear, kl


def _fit_task(x: np.ndarray, kl: np.ndarray, y: np.ndarray) -> tuple[float, float, bool]:
    """Least squares ``y ≈ a·x − c·kl`` with ``c ≥ 0`` and no intercept.

    Two coefficients and one bound: when the unconstrained optimum has ``c < 0`` the constrained
    optimum lies on ``c = 0``, i.e. the one-regressor fit of ``a``.
    """
    X = np.column_stack([x, -kl])
    (a, c), *_ = np.linalg.lstsq(X, y, rcond=None)
    if c >= 0:
        return float(a), float(c), False
    xx = float(x @ x)
    return (float(x @ y) / xx if xx > 0 else 0.0), 0.0, True


def fit_calibration(
    B: pd.DataFrame,
    p: pd.Series,
    mixtures: pd.DataFrame,
    measured: pd.DataFrame,
    replicate_sd: pd.Series | float | None = None,
) -> TikmixCCalibration:
    """Fit ``a_v`` and ``c_v`` per task to paired rollouts.

    For task ``v`` the regressors of rollout ``i`` are ``B_v·(w_i − p)`` and ``KL(w_i‖p)``;
    ``measured[i, v]`` is loss(p-run) − loss(w_i-run) on the steering half, paired by seed
    (larger = better, as ``B``). The fit is least squares with no intercept (at ``w = p`` the
    model predicts 0, as the paired difference is), ``c_v ≥ 0`` (leaving ``p`` has a price, never
    a reward beyond the linear term) and ``a_v`` of either sign: a negative ``a_v`` says the
    influence is wrong-signed for that task in training, and the solver should then follow the
    rollouts, not ``B``. (A noisy ``a_v`` is kept from misleading the solver by the task weights,
    not by a sign constraint that would hide the disagreement.)

    The SEs are the unconstrained least-squares ones, ``σ²(XᵀX)⁻¹``, with ``σ`` the residual SD
    of the unconstrained fit or, when replicates give a larger one, ``replicate_sd`` (so lack of
    fit and measurement noise both count); a clamped ``c`` keeps its unconstrained SE.

    Args:
        B: benefit matrix, tasks × domains, on the steering half.
        p: the ``continue`` mixture.
        mixtures: the rollouts' mixtures, [n_mixtures, domains].
        measured: per rollout and task the paired benefit, [n_mixtures, tasks] (same index as
            ``mixtures``).
        replicate_sd: optional SD of one paired measurement (per task, or one number), from
            replicate rollouts: sets the noise ceiling and a floor on ``σ``.

    Raises:
        MixtureInputError: mismatched or non-finite inputs, fewer than :data:`MIN_ROLLOUTS`
            rollouts, or a rollout outside p's support (infinite KL).
    """
    tasks, domains = list(B.index), list(B.columns)
    values = B.to_numpy(dtype=float)
    if B.empty or not np.isfinite(values).all():
        raise MixtureInputError("tikmix_c: B must be a non-empty, finite tasks × domains matrix")
    p = validate_weights(p, domains, source="p (the continue mixture)")
    missing = [d for d in domains if d not in mixtures.columns]
    if missing:
        raise MixtureInputError(f"tikmix_c: the rollout mixtures lack domain(s) {missing}")
    missing = [t for t in tasks if t not in measured.columns]
    if missing:
        raise MixtureInputError(f"tikmix_c: the measured benefits lack task(s) {missing}")
    if not mixtures.index.equals(measured.index):
        raise MixtureInputError(
            "tikmix_c: mixtures and measured must have the same rollouts (index)"
        )
    n = len(mixtures)
    if n < MIN_ROLLOUTS:
        raise MixtureInputError(f"tikmix_c: needs >= {MIN_ROLLOUTS} rollouts, got {n}")
    Y = measured[tasks].to_numpy(dtype=float)
    if not np.isfinite(Y).all():
        raise MixtureInputError("tikmix_c: the measured benefits must be finite")
    for name, row in mixtures[domains].iterrows():
        validate_weights(row, domains, source=f"rollout mixture {name!r}")
    linear, kl = regressors(B, p, mixtures)
    if not np.isfinite(kl).all():
        bad = mixtures.index[~np.isfinite(kl)].tolist()
        raise MixtureInputError(f"tikmix_c: rollout(s) {bad} put weight where p is 0 (KL = inf)")
    sd_floor = np.zeros(len(tasks))
    if replicate_sd is not None:
        sd_floor = pd.Series(replicate_sd, index=tasks, dtype=float).reindex(tasks).to_numpy()
        if not (np.isfinite(sd_floor) & (sd_floor >= 0)).all():
            raise MixtureInputError("tikmix_c: replicate_sd must be finite and >= 0 for every task")

    out = {key: np.zeros(len(tasks)) for key in ("a", "c", "se_a", "se_c", "sd", "r", "r2")}
    clamped = np.zeros(len(tasks), dtype=bool)
    covariance = np.zeros((len(tasks), 2, 2))
    for v in range(len(tasks)):
        x, y = linear[:, v], Y[:, v]
        a, c, clamped[v] = _fit_task(x, kl, y)
        X = np.column_stack([x, -kl])
        (a_free, c_free), *_ = np.linalg.lstsq(X, y, rcond=None)
        residual = y - X @ np.array([a_free, c_free])
        sigma2 = max(float(residual @ residual) / (n - 2), float(sd_floor[v]) ** 2)
        gram = X.T @ X
        cov = sigma2 * np.linalg.pinv(gram)
        fitted = y - X @ np.array([a, c])
        loo = np.array([_loo_prediction(x, kl, y, i) for i in range(n)])
        out["a"][v], out["c"][v] = a, c
        out["se_a"][v], out["se_c"][v] = np.sqrt(np.diag(cov))
        out["sd"][v] = np.sqrt(float(fitted @ fitted) / (n - 2))
        out["r"][v] = _pearson(loo, y)
        out["r2"][v] = 1 - float((y - loo) @ (y - loo)) / float(y @ y) if y @ y > 0 else 0.0
        covariance[v] = cov
    ceiling = None
    if replicate_sd is not None:
        energy = (Y**2).sum(axis=0)
        ceiling = pd.Series(
            np.clip(1 - n * sd_floor**2 / np.where(energy > 0, energy, np.inf), 0, 1), index=tasks
        )
    series = {key: pd.Series(value, index=tasks) for key, value in out.items()}
    return TikmixCCalibration(
        B=B,
        p=p,
        a=series["a"],
        c=series["c"],
        se_a=series["se_a"],
        se_c=series["se_c"],
        covariance=covariance,
        residual_sd=series["sd"],
        loo_r=series["r"],
        loo_r2=series["r2"],
        noise_ceiling=ceiling,
        c_clamped=pd.Series(clamped, index=tasks),
        n_rollouts=n,
    )


def _loo_prediction(x: np.ndarray, kl: np.ndarray, y: np.ndarray, i: int) -> float:
    keep = np.arange(len(y)) != i
    a, c, _ = _fit_task(x[keep], kl[keep], y[keep])
    return a * x[i] - c * kl[i]


def _pearson(u: np.ndarray, v: np.ndarray) -> float:
    u, v = u - u.mean(), v - v.mean()
    denominator = np.sqrt((u @ u) * (v @ v))
    return float(u @ v / denominator) if denominator > 0 else 0.0


def task_weights(calibration: TikmixCCalibration, min_loo_r2: float = 0.1) -> pd.Series:
    """Each task's weight in the objective: how well its fit predicts held-out rollouts.

    ``t_v ∝ loo_r2_v`` (the leave-one-rollout-out R² against predicting no change) where it
    reaches ``min_loo_r2``, else 0; normalised to sum to 1 (all 0 when no task qualifies, and
    then :func:`solve_tikmix_c` returns ``p``). A task whose fit explains nothing out of sample
    has ``loo_r2 ≤ 0`` and no pull, however large its ``B`` row; a well-measured task's weight is
    at most 1, so no single task's pull grows without bound as an SNR's would.
    """
    quality = calibration.loo_r2.astype(float)
    raw = quality.where(quality >= max(min_loo_r2, 0.0), 0.0).clip(lower=0.0)
    total = raw.sum()
    return (raw / total if total > 0 else raw).rename("task_weight")


# ---------------------------------------------------------------------------------------------
# Prediction


@dataclass
class TikmixCPrediction:
    """The predicted benefit of a mixture, per task and as a weighted mean.

    Attributes:
        per_task: ``predicted`` (``g_v(w)``, nats), ``se`` (of the predicted mean, from the
            coefficients' covariance) and ``se_new`` (of one new paired measurement: ``se`` and
            the residual SD in quadrature).
        mean, mean_se: the task-weighted mean of ``predicted`` and its SE (tasks' fits taken
            as independent).
        kl: ``KL(w‖p)``.
    """

    per_task: pd.DataFrame
    mean: float
    mean_se: float
    kl: float


def predict_with_se(
    calibration: TikmixCCalibration,
    w: pd.Series,
    weights: pd.Series | None = None,
) -> TikmixCPrediction:
    """``g_v(w)`` ± SE per task and their weighted mean (uniform over tasks by default).

    The SE of ``g_v`` is ``sqrt(zᵀ Σ_v z)`` with ``z = (B_v·(w − p), −KL(w‖p))`` and ``Σ_v`` the
    covariance of ``(a_v, c_v)``; the mean's SE adds the tasks' variances with their weights
    squared (the tasks are fitted separately; measurements shared by seed make them correlated,
    which this ignores).
    """
    B, p = calibration.B, calibration.p
    w = validate_weights(w, list(B.columns), source="mixture")
    linear, kl = regressors(B, p, w.to_frame().T)
    z = np.column_stack([linear[0], -np.full(len(B), kl[0])])
    predicted = calibration.a.to_numpy() * z[:, 0] + calibration.c.to_numpy() * z[:, 1]
    variance = np.einsum("ti,tij,tj->t", z, calibration.covariance, z)
    per_task = pd.DataFrame(
        {
            "predicted": predicted,
            "se": np.sqrt(variance),
            "se_new": np.sqrt(variance + calibration.residual_sd.to_numpy() ** 2),
        },
        index=B.index,
    )
    t = (
        pd.Series(1.0 / len(B), index=B.index)
        if weights is None
        else pd.Series(weights, dtype=float).reindex(B.index).fillna(0.0)
    )
    total = t.sum()
    t = t / total if total > 0 else t
    mean = float(t @ per_task["predicted"])
    mean_se = float(np.sqrt((t**2) @ variance))
    return TikmixCPrediction(per_task=per_task, mean=mean, mean_se=mean_se, kl=float(kl[0]))


# ---------------------------------------------------------------------------------------------
# Solve


@dataclass
class TikmixCResult:
    """The tikmix_c mixture and what the solve saw.

    Attributes:
        weights: the mixture (B's column order), sums to 1.
        prior: ``p``.
        objective: ``Σ_v t_v g_v(w)`` at ``weights`` (nats; ``t`` as given).
        predicted: ``g_v(weights)`` per task.
        kl: ``KL(weights‖p)``.
        status: the conic solver's status, or ``"continue"`` when nothing pulls away from ``p``
            (no task weight, or a gain that is the same on every domain).
        iterations: interior-point iterations (0 without a solve).
        cap_slack: ``cap_d − w_d`` per domain, or ``None`` without caps.
        params: the solve's inputs that are not arrays (``max_kl``, tolerance).
    """

    weights: pd.Series
    prior: pd.Series
    objective: float
    predicted: pd.Series
    kl: float
    status: str
    iterations: int
    cap_slack: pd.Series | None
    params: dict = field(default_factory=dict)

    def solver_report(self) -> dict:
        """A JSON-serialisable summary (the ``solver`` section of a mixture document)."""
        return {
            "name": "conic program (cvxpy + Clarabel interior point)",
            "status": self.status,
            "iterations": self.iterations,
            "params": self.params,
            "objective": self.objective,
            "kl_to_prior": self.kl,
            "predicted_benefit": {k: float(v) for k, v in self.predicted.items()},
            "constraint_slack": {
                "sum": float(self.weights.sum() - 1),
                "caps": None
                if self.cap_slack is None
                else {k: float(v) for k, v in self.cap_slack.items()},
            },
        }


def solve_tikmix_c(
    B: pd.DataFrame,
    p: pd.Series,
    a: pd.Series,
    c: pd.Series,
    task_weights: pd.Series,
    caps: pd.Series | None = None,
    *,
    max_kl: float | None = None,
    tolerance: float = SOLVER_TOLERANCE,
) -> TikmixCResult:
    """Maximise ``Σ_v t_v (a_v · B_v·(w − p) − c_v · KL(w‖p))`` over the simplex.

    With ``G = Σ_v t_v a_v B_v`` and ``C = Σ_v t_v c_v ≥ 0`` the objective is
    ``G·(w − p) − C·KL(w‖p)``: linear minus a convex relative entropy, so concave, and solved as
    an exponential-cone program (cvxpy's ``rel_entr``, Clarabel) with ``Σw = 1``, ``w ≥ 0``,
    ``w ≤ caps`` and optionally ``KL(w‖p) ≤ max_kl`` (the fit says nothing beyond the rollouts'
    largest KL). Without caps or ``max_kl`` the optimum is ``w ∝ p·exp(G/C)`` (the tests' check);
    the conic solve covers the capped and the ``C = 0`` cases with the same code. Domains with
    ``p_d = 0`` stay at 0. When no task has weight, or ``G`` is the same on every domain of p's
    support (no direction gains), every mixture with ``C = 0`` would tie, so the answer is ``p``
    itself, status ``continue`` (if ``p`` exceeds a cap, the mixture within the caps closest to
    ``p`` in KL).

    Raises:
        MixtureInputError: malformed inputs (unknown tasks or domains, NaN, ``c < 0``,
            negative weights).
        MixtureSolveError: the caps leave no mixture, or the solver found no optimum.
    """
    tasks, domains = list(B.index), list(B.columns)
    values = B.to_numpy(dtype=float)
    if B.empty or not np.isfinite(values).all():
        raise MixtureInputError("tikmix_c: B must be a non-empty, finite tasks × domains matrix")
    p = validate_weights(p, domains, source="p (the continue mixture)")
    coefficients = {}
    for name, series in (("a", a), ("c", c), ("task_weights", task_weights)):
        series = pd.Series(series, dtype=float)
        missing = [t for t in tasks if t not in series.index]
        if missing or not np.isfinite(series.reindex(tasks)).all():
            raise MixtureInputError(
                f"tikmix_c: {name} must be finite for every task; missing {missing}"
            )
        coefficients[name] = series.reindex(tasks).to_numpy()
    if (coefficients["c"] < 0).any() or (coefficients["task_weights"] < 0).any():
        raise MixtureInputError("tikmix_c: c and task_weights must be >= 0")
    if max_kl is not None and not max_kl >= 0:
        raise MixtureInputError(f"tikmix_c: max_kl must be >= 0, got {max_kl}")
    cap_values = _checked_caps(caps, domains)
    t = coefficients["task_weights"]
    gain = (t * coefficients["a"]) @ values
    cost = float(t @ coefficients["c"])
    P = p.to_numpy(dtype=float)
    support = P > 0
    if cap_values is not None and cap_values[support].sum() < 1 - FEASIBILITY_TOLERANCE:
        raise MixtureSolveError(
            f"tikmix_c: the caps on p's support sum to {cap_values[support].sum():.6g} < 1: "
            "no mixture fits within them"
        )
    flat = np.ptp(gain[support]) <= 1e-12 * max(1.0, np.abs(gain[support]).max())
    p_fits = cap_values is None or (P <= cap_values + FEASIBILITY_TOLERANCE).all()
    params = {"max_kl": max_kl, "tolerance": tolerance}
    if flat and p_fits:
        return _result(B, p, P, t, coefficients, cap_values, "continue", 0, params)
    if flat:  # every mixture ties on the objective: take the one nearest p within the caps
        gain_s, cost = np.zeros(int(support.sum())), 1.0
    else:
        gain_s = gain[support]
    w = cp.Variable(int(support.sum()), nonneg=True)
    kl = cp.sum(cp.rel_entr(w, P[support]))
    constraints = [cp.sum(w) == 1]
    if cap_values is not None:
        constraints.append(w <= cap_values[support])
    if max_kl is not None:
        constraints.append(kl <= max_kl)
    program = cp.Problem(cp.Maximize(gain_s @ w - cost * kl), constraints)
    try:
        with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="blas"):
            warnings.simplefilter("ignore", UserWarning)
            program.solve(
                solver="CLARABEL", tol_gap_abs=tolerance, tol_gap_rel=tolerance, tol_feas=tolerance
            )
    except cp.error.SolverError as error:
        raise MixtureSolveError(f"tikmix_c: the conic solver failed: {error}") from error
    if program.status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or w.value is None:
        raise MixtureSolveError(f"tikmix_c found no optimum: solver status {program.status}")
    weights = np.zeros(len(domains))
    weights[support] = np.clip(w.value, 0.0, None)
    weights /= weights.sum()
    if cap_values is not None:
        over = weights - cap_values
        if (over > FEASIBILITY_TOLERANCE).any():
            j = int(np.argmax(over))
            raise MixtureSolveError(
                f"tikmix_c's solution exceeds the cap of domain {domains[j]!r} by {over[j]:.3g}"
            )
    iterations = program.solver_stats.num_iters if program.solver_stats else 0
    return _result(
        B,
        p,
        weights,
        t,
        coefficients,
        cap_values,
        str(program.status),
        int(iterations or 0),
        params,
    )


def _result(
    B, p, weights, t, coefficients, cap_values, status, iterations, params
) -> TikmixCResult:
    P = p.to_numpy(dtype=float)
    kl = kl_divergence(weights, P)
    predicted = (
        coefficients["a"] * (B.to_numpy(dtype=float) @ (weights - P)) - coefficients["c"] * kl
    )
    return TikmixCResult(
        weights=pd.Series(weights, index=B.columns, name="weight"),
        prior=p.rename("weight"),
        objective=float(t @ predicted),
        predicted=pd.Series(predicted, index=B.index),
        kl=kl,
        status=status,
        iterations=iterations,
        cap_slack=None if cap_values is None else pd.Series(cap_values - weights, index=B.columns),
        params=params,
    )
