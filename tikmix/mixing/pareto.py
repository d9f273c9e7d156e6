"""Euclidean projection onto TiKMiX's feasible mixtures: the simplex cut by ``B̂ w ≥ floor``.

TiKMiX-M searches with a surrogate that knows nothing about the Pareto constraint. Rejecting
infeasible candidates starves the search (w_D usually sits on several task constraints at once,
so almost every Dirichlet draw around it violates one), and pulling the result back along the
segment to w_D stops at w_D itself. Projecting every candidate instead keeps the search moving
along the constraint boundary.
"""

from __future__ import annotations

import numpy as np

FEASIBILITY_TOLERANCE = 1e-9


def project_onto_simplex(points: np.ndarray) -> np.ndarray:
    """Row-wise Euclidean projection onto ``{w ≥ 0, Σ w = 1}`` (sort-based, exact)."""
    points = np.atleast_2d(np.asarray(points, dtype=float))
    n, d = points.shape
    ordered = -np.sort(-points, axis=1)
    cumulative = np.cumsum(ordered, axis=1) - 1.0
    ranks = np.arange(1, d + 1)
    active = ordered - cumulative / ranks > 0
    count = d - np.argmax(active[:, ::-1], axis=1)  # the last active index, 1-based
    threshold = cumulative[np.arange(n), count - 1] / count
    return np.maximum(points - threshold[:, None], 0.0)


def project_onto_pareto(
    points: np.ndarray,
    B_hat: np.ndarray,
    floor: np.ndarray,
    *,
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
    max_iter: int = 2000,
    tol: float = 1e-12,
) -> np.ndarray:
    """Row-wise projection of ``points`` onto ``{w in simplex : B_hat @ w >= floor}``, intersected
    with the box ``lower <= w <= upper`` when one is given (TiKMiX-M's sampled support).

    Dykstra's alternating projections over the simplex, the box and one half-space per task,
    vectorised over rows; they converge to the exact Euclidean projection of the intersection
    (not merely a feasible point). The set must be non-empty (w_D lies in it). Rows are returned
    after ``max_iter`` sweeps or once no row moves by more than ``tol``; callers that need exact
    feasibility should still check it (see :func:`pull_towards`).
    """
    B_hat = np.atleast_2d(np.asarray(B_hat, dtype=float))
    floor = np.asarray(floor, dtype=float)
    x = np.atleast_2d(np.asarray(points, dtype=float)).copy()
    norms = (B_hat**2).sum(axis=1)
    usable = norms > 0  # an all-zero task row constrains nothing (floor is then 0)
    B_hat, floor, norms = B_hat[usable], floor[usable], norms[usable]
    boxed = lower is not None or upper is not None
    lower = np.full(x.shape[1], -np.inf) if lower is None else np.asarray(lower, dtype=float)
    upper = np.full(x.shape[1], np.inf) if upper is None else np.asarray(upper, dtype=float)
    increments = np.zeros((len(B_hat) + 2, *x.shape))
    for _ in range(max_iter):
        previous = x
        shifted = x + increments[0]
        x = project_onto_simplex(shifted)
        increments[0] = shifted - x
        if boxed:
            shifted = x + increments[-1]
            x = np.clip(shifted, lower, upper)
            increments[-1] = shifted - x
        for task, (row, bound, norm) in enumerate(zip(B_hat, floor, norms, strict=True), 1):
            shifted = x + increments[task]
            deficit = np.maximum(bound - shifted @ row, 0.0)
            x = shifted + (deficit / norm)[:, None] * row
            increments[task] = shifted - x
        if np.abs(x - previous).max() <= tol:
            break
    return x


def pull_towards(
    points: np.ndarray, anchor: np.ndarray, B_hat: np.ndarray, floor: np.ndarray
) -> np.ndarray:
    """Feasibility to :data:`FEASIBILITY_TOLERANCE` for every row: rows that violate a constraint
    by more than that move along the segment to ``anchor``.

    ``anchor`` must be feasible. An offending row ``x`` becomes ``anchor + t (x − anchor)`` with
    the largest ``t ∈ [0, 1]`` that meets every constraint it violated. Rows are first clipped to
    ``w ≥ 0`` and renormalised, so after :func:`project_onto_pareto` this only removes round-off.
    (Violations within the tolerance are left alone: an anchor on the boundary, as w_D usually
    is, would otherwise pull a boundary point all the way back to the anchor.)
    """
    points = np.atleast_2d(np.clip(np.asarray(points, dtype=float), 0.0, None))
    points = points / points.sum(axis=1, keepdims=True)
    anchor = np.asarray(anchor, dtype=float)
    slack = B_hat @ anchor - floor
    if (slack < -FEASIBILITY_TOLERANCE).any():
        raise ValueError("the anchor mixture violates the Pareto constraint")
    violating = points @ B_hat.T - floor < -FEASIBILITY_TOLERANCE
    slope = (points - anchor) @ B_hat.T
    with np.errstate(divide="ignore", invalid="ignore"):
        limits = np.where(violating & (slope < 0), np.maximum(slack, 0.0) / -slope, np.inf)
    t = np.minimum(1.0, limits.min(axis=1, initial=np.inf))
    return anchor + t[:, None] * (points - anchor)
