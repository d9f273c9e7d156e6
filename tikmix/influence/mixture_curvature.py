"""TiKMiX-M's curvature response: a mixture's benefit under the curvature of that mixture.

With a fixed curvature the group influence of a mixture is linear in its weights (``B·w``), so
a surrogate fitted to it learns nothing a linear model would not. The loss trained next is the
mixture's, and so is its curvature. With the EK-FAC eigenbasis ``Q_A, Q_S`` held fixed, the
corrected eigenvalues are expectations over data (``Λ = E_seq[(Q_Sᵀ G_n Q_A)²]``), so the
eigenvalues of mixture ``w`` are *exactly* ``Λ(w) = Σ_d w_d Λ_d`` with ``Λ_d`` fitted on domain
``d``'s sequences. The response of task ``v`` is then the predicted loss decrease of a Newton
step on mixture ``w``'s objective::

    y_v(w) = ∇f_vᵀ Q diag(Λ(w) + λ)⁻¹ Qᵀ ḡ(w),    ḡ(w) = Σ_d w_d ḡ_d

per tracked module and summed over modules, with the damping ``λ`` fixed at the value the
influence matrix used. It is non-linear in ``w`` (domains interact through the curvature),
free of sampling noise, cheap per candidate (every term is precomputed in the eigenbasis), and
reduces to ``B·w`` when every ``Λ_d`` equals the fitted ``Λ`` (then ``Λ(w) = Λ`` on the
simplex). The orientation is the benefit's: larger is better.

Work is streamed one tracked module at a time (:func:`curvature_responses` takes an iterable of
:class:`ModuleTerms`), so memory is bounded by the largest module, not by the model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tikmix.influence.store import open_store

log = logging.getLogger(__name__)

#: Candidate rows × module elements handled at once (float64): bounds the working memory.
MAX_ELEMENTS = 2**24


@dataclass
class ModuleTerms:
    """One tracked module's pieces of the curvature response, in the fixed EK-FAC eigenbasis.

    Attributes:
        name: the module.
        tasks: ``[V, K]`` rotated task gradients ``Q_Sᵀ ∇f_v Q_A``, flattened (float64).
        domains: ``[D, K]`` rotated mean domain gradients ``Q_Sᵀ ḡ_d Q_A``.
        lambdas: ``[D, K]`` per-domain corrected eigenvalues ``Λ_d``.
        damping: the module's ``λ``.
    """

    name: str
    tasks: torch.Tensor
    domains: torch.Tensor
    lambdas: torch.Tensor
    damping: float

    @classmethod
    def rotate(
        cls,
        name: str,
        activation_eigenvectors: torch.Tensor,
        gradient_eigenvectors: torch.Tensor,
        damping: float,
        task_gradients: Sequence[torch.Tensor],
        domain_gradients: Sequence[torch.Tensor],
        domain_lambdas: Sequence[torch.Tensor],
    ) -> ModuleTerms:
        """Rotate per-task and per-domain gradients ``[out, in']`` into the eigenbasis."""
        q_a = activation_eigenvectors.to(torch.float64)
        q_s = gradient_eigenvectors.to(torch.float64)

        def rotated(gradients: Sequence[torch.Tensor]) -> torch.Tensor:
            return torch.stack([(q_s.T @ g.to(torch.float64) @ q_a).reshape(-1) for g in gradients])

        lambdas = torch.stack([v.to(torch.float64).reshape(-1) for v in domain_lambdas])
        terms = cls(name, rotated(task_gradients), rotated(domain_gradients), lambdas, damping)
        if not (terms.tasks.shape[1] == terms.domains.shape[1] == terms.lambdas.shape[1]):
            raise ValueError(
                f"module {name!r}: task gradients, domain gradients and Λ_d have different "
                f"sizes {terms.tasks.shape[1]}, {terms.domains.shape[1]}, {terms.lambdas.shape[1]}"
                " (fitted with different projections?)"
            )
        return terms


def curvature_responses(
    weights: np.ndarray, modules: Iterable[ModuleTerms], max_elements: int = MAX_ELEMENTS
) -> np.ndarray:
    """``y_v(w)`` for every row ``w`` of ``weights`` ``[n, D]``: an ``[n, V]`` float64 array.

    Rows are mixtures over the domains in the order of ``ModuleTerms.domains`` (they should sum
    to 1: ``Λ(w)`` is then a convex combination of the ``Λ_d``).
    """
    W = torch.as_tensor(np.atleast_2d(np.asarray(weights, dtype=np.float64)))
    total = None
    for terms in modules:
        if W.shape[1] != terms.domains.shape[0]:
            raise ValueError(
                f"mixtures have {W.shape[1]} domains, module {terms.name!r} has "
                f"{terms.domains.shape[0]}"
            )
        if total is None:
            total = torch.zeros(W.shape[0], terms.tasks.shape[0], dtype=torch.float64)
        rows = max(1, max_elements // max(terms.domains.shape[1], 1))
        for start in range(0, W.shape[0], rows):
            chunk = W[start : start + rows]
            gradient = chunk @ terms.domains  # ḡ(w) rotated
            curvature = chunk @ terms.lambdas + terms.damping  # Λ(w) + λ
            total[start : start + rows] += (gradient / curvature) @ terms.tasks.T
    if total is None:
        raise ValueError("no tracked modules given")
    return total.numpy()


def stored_module_terms(
    *,
    eigen: str | Path,
    preconditioned: str | Path,
    task_stores: Mapping[str, str | Path],
    domain_stores: Mapping[str, str | Path],
    domain_lambda_stores: Mapping[str, str | Path],
) -> Iterator[ModuleTerms]:
    """:class:`ModuleTerms` read from the workflow's stores, one module at a time.

    The damping is the one the influence matrix used (the preconditioned store's), so the
    response reduces to ``B·w`` exactly when every ``Λ_d`` is the fitted ``Λ``.
    """
    if list(domain_stores) != list(domain_lambda_stores):
        raise ValueError(
            f"domain gradients {list(domain_stores)} and Λ_d stores "
            f"{list(domain_lambda_stores)} name different domains"
        )
    eigen_store = open_store(eigen, kind="eigenbases")
    damping = open_store(preconditioned, kind="preconditioned_tasks").attrs["damping"]
    tasks = {t: open_store(p) for t, p in task_stores.items()}
    domains = {d: open_store(p) for d, p in domain_stores.items()}
    lambdas = {d: open_store(p, kind="lambda_sums") for d, p in domain_lambda_stores.items()}
    for module in eigen_store.attrs["modules"]:
        yield ModuleTerms.rotate(
            module,
            eigen_store.tensor(f"{module}/activation_eigenvectors"),
            eigen_store.tensor(f"{module}/gradient_eigenvectors"),
            float(damping[module]),
            [s.tensor(f"{module}/gradient") / s.attrs["n_tokens"] for s in tasks.values()],
            [s.tensor(f"{module}/gradient") for s in domains.values()],
            [s.tensor(f"{module}/lambda") / s.attrs["n_sequences"] for s in lambdas.values()],
        )
