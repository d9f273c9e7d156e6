"""The TiKMiX-M surrogate: a LightGBM regressor from mixture weights to a response.

Settings follow RegMix (Liu et al., 2024): gradient-boosted trees, up to 1000 rounds at
learning rate 0.01 with early stopping on a validation split. Unlike RegMix's script, the
split used for early stopping is always carved out of the *training* data, never the data a
quality number is computed on. Tree sizes are set for the few hundred samples a mixture
study has (``num_leaves=15``, ``min_data_in_leaf=5``).

Quality is 5-fold cross-validated: each fold trains on the other four (with its own inner
early-stopping split) and predicts the held-out fold; Spearman and Pearson correlations are
reported over the pooled out-of-fold predictions and per fold, with the out-of-fold root-mean-square
error (TiKMiX-M's gate compares a predicted gain with it).

:func:`fit_linear_response` is the check that comes first: a least-squares linear model of the
response on w, cross-validated on the same folds. Where it explains the response (TiKMiX-M's
``gate.linear_r2``), the trees can only approximate it worse (piecewise constant, a few hundred
samples), so TiKMiX-M uses the linear model instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightgbm
import numpy as np
import pandas as pd
from scipy.stats import pearsonr, spearmanr

from tikmix.core.mixture import MixtureInputError

#: LightGBM parameters of the surrogate; any can be overridden through ``params``.
DEFAULT_PARAMS = {
    "objective": "regression",
    "metric": "l2",
    "learning_rate": 0.01,
    "num_leaves": 15,
    "min_data_in_leaf": 5,
    "min_sum_hessian_in_leaf": 1e-3,
    "feature_fraction": 1.0,
    "verbosity": -1,
    "deterministic": True,
    "force_row_wise": True,
}


@dataclass
class Surrogate:
    """A trained regressor over mixtures of ``domains`` (the column order it expects)."""

    booster: lightgbm.Booster
    domains: list[str]

    def predict(self, W: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Predicted response for each row of ``W`` (a DataFrame is matched by column name)."""
        if isinstance(W, pd.DataFrame):
            missing = [d for d in self.domains if d not in W.columns]
            if missing:
                raise MixtureInputError(f"surrogate: mixtures lack domain column(s) {missing}")
            W = W[self.domains].to_numpy(dtype=float)
        W = np.atleast_2d(np.asarray(W, dtype=float))
        if W.shape[1] != len(self.domains):
            raise MixtureInputError(
                f"surrogate: expected {len(self.domains)} domains, got {W.shape[1]} columns"
            )
        return self.booster.predict(W, num_iteration=self.booster.best_iteration or None)


@dataclass
class SurrogateQuality:
    """Cross-validated agreement between held-out responses and predictions."""

    spearman: float
    pearson: float
    rmse: float
    fold_spearman: list[float]
    fold_pearson: list[float]
    n_samples: int
    n_folds: int
    best_iterations: list[int]

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class SurrogateFit:
    """The surrogate trained on all samples, and its cross-validated quality."""

    model: Surrogate
    quality: SurrogateQuality


def _checked(W: pd.DataFrame, y, n_folds: int) -> tuple[np.ndarray, np.ndarray]:
    """``W`` and ``y`` as arrays, checked for shape, finiteness and enough samples per fold."""
    X = W.to_numpy(dtype=float)
    y = np.asarray(y, dtype=float)
    if X.shape[0] != y.shape[0]:
        raise MixtureInputError(f"surrogate: {X.shape[0]} mixtures but {y.shape[0]} responses")
    if not (np.isfinite(X).all() and np.isfinite(y).all()):
        raise MixtureInputError("surrogate: mixtures and responses must be finite")
    if n_folds < 2 or X.shape[0] < 4 * n_folds:
        raise MixtureInputError(
            f"surrogate: need n_folds >= 2 and at least {4 * n_folds} samples, "
            f"got n_folds={n_folds} and {X.shape[0]} samples"
        )
    return X, y


