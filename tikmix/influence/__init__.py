"""Group influence with EK-FAC: gradients, curvature, benefit matrix and Zarr stores.

See ``tikmix.influence.api`` for the conventions (benefit orientation, per-token means) and
``tikmix.influence.ekfac`` for the curvature's normalisation.
"""

from tikmix.core.conventions import BENEFIT_DEFINITION
from tikmix.influence.api import (
    domain_gradient,
    fit_ekfac,
    fit_kfac,
    group_influence,
    influence_matrix,
    iterate_batches,
    precondition,
    task_gradient,
)
from tikmix.influence.ekfac import (
    CovarianceSums,
    Eigenbasis,
    EkfacFactors,
    LambdaSums,
    covariance_sums,
    eigendecompose,
    lambda_sums,
    reduce,
)
from tikmix.influence.gradients import GradientStats, summed_gradients
from tikmix.influence.measure import measure_mixture_benefits
from tikmix.influence.store import (
    IncompatibleStoresError,
    IncompleteStoreError,
    load_covariances,
    load_eigenbases,
    load_factors,
    load_gradients,
    load_lambdas,
    load_mean_gradients,
    open_store,
    reduce_gradient_stores,
    reduce_sum_stores,
    save_covariances,
    save_eigenbases,
    save_factors,
    save_gradients,
    save_lambdas,
    write_store,
)
from tikmix.influence.tracking import DEFAULT_MODULE_PATTERN, select_modules

__all__ = [
    "BENEFIT_DEFINITION",
    "DEFAULT_MODULE_PATTERN",
    "CovarianceSums",
    "EkfacFactors",
    "Eigenbasis",
    "GradientStats",
    "IncompatibleStoresError",
    "IncompleteStoreError",
    "LambdaSums",
    "covariance_sums",
    "domain_gradient",
    "eigendecompose",
    "fit_ekfac",
    "fit_kfac",
    "group_influence",
    "influence_matrix",
    "iterate_batches",
    "lambda_sums",
    "load_covariances",
    "load_eigenbases",
    "load_factors",
    "load_gradients",
    "load_lambdas",
    "load_mean_gradients",
    "measure_mixture_benefits",
    "open_store",
    "precondition",
    "reduce",
    "reduce_gradient_stores",
    "reduce_sum_stores",
    "save_covariances",
    "save_eigenbases",
    "save_factors",
    "save_gradients",
    "save_lambdas",
    "select_modules",
    "summed_gradients",
    "task_gradient",
    "write_store",
]
