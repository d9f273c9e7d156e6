"""TiKMiX-D solve time at the paper's size (26 domains × 9 tasks), against baselines.

Target: well under 1 s per solve. Baselines, timed in the same process on the same problems
(and, like the solver, with BLAS limited to one thread):

* SLSQP with finite-difference gradients (what ``minimize(..., method="SLSQP")`` does
  without ``jac``), from the same start and with the same constraints;
* ``trust-constr`` with analytic gradients and a BFGS Hessian.

Run: ``python benchmarks/bench_tikmix_d.py [--problems 10]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
from scipy.optimize import BFGS, Bounds, LinearConstraint, minimize
from threadpoolctl import threadpool_limits

from tikmix.mixing.tikmix_d import _Problem, solve_tikmix_d

DOMAINS, TASKS = 26, 9


def make_problem(seed: int) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    # Benefits of a typical sign pattern: most domains help most tasks a little.
    B = rng.normal(0.2, 1.0, size=(TASKS, DOMAINS)) * rng.uniform(0.1, 10, size=(TASKS, 1))
    B = pd.DataFrame(
        B, index=[f"task{i}" for i in range(TASKS)], columns=[f"d{j}" for j in range(DOMAINS)]
    )
    return B, pd.Series(rng.dirichlet(np.full(DOMAINS, 2.0)), index=B.columns)


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def slsqp_finite_differences(problem: _Problem):
    return minimize(
        problem.objective,
        problem.uniform_start(),
        method="SLSQP",
        bounds=problem.bounds,
        constraints=[{k: v for k, v in c.items() if k != "jac"} for c in problem.constraints],
        options={"maxiter": 1000, "ftol": 1e-12},
    )


def trust_constr(problem: _Problem):
    A, target = problem.A, problem.A @ problem.prior
    m = A.shape[1]
    return minimize(
        problem.objective,
        problem.uniform_start(),
        jac=problem.gradient,
        hess=BFGS(),
        method="trust-constr",
        bounds=Bounds(0, 1),
        constraints=[LinearConstraint(np.ones((1, m)), 1, 1), LinearConstraint(A, target, np.inf)],
        options={"maxiter": 2000, "gtol": 1e-10, "xtol": 1e-12},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=10, help="random problems to time")
    args = parser.parse_args()
    solve_tikmix_d(*make_problem(0))  # warm-up: imports and first-call costs
    times = {"ours": [], "slsqp_fd": [], "trust_constr": []}
    gaps = {"slsqp_fd": [], "trust_constr": []}
    for seed in range(args.problems):
        B, prior = make_problem(seed)
        t, result = timed(lambda B=B, prior=prior: solve_tikmix_d(B, prior))
        times["ours"].append(t)
        problem = _Problem.build(B, prior, 1.0, 1.0, 1.0, 1e-8, None)
        with threadpool_limits(limits=1, user_api="blas"):
            for name, baseline in (
                ("slsqp_fd", slsqp_finite_differences),
                ("trust_constr", trust_constr),
            ):
                t, raw = timed(lambda baseline=baseline, problem=problem: baseline(problem))
                times[name].append(t)
                gaps[name].append(problem.objective(problem.clean(raw.x)) - result.objective)
    ours = np.median(times["ours"])
    print(f"TiKMiX-D, {DOMAINS} domains x {TASKS} tasks, median of {args.problems} problems")
    print(f"  ours (SLSQP, analytic gradients): {ours * 1e3:8.1f} ms  (target < 1000 ms)")
    for name, label in (
        ("slsqp_fd", "SLSQP, finite differences"),
        ("trust_constr", "trust-constr"),
    ):
        median = np.median(times[name])
        print(
            f"  {label:31s}: {median * 1e3:8.1f} ms  ratio baseline/ours {median / ours:6.1f}x"
            f"  objective gap (baseline - ours) max {max(gaps[name]):+.2e}"
        )


if __name__ == "__main__":
    main()
