"""Iterative inverse-Hessian-vector products: the baseline of the paper's eqs. 4-5.

The paper's cost model prices influence by its IHVP, "typically approximated via LiSSA or
conjugate gradient". tikmix ships a closed-form EK-FAC inverse instead, so to measure the
setting of eqs. 4-5 the benchmark needs an iterative IHVP of its own: LiSSA (Agarwal, Bullins
and Hazan 2017) on exact Hessian-vector products, plus conjugate gradient as an independent
reference that shows LiSSA has converged. Vectors are dicts ``module name -> [out, in]``
gradient matrix, the layout of ``tikmix.influence.summed_gradients``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from tikmix.influence.tracking import tracked_parameters_require_grad
from tikmix.models.loss import summed_loss

Vector = dict[str, torch.Tensor]


def dot(left: Vector, right: Vector) -> float:
    """``⟨left, right⟩`` over all modules, accumulated in float64."""
    return float(sum((left[n].double() * right[n].double()).sum() for n in left))


def norm(vector: Vector) -> float:
    return math.sqrt(dot(vector, vector))


class FixedBatchHessian:
    """``v -> H v`` with ``H`` the Hessian of the mean token loss of one fixed batch.

    Restricted to the weights of the tracked modules and computed exactly by double backward:
    the first-order gradient is built once with ``create_graph`` and every product
    differentiates it against ``v``, so a product costs one backward of the gradient graph and
    no forward pass. Keeping the batch fixed (rather than drawing a new one per LiSSA step, as
    stochastic LiSSA does) makes ``H`` one deterministic linear operator: per-example and group
    IHVPs are then exactly comparable. Attention runs on the math SDPA kernel because the fused
    CPU kernel has no double backward.
    """

    def __init__(self, model: nn.Module, modules: dict[str, nn.Linear], batch: torch.Tensor):
        if any(m.bias is not None for m in modules.values()):
            raise ValueError("FixedBatchHessian covers weights only; a tracked module has a bias")
        self.names = list(modules)
        with tracked_parameters_require_grad(modules) as params, sdpa_kernel(SDPBackend.MATH):
            loss, count = summed_loss(model, batch)
            self._grads = torch.autograd.grad(loss / count, params, create_graph=True)
        self._params = params

    def __call__(self, vector: Vector) -> Vector:
        products = torch.autograd.grad(
            self._grads,
            self._params,
            grad_outputs=[vector[n] for n in self.names],
            retain_graph=True,
        )
        return dict(zip(self.names, products, strict=True))


def _power_iteration(operator: Callable[[Vector], Vector], like: Vector, steps: int) -> float:
    """Largest-magnitude eigenvalue (with its sign) of a symmetric ``operator``."""
    generator = torch.Generator().manual_seed(0)
    x = {n: torch.randn(t.shape, generator=generator, dtype=t.dtype) for n, t in like.items()}
    estimate = 0.0
    for _ in range(steps):
        length = norm(x)
        x = {n: t / length for n, t in x.items()}
        ox = operator(x)
        estimate = dot(x, ox)
        x = ox
    return estimate


def spectrum_ends(hessian: FixedBatchHessian, like: Vector, steps: int = 40) -> tuple[float, float]:
    """``(λ_min, λ_max)`` of ``H`` by two power iterations (the second on ``λ_a I − H``).

    LiSSA needs both: its damping must lift ``λ_min`` above zero (the Hessian of a non-convex
    loss is indefinite) and its scale must exceed ``λ_max + λ``, or the recursion diverges.
    Power iteration approaches the ends from inside, hence the margins the caller adds.
    """
    first = _power_iteration(hessian, like, steps)

    def shifted(x: Vector) -> Vector:
        hx = hessian(x)
        return {n: first * x[n] - hx[n] for n in x}

    shift = _power_iteration(shifted, like, steps)
    other = first - shift
    return min(first, other), max(first, other)


def lissa(
    hessian: FixedBatchHessian, vector: Vector, damping: float, scale: float, depth: int
) -> Vector:
    """``(H + λI)⁻¹ v`` by the LiSSA recursion, ``depth`` Hessian-vector products.

    ``h_0 = v``, ``h_j = v + (1 − λ/s) h_{j−1} − H h_{j−1} / s``, result ``h_J / s``: a
    truncated Neumann series of ``s (H + λI)⁻¹``, whose error in an eigendirection of
    eigenvalue ``μ`` of ``H + λI`` shrinks as ``(1 − μ/s)^(J+1)``.
    """
    keep = 1.0 - damping / scale
    h = vector
    for _ in range(depth):
        hh = hessian(h)
        h = {n: vector[n] + keep * h[n] - hh[n] / scale for n in vector}
    return {n: t / scale for n, t in h.items()}


def conjugate_gradient(
    hessian: FixedBatchHessian, vector: Vector, damping: float, tol: float, max_steps: int
) -> tuple[Vector, int, float]:
    """``(H + λI)⁻¹ v`` by conjugate gradient: the solution, steps taken, true relative residual.

    The reference LiSSA is checked against. Raises if ``H + λI`` shows negative curvature, in
    which case neither method computes an inverse.
    """

    def apply(x: Vector) -> Vector:
        hx = hessian(x)
        return {n: hx[n] + damping * x[n] for n in x}

    x = {n: torch.zeros_like(t) for n, t in vector.items()}
    residual = dict(vector)
    direction = dict(vector)
    rr = dot(residual, residual)
    target = tol * norm(vector)
    steps = 0
    while steps < max_steps and math.sqrt(rr) > target:
        a_direction = apply(direction)
        curvature = dot(direction, a_direction)
        if curvature <= 0:
            raise RuntimeError(f"H + λI has negative curvature {curvature:.3g}: raise the damping")
        alpha = rr / curvature
        x = {n: x[n] + alpha * direction[n] for n in x}
        residual = {n: residual[n] - alpha * a_direction[n] for n in x}
        rr, previous = dot(residual, residual), rr
        direction = {n: residual[n] + (rr / previous) * direction[n] for n in x}
        steps += 1
    ax = apply(x)
    true_residual = norm({n: vector[n] - ax[n] for n in x}) / norm(vector)
    return x, steps, true_residual
