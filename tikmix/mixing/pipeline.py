"""The mixture stages of the workflow, one function per rule (scripts only parse arguments).

Mixture documents are the canonical JSON of :mod:`tikmix.core.mixture`; each records what it
cost to determine (``compute: {tokens, flops}``) so the report can compare methods.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tikmix.core.atomic import atomic_output, write_json_atomic
from tikmix.core.compute import ComputeRecord
from tikmix.core.conventions import normalised_benefit, normalised_matrix, row_scales
from tikmix.core.mixture import (
    mixture_document,
    read_mixture,
    read_mixture_document,
    write_mixture,
)
from tikmix.mixing.candidates import latin_hypercube_mixtures, support_box
from tikmix.mixing.pareto import project_onto_pareto
from tikmix.mixing.priors import build_prior, domain_tokens, uniform_prior
from tikmix.mixing.search import confirm_tikmix_m, in_support, propose_tikmix_m
from tikmix.mixing.tikmix_d import availability_caps, solve_tikmix_d
from tikmix.mixing.weights import read_influence_matrix

log = logging.getLogger(__name__)

BENEFIT_PREFIX = "benefit:"


def _tokens(domain_meta: Mapping[str, str | Path]) -> pd.Series:
    return pd.Series(domain_tokens(domain_meta), dtype=float)


def _predicted(B: pd.DataFrame, w: pd.Series, eps: float, normaliser: str) -> dict[str, Any]:
    """Predicted per-task benefit B·w and its normalised form P̂ (eq. 6) for a mixture."""
    w = w.reindex(B.columns)
    raw = B.to_numpy() @ w.to_numpy()
    normalised = normalised_benefit(B, w, eps, normaliser)
    return {
        "benefit": dict(zip(B.index, raw.tolist(), strict=True)),
        "normalised_benefit": normalised.to_dict(),
        "total_normalised_benefit": float(normalised.sum()),
    }


def influence_cost(sidecar: str | Path | None) -> ComputeRecord:
    """FLOPs/tokens recorded for the influence matrix a mixture was derived from (if known)."""
    if sidecar is None:
        return ComputeRecord()
    record = json.loads(Path(sidecar).read_text()).get("total_compute")
    return ComputeRecord() if record is None else ComputeRecord.parse(record, str(sidecar))


def write_method(
    path: str | Path,
    weights: pd.Series,
    *,
    method: str,
    influence_csv: str | Path | None = None,
    eps: float = 1e-8,
    normaliser: str = "max",
    solver: Mapping | None = None,
    compute: ComputeRecord | Mapping | None = None,
    upstream_compute: ComputeRecord | Mapping | None = None,
    provenance: Mapping | None = None,
    stage_tokens: int | None = None,
) -> dict:
    """Write a mixture document, with the predicted benefit when an influence matrix is given.

    ``compute`` is what this step itself cost; ``total_compute`` adds ``upstream_compute``
    (e.g. the influence matrix TiKMiX-D was solved on): the FLOPs spent to determine the mixture.
    """
    own = ComputeRecord.total(*([compute] if compute is not None else []))
    upstream = ComputeRecord.total(*([upstream_compute] if upstream_compute is not None else []))
    document = mixture_document(
        weights,
        method=method,
        stage_tokens=stage_tokens,
        provenance=dict(provenance or {}),
        solver=dict(solver or {}),
        compute=own.to_dict(),
        total_compute=(own + upstream).to_dict(),
    )
    if influence_csv is not None:
        document["predicted"] = _predicted(
            read_influence_matrix(influence_csv), weights, eps, normaliser
        )
    write_mixture(path, document)
    return document


def baseline_mixture(
    *,
    method: str,
    domain_meta: Mapping[str, str | Path],
    out: str | Path,
    influence_csv: str | Path | None = None,
    eps: float = 1e-8,
    normaliser: str = "max",
) -> dict:
    """The natural (∝ available training tokens) or uniform mixture."""
    if method == "natural":
        weights = build_prior("natural", list(domain_meta), domain_tokens(domain_meta))
    elif method == "uniform":
        weights = uniform_prior(list(domain_meta))
    else:
        raise ValueError(f"unknown baseline mixture {method!r}; expected natural or uniform")
    return write_method(
        out,
        weights,
        method=method,
        influence_csv=influence_csv,
        eps=eps,
        normaliser=normaliser,
    )


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
    normaliser: str,
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
    result = solve_tikmix_d(
        B, w_prior, alpha=alpha, beta=beta, gamma=gamma, eps=eps, normaliser=normaliser, caps=caps
    )
    return write_method(
        out,
        result.weights,
        method="tikmix_d",
        influence_csv=influence_csv,
        eps=eps,
        normaliser=normaliser,
        solver=result.solver_report(),
        compute=ComputeRecord(),
        upstream_compute=influence_cost(influence_sidecar),
        provenance={"influence": str(influence_csv), "prior": str(prior)},
        stage_tokens=stage_tokens,
    )


def _pareto_set(
    influence_csv: str | Path, prior: str | Path, eps: float, normaliser: str
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """``B``, its normalised rows ``B̂`` and the Pareto floor ``B̂ w_prior`` (TiKMiX's constraint)."""
    B = read_influence_matrix(influence_csv)
    B_hat = normalised_matrix(B.to_numpy(), eps, normaliser)
    return B, B_hat, B_hat @ read_mixture(prior, domains=list(B.columns)).to_numpy()


def availability_caps_of(tikmix_d: str | Path) -> pd.Series | None:
    """TiKMiX-D's per-domain availability caps (``mixing.tikmix_d.max_epochs``), or None:
    TiKMiX-M's box keeps under them too."""
    document = read_mixture_document(tikmix_d)
    slack = document.get("solver", {}).get("constraint_slack", {}).get("caps")
    if slack is None:
        return None
    return pd.Series(document["weights"]) + pd.Series(slack)


def tikmix_m_candidates(
    *,
    tikmix_d: str | Path,
    influence_csv: str | Path,
    prior: str | Path,
    n: int,
    low: float,
    high: float,
    seed: int,
    eps: float,
    normaliser: str,
    out: str | Path,
) -> pd.DataFrame:
    """TiKMiX-M's training mixtures (rule mixture_candidates): Latin-hypercube samples in the
    box ``[low, high]·w_D`` around the search's start, kept only inside the Pareto set, so the
    surrogate is trained exactly where the search looks."""
    B, B_hat, floor = _pareto_set(influence_csv, prior, eps, normaliser)
    w_d = read_mixture(tikmix_d, domains=list(B.columns))
    lower, upper = (
        b.to_numpy() for b in support_box(w_d, low, high, availability_caps_of(tikmix_d))
    )

    # w_D sits on several Pareto constraints at once, so only a small share of the box is
    # feasible (about 1% on the demo): rejection draws large rounds, and many of them. Where a
    # pilot round shows that is too little, the box's samples are projected onto the feasible
    # part instead (as the search projects its candidates), so a study never fails here.
    def accept(W: np.ndarray) -> np.ndarray:
        return in_support(W, B_hat, floor, lower, upper)

    batch, rounds = max(n, 4096), 1000
    box = latin_hypercube_mixtures(w_d, batch, low=low, high=high, seed=seed).weights
    if accept(box.to_numpy()).mean() * batch * rounds >= 2 * n:
        sample = latin_hypercube_mixtures(
            w_d,
            n,
            low=low,
            high=high,
            seed=seed,
            batch_size=batch,
            max_rounds=rounds,
            accept=accept,
        )
        table = sample.weights.copy()
    else:
        log.warning("too little of TiKMiX-M's box is Pareto-feasible: candidates are projected")
        table = pd.DataFrame(
            project_onto_pareto(box.to_numpy()[:n], B_hat, floor, lower=lower, upper=upper),
            columns=box.columns,
        )
    table.index = pd.RangeIndex(len(table), name="mixture")
    with atomic_output(out) as tmp:
        table.to_csv(tmp, float_format="%.12g")
    return table


def read_measurements(parts: Sequence[str | Path]) -> pd.DataFrame:
    """Concatenate measurement parts (rows: mixtures; weight, benefit:<task>, tokens, flops)."""
    frames = [pd.read_csv(p, index_col="mixture") for p in parts]
    table = pd.concat(frames).sort_index()
    if table.empty:
        raise ValueError(f"no measured mixtures in {list(map(str, parts))}")
    return table


def response_totals(
    table: pd.DataFrame, B: pd.DataFrame, eps: float, normaliser: str
) -> tuple[pd.Series, str]:
    """Each measured mixture's total response and the response's kind.

    Benefit responses (``curvature``, ``direct``) are normalised like eq. 6 and summed over tasks
    (``Σ P̂``); ``lookahead`` ones are already relative loss decreases, comparable across tasks.
    """
    tasks = [c[len(BENEFIT_PREFIX) :] for c in table.columns if c.startswith(BENEFIT_PREFIX)]
    missing = sorted(set(B.index) - set(tasks))
    if missing:
        raise ValueError(f"measurements lack task(s) {missing} of the influence matrix")
    responses = set(table.get("response", pd.Series(["direct"])))
    if len(responses) != 1:
        raise ValueError(f"measurements mix responses {sorted(responses)}")
    response = responses.pop()
    scale = (
        pd.Series(row_scales(B.to_numpy(), eps, normaliser), index=B.index)
        if response != "lookahead"
        else pd.Series(1.0, index=B.index)
    )
    return sum(table[BENEFIT_PREFIX + t] / scale[t] for t in B.index), response


def curvature_departure(table: pd.DataFrame, B: pd.DataFrame) -> dict[str, dict[str, float]]:
    """How far curvature responses depart from the linear prediction ``B·w``, per task.

    ``pearson_r`` over the measured mixtures and ``relative_rms``: the root-mean-square of
    (curvature − linear) over the spread (standard deviation) of the linear prediction. Both are
    free of sampling noise, so they are the honest additivity measure of the curvature response.
    """
    linear = table[list(B.columns)].to_numpy() @ B.to_numpy().T
    departure = {}
    for i, task in enumerate(B.index):
        curvature = table[BENEFIT_PREFIX + task].to_numpy()
        spread = float(linear[:, i].std())
        departure[str(task)] = {
            "pearson_r": float(np.corrcoef(linear[:, i], curvature)[0, 1]),
            "relative_rms": float(np.sqrt(np.mean((curvature - linear[:, i]) ** 2)) / spread)
            if spread > 0
            else None,
        }
    return departure


def tikmix_m_search(
    *,
    measurements: Sequence[str | Path],
    influence_csv: str | Path,
    tikmix_d: str | Path,
    prior: str | Path,
    eps: float,
    normaliser: str,
    low: float,
    high: float,
    min_spearman: float,
    replicates: int,
    seed: int,
    search: Mapping[str, Any],
    out_mixtures: str | Path,
    out_proposal: str | Path,
) -> dict:
    """TiKMiX-M's surrogate, search and gate (rule tikmix_m_search).

    Writes the proposal (with the gate's verdict) and the confirmation design: ``replicates``
    rows of w_D, then as many of w_M, for the response to compare them.
    """
    B, B_hat, floor = _pareto_set(influence_csv, prior, eps, normaliser)
    table = read_measurements(measurements)
    y, response = response_totals(table, B, eps, normaliser)
    w_d = read_mixture(tikmix_d, domains=list(B.columns))
    proposal = propose_tikmix_m(
        table[list(B.columns)],
        y,
        w_d,
        B_hat=B_hat,
        pareto_floor=floor,
        low=low,
        high=high,
        min_spearman=min_spearman,
        caps=availability_caps_of(tikmix_d),
        seed=seed,
        **search,
    )
    document = {
        **proposal.to_dict(),
        "response": response,
        "n_measured_mixtures": len(table),
        "replicates": replicates,
        "pareto_slack_min": float((B_hat @ proposal.weights.to_numpy() - floor).min()),
    }
    if response == "curvature":
        document["curvature_vs_linear"] = curvature_departure(table, B)
    confirm = pd.DataFrame(
        [proposal.start.to_numpy()] * replicates + [proposal.weights.to_numpy()] * replicates,
        columns=B.columns,
    )
    confirm.index.name = "mixture"
    with atomic_output(out_mixtures) as tmp:
        confirm.to_csv(tmp, float_format="%.17g")
    write_json_atomic(out_proposal, document)
    return document


def tikmix_m_mixture(
    *,
    proposal: str | Path,
    confirmations: Sequence[str | Path],
    measurements: Sequence[str | Path],
    influence_csv: str | Path,
    tikmix_d: str | Path,
    eps: float,
    normaliser: str,
    out: str | Path,
) -> dict:
    """TiKMiX-M's mixture (rule mixture_tikmix_m): the proposal if the gate passed and the
    response confirmed it against w_D, else w_D, with the reason in the document.

    Its compute is every measured response's (the curvature response's rows carry the per-domain
    Λ passes)."""
    B = read_influence_matrix(influence_csv)
    search = json.loads(Path(proposal).read_text())
    confirmed = read_measurements(confirmations)
    totals, _ = response_totals(confirmed, B, eps, normaliser)
    replicates = search["replicates"]
    weights, decision = confirm_tikmix_m(
        search, totals.iloc[:replicates].to_numpy(), totals.iloc[replicates:].to_numpy()
    )
    measured = pd.concat([read_measurements(measurements), confirmed])
    solver = {
        "name": "TiKMiX-M (LightGBM surrogate + Dirichlet search, Algorithm 1, gate)",
        **{k: v for k, v in search.items() if k not in ("start", "proposal")},
        "proposal": search["proposal"],
        "decision": decision,
    }
    return write_method(
        out,
        weights.reindex(B.columns),
        method="tikmix_m",
        influence_csv=influence_csv,
        eps=eps,
        normaliser=normaliser,
        solver=solver,
        compute=ComputeRecord(int(measured["tokens"].sum()), float(measured["flops"].sum())),
        upstream_compute=read_mixture_document(tikmix_d)["total_compute"],
        provenance={"influence": str(influence_csv), "start": str(tikmix_d)},
    )


def export_mixture(
    document: str | Path, out: str | Path, fmt: str, prefixes: Mapping[str, list[str]] | None
) -> None:
    """Write a mixture in another format (yaml, csv, megatron) from its canonical JSON."""
    doc = read_mixture_document(document)
    kwargs = {"prefixes": prefixes} if fmt == "megatron" else {}
    write_mixture(out, doc, fmt=fmt, **kwargs)
