"""The mixture stages of the workflow, one function per rule (scripts only parse arguments).

Mixture documents are the canonical JSON of :mod:`tikmix.mixing.exports`; each records what it
cost to determine (``compute: {tokens, flops}``) so the report can compare methods.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tikmix.mixing.candidates import latin_hypercube_mixtures
from tikmix.mixing.config_prior import prior_from_config
from tikmix.mixing.exports import mixture_document, read_mixture, write_mixture
from tikmix.mixing.pareto import project_onto_pareto, pull_towards
from tikmix.mixing.priors import uniform_prior
from tikmix.mixing.search import solve_tikmix_m
from tikmix.mixing.tikmix_d import availability_caps, solve_tikmix_d
from tikmix.mixing.weights import read_influence_matrix

BENEFIT_PREFIX = "benefit:"


def _tokens(domain_meta: Mapping[str, str | Path]) -> pd.Series:
    return pd.Series(
        {d: json.loads(Path(p).read_text())["n_tokens_train"] for d, p in domain_meta.items()},
        dtype=float,
    )


def _predicted(B: pd.DataFrame, w: pd.Series, eps: float) -> dict[str, Any]:
    """Predicted per-task benefit B·w and its normalised form P̂ (eq. 6) for a mixture."""
    raw = B.to_numpy() @ w.reindex(B.columns).to_numpy()
    scale = np.abs(B.to_numpy()).max(axis=1) + eps
    return {
        "benefit": dict(zip(B.index, raw.tolist(), strict=True)),
        "normalised_benefit": dict(zip(B.index, (raw / scale).tolist(), strict=True)),
        "total_normalised_benefit": float((raw / scale).sum()),
    }


def influence_cost(sidecar: str | Path | None) -> dict[str, float]:
    """FLOPs/tokens recorded for the influence matrix a mixture was derived from (if known)."""
    if sidecar is None:
        return {"tokens": 0, "flops": 0.0}
    record = json.loads(Path(sidecar).read_text()).get("total_compute", {})
    return {"tokens": int(record.get("tokens", 0)), "flops": float(record.get("flops", 0.0))}


def write_method(
    path: str | Path,
    weights: pd.Series,
    *,
    method: str,
    influence_csv: str | Path | None = None,
    eps: float = 1e-8,
    solver: Mapping | None = None,
    compute: Mapping | None = None,
    upstream_compute: Mapping | None = None,
    provenance: Mapping | None = None,
    stage_tokens: int | None = None,
) -> dict:
    """Write a mixture document, with the predicted benefit when an influence matrix is given.

    ``compute`` is what this step itself cost; ``total_compute`` adds ``upstream_compute``
    (e.g. the influence matrix TiKMiX-D was solved on): the FLOPs spent to determine the mixture.
    """
    own = dict(compute or {"tokens": 0, "flops": 0.0})
    upstream = dict(upstream_compute or {"tokens": 0, "flops": 0.0})
    document = mixture_document(
        weights,
        method=method,
        stage_tokens=stage_tokens,
        provenance=dict(provenance or {}),
        solver=dict(solver or {}),
        compute=own,
        total_compute={
            "tokens": int(own["tokens"] + upstream["tokens"]),
            "flops": float(own["flops"] + upstream["flops"]),
        },
    )
    if influence_csv is not None:
        document["predicted"] = _predicted(read_influence_matrix(influence_csv), weights, eps)
    write_mixture(path, document)
    return document


def baseline_mixture(
    method: str,
    domain_meta: Mapping[str, str | Path],
    out: str | Path,
    influence_csv: str | Path | None = None,
) -> dict:
    """The natural (∝ available training tokens) or uniform mixture."""
    if method == "natural":
        weights = prior_from_config("natural", domain_meta)
    elif method == "uniform":
        weights = uniform_prior(list(domain_meta))
    else:
        raise ValueError(f"unknown baseline mixture {method!r}; expected natural or uniform")
    return write_method(out, weights, method=method, influence_csv=influence_csv)


def tikmix_d_mixture(
    *,
    influence_csv: str | Path,
    influence_sidecar: str | Path,
    prior: str | Path,
    domain_meta: Mapping[str, str | Path],
    alpha: float,
    beta: float,
    gamma: float,
    eps: float,
    max_epochs: float | None,
    stage_tokens: int | None,
    out: str | Path,
) -> dict:
    """TiKMiX-D (eq. 7) on the checkpoint's influence matrix; a failed solve raises."""
    B = read_influence_matrix(influence_csv)
    w_prior = read_mixture(prior, domains=list(B.columns))
    caps = None
    if max_epochs is not None:
        if stage_tokens is None:
            raise ValueError("mixing.tikmix_d.max_epochs needs mixing.stage_tokens")
        caps = availability_caps(_tokens(domain_meta), stage_tokens, max_epochs)
    result = solve_tikmix_d(B, w_prior, alpha=alpha, beta=beta, gamma=gamma, eps=eps, caps=caps)
    return write_method(
        out,
        result.weights,
        method="tikmix_d",
        influence_csv=influence_csv,
        eps=eps,
        solver=result.solver_report(),
        compute={"tokens": 0, "flops": 0.0},
        upstream_compute=influence_cost(influence_sidecar),
        provenance={"influence": str(influence_csv), "prior": str(prior)},
        stage_tokens=stage_tokens,
    )