def cross_validation_folds(
    rng: np.random.Generator, n_samples: int, n_folds: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(test, train)`` indices of each fold: one permutation of the samples split in
    ``n_folds``. A fresh generator of the same seed gives the same folds, which is how the
    linear fit and the surrogate are cross-validated on the same split."""
    folds = np.array_split(rng.permutation(n_samples), n_folds)
    return [
        (test, np.concatenate([f for j, f in enumerate(folds) if j != k]))
        for k, test in enumerate(folds)
    ]


def _held_out_quality(
    y: np.ndarray,
    out_of_fold: np.ndarray,
    folds: list[tuple[np.ndarray, np.ndarray]],
    best_iterations: list[int],
) -> SurrogateQuality:
    return SurrogateQuality(
        spearman=float(spearmanr(y, out_of_fold).statistic),
        pearson=float(pearsonr(y, out_of_fold).statistic),
        rmse=float(np.sqrt(np.mean((y - out_of_fold) ** 2))),
        fold_spearman=[float(spearmanr(y[t], out_of_fold[t]).statistic) for t, _ in folds],
        fold_pearson=[float(pearsonr(y[t], out_of_fold[t]).statistic) for t, _ in folds],
        n_samples=int(len(y)),
        n_folds=len(folds),
        best_iterations=best_iterations,
    )


def _train(
    X: np.ndarray,
    y: np.ndarray,
    rng: np.random.Generator,
    params: dict,
    num_boost_round: int,
    valid_fraction: float,
    early_stopping_rounds: int,
) -> lightgbm.Booster:
    """Train on ``(X, y)`` with early stopping on a random ``valid_fraction`` of it."""
    order = rng.permutation(len(y))
    n_valid = max(1, int(round(valid_fraction * len(y))))
    valid, train = order[:n_valid], order[n_valid:]
    train_set = lightgbm.Dataset(X[train], y[train], params=params)
    valid_set = lightgbm.Dataset(X[valid], y[valid], reference=train_set, params=params)
    return lightgbm.train(
        params,
        train_set,
        num_boost_round=num_boost_round,
        valid_sets=[valid_set],
        callbacks=[lightgbm.early_stopping(early_stopping_rounds, verbose=False)],
    )


def fit_surrogate(
    W: pd.DataFrame,
    y: pd.Series | np.ndarray,
    *,
    seed: int = 0,
    num_boost_round: int = 1000,
    learning_rate: float = 0.01,
    early_stopping_rounds: int = 50,
    valid_fraction: float = 0.2,
    n_folds: int = 5,
    num_threads: int = 1,
    params: dict | None = None,
) -> SurrogateFit:
    """Fit the LightGBM surrogate ``y ≈ f(w)`` and measure its held-out quality.

    Args:
        W: mixtures, one per row, domains as columns.
        y: the response of each mixture (larger is better).
        seed: seeds LightGBM and every split; the fit is deterministic for a seed.
        num_boost_round, learning_rate: RegMix's 1000 rounds at 0.01.
        early_stopping_rounds: patience on the inner validation split.
        valid_fraction: share of each training set held out for early stopping.
        n_folds: folds of the cross-validated quality estimate.
        num_threads: LightGBM threads.
        params: extra LightGBM parameters, overriding :data:`DEFAULT_PARAMS`.
    """
    X, y = _checked(W, y, n_folds)
    if not 0 < valid_fraction < 1:
        raise MixtureInputError(
            f"surrogate: valid_fraction must be in (0, 1), got {valid_fraction}"
        )
    full_params = {
        **DEFAULT_PARAMS,
        "learning_rate": learning_rate,
        "seed": seed,
        "num_threads": num_threads,
        **(params or {}),
    }
    rng = np.random.default_rng(seed)
    train_args = (full_params, num_boost_round, valid_fraction, early_stopping_rounds)

    folds = cross_validation_folds(rng, len(y), n_folds)
    out_of_fold = np.empty_like(y)
    best_iterations = []
    for test, train in folds:
        booster = _train(X[train], y[train], rng, *train_args)
        out_of_fold[test] = booster.predict(X[test], num_iteration=booster.best_iteration)
        best_iterations.append(int(booster.best_iteration))
    quality = _held_out_quality(y, out_of_fold, folds, best_iterations)
    booster = _train(X, y, rng, *train_args)
    return SurrogateFit(Surrogate(booster, [str(c) for c in W.columns]), quality)


@dataclass
class LinearResponse:
    """``y ≈ intercept + coefficients · w``, the least-squares linear model of a response.

    Attributes:
        coefficients: one per domain (the column order it expects).
        intercept: the constant term. On mixtures (``Σw = 1``) it is not identified apart from
            the coefficients; :func:`numpy.linalg.lstsq`'s minimum-norm solution fixes it, and
            every prediction on a mixture is the same whichever split is taken.
        r2: cross-validated R² over the pooled out-of-fold predictions, ``1 − SSE/SST`` (NaN for
            a constant response).
        quality: the same out-of-fold predictions scored as the surrogate's are (Spearman,
            Pearson, RMSE; no boosting iterations).
    """

    coefficients: pd.Series
    intercept: float
    r2: float
    quality: SurrogateQuality

    @property
    def domains(self) -> list[str]:
        return [str(d) for d in self.coefficients.index]

    def predict(self, W: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Predicted response for each row of ``W`` (a DataFrame is matched by column name)."""
        if isinstance(W, pd.DataFrame):
            W = W[self.domains]
        W = np.atleast_2d(np.asarray(W, dtype=float))
        return self.intercept + W @ self.coefficients.to_numpy()

    def to_dict(self) -> dict:
        return {
            "cv_r2": self.r2,
            "intercept": self.intercept,
            "coefficients": {d: float(c) for d, c in self.coefficients.items()},
        }


def _least_squares(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``[intercept, coefficients…]`` of the minimum-norm least-squares fit."""
    design = np.hstack([np.ones((len(X), 1)), X])
    return np.linalg.lstsq(design, y, rcond=None)[0]


def fit_linear_response(
    W: pd.DataFrame, y: pd.Series | np.ndarray, *, seed: int = 0, n_folds: int = 5
) -> LinearResponse:
    """Least squares ``y ≈ b0 + b·w`` on all samples, cross-validated on the folds
    :func:`fit_surrogate` uses for the same ``seed`` and ``n_folds``."""
    X, y = _checked(W, y, n_folds)
    folds = cross_validation_folds(np.random.default_rng(seed), len(y), n_folds)
    out_of_fold = np.empty_like(y)
    for test, train in folds:
        beta = _least_squares(X[train], y[train])
        out_of_fold[test] = beta[0] + X[test] @ beta[1:]
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - out_of_fold) ** 2).sum()) / total if total > 0 else float("nan")
    beta = _least_squares(X, y)
    return LinearResponse(
        coefficients=pd.Series(beta[1:], index=[str(c) for c in W.columns], name="coefficient"),
        intercept=float(beta[0]),
        r2=r2,
        quality=_held_out_quality(y, out_of_fold, folds, []),
    )
