"""The project's conventions: the sign of the benefit matrix and the eq. 6 normalisation.

``docs/architecture.md`` ("Conventions") states them in words; this module is where the code
reads them.

**Sign.** The paper's group influence ``I(v, d) = -∇f_vᵀ (G + λI)⁻¹ ḡ_d`` is negative when
training on domain ``d`` lowers task ``v``'s loss. The workflow stores its negation, the
*benefit* ``B[v, d] = ∇f_vᵀ (G + λI)⁻¹ ḡ_d``: larger is better, everywhere (matrices, mixture
documents, responses, figures).

**Eq. 6.** A mixture's predicted benefit on task ``i`` is ``P̂_i(w) = (B w)_i / s_i``, with the
row normaliser ``s_i`` of :func:`row_scales`, set by a
:class:`~tikmix.core.settings.Normalisation`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tikmix.core.settings import NORMALISERS, Normalisation


class MixtureInputError(ValueError):
    """A mixture, prior, influence matrix or run table that cannot be used as given."""


#: The sign convention in one line, written into every mixture document and on every figure.
SIGN_CONVENTION = "benefit = -influence; larger is better"
#: The benefit's definition, written beside every benefit matrix.
BENEFIT_DEFINITION = (
    "benefit B[v,d] = grad f_v^T (G + lambda I)^-1 mean_grad_d; larger is better (= -I)"
)


def row_scales(B: np.ndarray, normalisation: Normalisation = Normalisation()) -> np.ndarray:
    """The eq. 6 normaliser of every row of a benefit matrix (tasks × domains).

    ``normaliser="max"`` (of ``normalisation``) is the paper's ``s_i = max_j B_ij``, the benefit of the task's best
    domain, so ``P̂_i`` is the fraction of that best benefit a mixture attains. A row whose
    largest entry is not positive (every domain hurts the task) would flip the sign of ``P̂_i``
    under that form, so such a row falls back to ``max_j |B_ij|``. ``normaliser="abs_max"`` uses
    ``max_j |B_ij|`` for every row. ``eps`` is *relative*: ``s_i · (1 + eps)``, so ``P̂`` and
    every mixture derived from it are invariant to a global rescaling of ``B``. An all-zero row
    gets scale 1 (its ``P̂`` is 0 for every mixture).
    """
    eps, normaliser = normalisation.eps, normalisation.normaliser
    if normaliser not in NORMALISERS:
        raise MixtureInputError(f"normaliser must be one of {NORMALISERS}, got {normaliser!r}")
    if not eps >= 0:
        raise MixtureInputError(f"eps must be >= 0, got {eps}")
    B = np.atleast_2d(np.asarray(B, dtype=float))
    magnitude = np.abs(B).max(axis=1)
    scale = magnitude if normaliser == "abs_max" else B.max(axis=1)
    scale = np.where(scale > 0, scale, magnitude)
    return np.where(scale > 0, scale * (1.0 + eps), 1.0)


def normalised_matrix(B: np.ndarray, normalisation: Normalisation = Normalisation()) -> np.ndarray:
    """``B̂ = B / s`` row by row (:func:`row_scales`): ``P̂(w) = B̂ w``."""
    B = np.atleast_2d(np.asarray(B, dtype=float))
    return B / row_scales(B, normalisation)[:, None]


def normalised_benefit(
    B: pd.DataFrame, w: np.ndarray | pd.Series, normalisation: Normalisation = Normalisation()
) -> pd.Series:
    """``P̂(w)`` per task: eq. 6, ``B̂ w`` with ``B̂`` of :func:`normalised_matrix`."""
    w = np.asarray(w, dtype=float)
    return pd.Series(normalised_matrix(B.to_numpy(dtype=float), normalisation) @ w, index=B.index)


#: The mixture methods the workflow knows, in the order tables show them: each has a rule that
#: writes results/mixtures/{ckpt}/{method}.json.
MIXTURE_METHODS = (
    "continue",
    "natural",
    "uniform",
    "tikmix_d",
    "tikmix_m",
    "tikmix_c",
    "regmix",
    "doremi",
)