def tikmix_m_candidates(
    *, prior: str | Path, n: int, low: float, high: float, seed: int, out: str | Path
) -> pd.DataFrame:
    """Latin-hypercube candidates in ``[low, high] · w_orig`` (rule mixture_candidates)."""
    w_orig = read_mixture(prior)
    sample = latin_hypercube_mixtures(w_orig, n, low=low, high=high, seed=seed)
    table = sample.weights.copy()
    table.index = pd.RangeIndex(len(table), name="mixture")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, float_format="%.12g")
    return table


def read_measurements(parts: Sequence[str | Path]) -> pd.DataFrame:
    """Concatenate measurement parts (rows: mixtures; weight, benefit:<task>, tokens, flops)."""
    frames = [pd.read_csv(p, index_col="mixture") for p in parts]
    table = pd.concat(frames).sort_index()
    if table.empty:
        raise ValueError(f"no measured mixtures in {list(map(str, parts))}")
    return table


def tikmix_m_mixture(
    *,
    measurements: Sequence[str | Path],
    influence_csv: str | Path,
    tikmix_d: str | Path,
    prior: str | Path,
    eps: float,
    seed: int,
    search: Mapping[str, Any],
    out: str | Path,
) -> dict:
    """TiKMiX-M: LightGBM on directly measured Σ P̂ of the candidates, then Algorithm 1 from w_D.

    The search only accepts mixtures that satisfy TiKMiX-D's Pareto constraint against ``prior``.
    """
    B = read_influence_matrix(influence_csv)
    table = read_measurements(measurements)
    tasks = [c[len(BENEFIT_PREFIX) :] for c in table.columns if c.startswith(BENEFIT_PREFIX)]
    missing = sorted(set(B.index) - set(tasks))
    if missing:
        raise ValueError(f"measurements lack task(s) {missing} of {influence_csv}")
    scale = B.abs().max(axis=1) + eps
    responses = set(table.get("response", pd.Series(["influence"])))
    if len(responses) != 1:
        raise ValueError(f"measurements mix responses {sorted(responses)}")
    # Influence responses are normalised like eq. 6; lookahead ones are already relative
    # loss decreases, comparable across tasks.
    response = responses.pop()
    divisor = scale if response == "influence" else pd.Series(1.0, index=B.index)
    y = sum(table[BENEFIT_PREFIX + t] / divisor[t] for t in B.index)
    W = table[list(B.columns)]
    w_d = read_mixture(tikmix_d, domains=list(B.columns))
    # Keep TiKMiX's Pareto guarantee B·w ≥ B·w_prior: every search candidate is projected onto
    # the feasible set before the surrogate scores it (see tikmix.mixing.pareto for why not
    # rejection), and the result is made exactly feasible against w_D, which is.
    B_hat = B.to_numpy() / scale.to_numpy()[:, None]
    floor = B_hat @ read_mixture(prior, domains=list(B.columns)).to_numpy()
    result = solve_tikmix_m(
        W, y, w_d, seed=seed, project=lambda ws: project_onto_pareto(ws, B_hat, floor), **search
    )
    exact = pull_towards(result.weights.to_numpy(), w_d.to_numpy(), B_hat, floor)[0]
    weights = pd.Series(exact, index=result.weights.index, name=result.weights.name)
    d_doc = json.loads(Path(tikmix_d).read_text())
    compute = {"tokens": int(table["tokens"].sum()), "flops": float(table["flops"].sum())}
    solver = result.solver_report()
    solver["n_measured_mixtures"] = len(table)
    solver["response"] = response
    solver["pareto_slack_min"] = float((B_hat @ exact - floor).min())
    # What the search gained on the surrogate over its start, w_D.
    solver["start_prediction"] = float(result.surrogate.predict(w_d.to_numpy()[None])[0])
    return write_method(
        out,
        weights,
        method="tikmix_m",
        influence_csv=influence_csv,
        eps=eps,
        solver=solver,
        compute=compute,
        upstream_compute=d_doc["total_compute"],
        provenance={"influence": str(influence_csv), "start": str(tikmix_d)},
    )


def export_mixture(
    document: str | Path, out: str | Path, fmt: str, prefixes: Mapping[str, list[str]] | None
) -> None:
    """Write a mixture in another format (yaml, csv, megatron) from its canonical JSON."""
    doc = json.loads(Path(document).read_text())
    kwargs = {"prefixes": prefixes} if fmt == "megatron" else {}
    write_mixture(out, doc, fmt=fmt, **kwargs)
