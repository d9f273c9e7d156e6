"""The mixture stages of the workflow, one function per rule (scripts only parse arguments).

Each writes what its rule outputs: mixture documents (built by :mod:`tikmix.mixing.documents`),
TiKMiX-M's candidate and confirmation designs and its proposal, and the exported formats.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from tikmix.core.atomic import atomic_output, write_json_atomic
from tikmix.core.compute import ComputeRecord
from tikmix.core.conventions import normalised_matrix
from tikmix.core.mixture import read_mixture, read_mixture_document, write_mixture
from tikmix.core.settings import (
    AvailabilitySettings,
    Normalisation,
    TikmixCSettings,
    TikmixDSettings,
    TikmixMBox,
    TikmixMGate,
    TikmixMSearch,
)
from tikmix.mixing.availability import Availability, study_availability
from tikmix.mixing.candidates import latin_hypercube_mixtures, support_box
from tikmix.mixing.documents import prior_document, write_method
from tikmix.mixing.pareto import project_onto_pareto
from tikmix.mixing.priors import build_prior, domain_tokens, uniform_prior
from tikmix.mixing.responses import curvature_departure, read_measurements, response_totals
from tikmix.mixing.search import confirm_tikmix_m, in_support, propose_tikmix_m
from tikmix.mixing.tikmix_c import (
    fit_calibration,
    kl_divergence,
    predict_with_se,
    sample_rollout_mixtures,
    solve_tikmix_c,
    task_weights,
)
from tikmix.mixing.tikmix_d import solve_tikmix_d
from tikmix.mixing.weights import read_influence_matrix

log = logging.getLogger(__name__)


def influence_cost(sidecar: str | Path | None) -> ComputeRecord:
    """FLOPs/tokens recorded for the influence matrix a mixture was derived from (if known)."""
    if sidecar is None:
        return ComputeRecord()
    document = json.loads(Path(sidecar).read_text())
    if "total_compute" not in document:
        return ComputeRecord()
    return ComputeRecord.read(document, str(sidecar), "total_compute")


def prior_mixture(
    *, spec: str, domains: Sequence[str], meta: Sequence[str | Path], out: str | Path
) -> pd.Series:
    """The prior mixture (rule prior_mixture): ``stage1.prior``'s grammar over the domains,
    natural priors counting each domain's training tokens in its ``meta.json``."""
    domain_meta = dict(zip(domains, meta, strict=True))
    prior = build_prior(spec, list(domain_meta), domain_tokens(domain_meta))
    write_mixture(out, prior_document(prior, spec))
    log.info("prior %s: %s", spec, prior.round(4).to_dict())
    return prior


def availability_caps(
    *,
    domains: Sequence[str],
    meta: Sequence[str | Path],
    availability: AvailabilitySettings,
    out: str | Path,
    checkpoint: str | Path | None = None,
    prior: str | Path | None = None,
    stage1_tokens: int | None = None,
) -> Availability:
    """A checkpoint's availability caps (rule availability): unique tokens from each domain's
    ``meta.json``, stage-1 exposure from the built-in ``checkpoint``'s record or ``prior`` ×
    ``stage1_tokens`` (user checkpoints), else unknown. Caps that cannot hold a mixture fail here,
    in one line, before any method runs."""
    domain_meta = dict(zip(domains, meta, strict=True))
    if availability.stage_tokens is None:
        raise ValueError("availability: mixing.stage_tokens and stage2.tokens are both unset")
    result = study_availability(
        unique_tokens=domain_tokens(domain_meta),
        stage_tokens=availability.stage_tokens,
        max_epochs=availability.max_epochs,
        checkpoint=checkpoint,
        prior=None if prior is None else read_mixture(prior, domains=list(domain_meta)),
        stage1_tokens=stage1_tokens,
    )
    result.check_feasible()
    result.write(out)
    log.info(
        "availability: T=%d, max_epochs=%s, stage-1 exposure %s, caps %s",
        result.stage_tokens,
        result.max_epochs,
        result.exposure_source,
        None if result.caps is None else result.caps.round(4).to_dict(),
    )
    return result


def baseline_mixture(
    *,
    method: str,
    domains: Sequence[str],
    meta: Sequence[str | Path],
    availability: str | Path,
    out: str | Path,
    influence_csv: str | Path | None = None,
    normalisation: Normalisation = Normalisation(),
) -> dict:
    """The natural (∝ available training tokens, from each domain's ``meta.json``) or uniform
    mixture: baselines, not capped, but their documents record their planned epochs."""
    domain_meta = dict(zip(domains, meta, strict=True))
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
        normalisation=normalisation,
        availability=Availability.read(availability),
    )


def continue_mixture(
    *,
    source: str | Path,
    note: str,
    domains: Sequence[str],
    availability: str | Path,
    out: str | Path,
    influence_csv: str | Path | None = None,
    normalisation: Normalisation = Normalisation(),
) -> dict:
    """The ``continue`` mixture (rule mixture_continue): stage 1's own mixture, carried on
    unchanged into the next stage, the do-nothing baseline a recommendation must beat.

    ``source`` is the mixture file stage 1 trained on (the prior of ``stage1.prior``, the
    top-level ``prior`` of your own checkpoints, or the natural mixture when neither is known);
    ``note`` says which, for the report. Like every baseline it is not capped; its document
    records the planned epochs under ``availability``.
    """
    weights = read_mixture(source, list(domains))
    return write_method(
        out,
        weights,
        method="continue",
        influence_csv=influence_csv,
        normalisation=normalisation,
        availability=Availability.read(availability),
        provenance={"source": str(source), "note": note},
    )


def tikmix_d_mixture(
    *,
    influence_csv: str | Path,
    influence_sidecar: str | Path,
    prior: str | Path,
    availability: str | Path,
    tikmix_d: TikmixDSettings,
    normalisation: Normalisation,
    out: str | Path,
) -> dict:
    """TiKMiX-D (eq. 7) on the checkpoint's influence matrix, within the availability caps; a
    failed solve raises."""
    B = read_influence_matrix(influence_csv)
    w_prior = read_mixture(prior, domains=list(B.columns))
    stage = Availability.read(availability)
    result = solve_tikmix_d(B, w_prior, tikmix_d, normalisation=normalisation, caps=stage.caps)
    return write_method(
        out,
        result.weights,
        method="tikmix_d",
        influence_csv=influence_csv,
        normalisation=normalisation,
        solver=result.solver_report(),
        compute=ComputeRecord(),
        upstream_compute=influence_cost(influence_sidecar),
        provenance={"influence": str(influence_csv), "prior": str(prior)},
        availability=stage,
    )


def _pareto_set(
    influence_csv: str | Path, prior: str | Path, normalisation: Normalisation
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """``B``, its normalised rows ``B̂`` and the Pareto floor ``B̂ w_prior`` (TiKMiX's constraint)."""
    B = read_influence_matrix(influence_csv)
    B_hat = normalised_matrix(B.to_numpy(), normalisation)
    return B, B_hat, B_hat @ read_mixture(prior, domains=list(B.columns)).to_numpy()


def tikmix_m_candidates(
    *,
    tikmix_d: str | Path,
    influence_csv: str | Path,
    prior: str | Path,
    availability: str | Path,
    n: int,
    box: TikmixMBox,
    seed: int,
    normalisation: Normalisation,
    out: str | Path,
) -> pd.DataFrame:
    """TiKMiX-M's training mixtures (rule mixture_candidates): Latin-hypercube samples in the
    box ``[low, high]·w_D`` around the search's start, widened to contain the prior p (under the
    availability caps), kept only inside the Pareto set, so the surrogate is trained exactly
    where the search looks, staying at p included."""
    low, high = box.low, box.high
    B, B_hat, floor = _pareto_set(influence_csv, prior, normalisation)
    w_d = read_mixture(tikmix_d, domains=list(B.columns))
    p = read_mixture(prior, domains=list(B.columns))
    caps = Availability.read(availability).caps
    lower, upper = (b.to_numpy() for b in support_box(w_d, low, high, caps, prior=p))

    # w_D sits on several Pareto constraints at once, so only a small share of the box is
    # feasible (about 1% on the demo): rejection draws large rounds, and many of them. Where a
    # pilot round shows that is too little, the box's samples are projected onto the feasible
    # part instead (as the search projects its candidates), so a study never fails here.
    def accept(W: np.ndarray) -> np.ndarray:
        return in_support(W, B_hat, floor, lower, upper)

    batch, rounds = max(n, 4096), 1000
    box = latin_hypercube_mixtures(w_d, batch, low=low, high=high, seed=seed, include=p).weights
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
            include=p,
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


def tikmix_m_search(
    *,
    measurements: Sequence[str | Path],
    influence_csv: str | Path,
    tikmix_d: str | Path,
    prior: str | Path,
    availability: str | Path,
    normalisation: Normalisation,
    box: TikmixMBox,
    gate: TikmixMGate,
    seed: int,
    search: TikmixMSearch,
    out_mixtures: str | Path,
    out_proposal: str | Path,
) -> dict:
    """TiKMiX-M's surrogate, search and gate (rule tikmix_m_search).

    Writes the proposal (with the gate's verdict) and the confirmation design: ``replicates``
    rows of w_D, then as many of w_M, for the response to compare them: ``gate.replicates``
    for a noisy response, one for the deterministic curvature response.
    """
    B, B_hat, floor = _pareto_set(influence_csv, prior, normalisation)
    table = read_measurements(measurements)
    y, response = response_totals(table, B, normalisation)
    replicates = 1 if response == "curvature" else gate.replicates
    w_d = read_mixture(tikmix_d, domains=list(B.columns))
    proposal = propose_tikmix_m(
        table[list(B.columns)],
        y,
        w_d,
        prior=read_mixture(prior, domains=list(B.columns)),
        B_hat=B_hat,
        pareto_floor=floor,
        box=box,
        min_spearman=gate.min_spearman,
        linear_r2=gate.linear_r2,
        caps=Availability.read(availability).caps,
        seed=seed,
        search=search,
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
    availability: str | Path,
    normalisation: Normalisation,
    out: str | Path,
) -> dict:
    """TiKMiX-M's mixture (rule mixture_tikmix_m): the proposal if the gate passed and the
    response confirmed it against w_D, else w_D, with the reason in the document.

    Its compute is every measured response's (the curvature response's rows carry the per-domain
    Λ passes)."""
    B = read_influence_matrix(influence_csv)
    search = json.loads(Path(proposal).read_text())
    confirmed = read_measurements(confirmations)
    totals, _ = response_totals(confirmed, B, normalisation)
    replicates = search["replicates"]
    weights, decision = confirm_tikmix_m(
        search, totals.iloc[:replicates].to_numpy(), totals.iloc[replicates:].to_numpy()
    )
    # The search stays in the box under the caps, and w_D is TiKMiX-D's capped solution.
    stage = Availability.read(availability)
    stage.check_within(weights, "TiKMiX-M")
    measured = pd.concat([read_measurements(measurements), confirmed])
    solver = {
        **{k: v for k, v in search.items() if k not in ("start", "proposal")},
        "proposal": search["proposal"],
        "decision": decision,
    }
    return write_method(
        out,
        weights.reindex(B.columns),
        method="tikmix_m",
        influence_csv=influence_csv,
        normalisation=normalisation,
        solver=solver,
        compute=ComputeRecord(int(measured["tokens"].sum()), float(measured["flops"].sum())),
        upstream_compute=ComputeRecord.read(
            read_mixture_document(tikmix_d), str(tikmix_d), "total_compute"
        ),
        provenance={"influence": str(influence_csv), "start": str(tikmix_d)},
        availability=stage,
    )


def export_mixtures(
    *,
    methods: Sequence[str],
    formats: Sequence[str],
    documents: Sequence[str | Path],
    outs: Sequence[str | Path],
    prefixes: Mapping[str, list[str]] | None,
) -> None:
    """Write each method's mixture (its canonical JSON in ``documents``) in other formats
    (rule export_mixtures): ``outs`` has one path per method and format (yaml, csv,
    megatron.txt), formats varying fastest."""
    jobs = [(d, fmt) for _, d in zip(methods, documents, strict=True) for fmt in formats]
    for out, (document, fmt) in zip(outs, jobs, strict=True):
        fmt = fmt.removesuffix(".txt")
        kwargs = {"prefixes": prefixes} if fmt == "megatron" else {}
        write_mixture(out, read_mixture_document(document), fmt=fmt, **kwargs)


def tikmix_c_rollout_mixtures(
    *,
    continue_mixture: str | Path,
    availability: str | Path,
    tikmix_c: TikmixCSettings,
    out_paths: Sequence[str | Path],
) -> pd.DataFrame:
    """tikmix_c's rollout mixtures (rule tikmix_c_rollout_mixtures): ``n_levels × per_level``
    mixtures around the ``continue`` mixture p at graded KL(w‖p), within the caps, one mixture
    document each (its provenance names the KL level and draw)."""
    p = read_mixture(continue_mixture)
    stage = Availability.read(availability)
    mixtures = sample_rollout_mixtures(
        p, tikmix_c.kl_levels(), tikmix_c.per_level, tikmix_c.seed, caps=stage.caps
    )
    if len(mixtures) != len(out_paths):
        raise ValueError(f"{len(mixtures)} rollout mixtures but {len(out_paths)} output paths")
    for (name, weights), path in zip(mixtures.iterrows(), out_paths, strict=True):
        write_method(
            path,
            weights,
            method="tikmix_c rollout",
            availability=stage,
            provenance={
                "draw": str(name),
                "kl_to_continue": kl_divergence(weights, p),
                "continue": str(continue_mixture),
            },
        )
    return mixtures


def _task_losses(path: str | Path) -> tuple[int, dict[str, float], ComputeRecord]:
    """A rollout run's seed, its loss per task (steering half) and its compute."""
    record = json.loads(Path(path).read_text())
    losses = {task: float(metrics["loss"]) for task, metrics in record["tasks"].items()}
    return int(record["seed"]), losses, ComputeRecord.read(record, str(path))


def tikmix_c_mixture(
    *,
    influence_csv: str | Path,
    influence_sidecar: str | Path,
    continue_mixture: str | Path,
    availability: str | Path,
    rollout_mixtures: Sequence[str | Path],
    rollout_runs: Sequence[str | Path],
    continue_run: str | Path,
    tikmix_c: TikmixCSettings,
    normalisation: Normalisation,
    out: str | Path,
) -> dict:
    """tikmix_c (rule mixture_tikmix_c; docs/tikmix_c.md): fit ``a_v``, ``c_v`` to the
    rollouts' measured benefit (``continue``'s loss minus the rollout's, same seed, steering
    half), weight tasks by their leave-one-rollout-out R², and solve within the caps.

    The document's ``solver`` holds the solve, the calibration per task (``a``, ``c``, their SEs,
    LOO r and R², weight) and the prediction for the chosen mixture: the weighted objective and
    the plain mean over tasks (the average loss Table 1 reports), each ± SE, in nats of benefit
    against ``continue`` at the rollouts' tokens (larger is better). The rollouts' training is
    its own compute; the influence matrix's is upstream.
    """
    B = read_influence_matrix(influence_csv)
    domains = list(B.columns)
    p = read_mixture(continue_mixture, domains=domains)
    stage = Availability.read(availability)
    reference_seed, reference, reference_cost = _task_losses(continue_run)
    names, mixtures, measured, cost = [], [], [], reference_cost
    for mixture_path, run_path in zip(rollout_mixtures, rollout_runs, strict=True):
        seed, losses, run_cost = _task_losses(run_path)
        if seed != reference_seed:
            raise ValueError(
                f"{run_path}: seed {seed}, but continue's reference run has seed {reference_seed}"
            )
        missing = sorted(set(B.index) - set(losses))
        if missing:
            raise ValueError(f"{run_path}: no loss for task(s) {missing}")
        names.append(Path(mixture_path).stem)
        mixtures.append(read_mixture(mixture_path, domains=domains))
        measured.append({task: reference[task] - losses[task] for task in B.index})
        cost = cost + run_cost
    mixtures = pd.DataFrame(mixtures, index=names)
    measured = pd.DataFrame(measured, index=names)
    calibration = fit_calibration(B, p, mixtures, measured)
    weights = task_weights(calibration, tikmix_c.min_loo_r2)
    max_kl = (
        None if tikmix_c.max_kl_multiple is None else tikmix_c.max_kl_multiple * tikmix_c.kl_max
    )
    result = solve_tikmix_c(B, p, calibration.a, calibration.c, weights, stage.caps, max_kl=max_kl)
    objective = predict_with_se(calibration, result.weights, weights)
    average = predict_with_se(calibration, result.weights)
    log.info(
        "tikmix_c: %d rollouts; predicted mean benefit %.4f ± %.4f nats, KL(w||p) %.3f",
        len(names),
        average.mean,
        average.mean_se,
        result.kl,
    )
    table = calibration.table().assign(task_weight=weights)
    solver = {
        **result.solver_report(),
        "calibration": {
            task: {key: bool(v) if key == "c_clamped" else float(v) for key, v in row.items()}
            for task, row in table.to_dict(orient="index").items()
        },
        "rollouts": {"n": len(names), "seed": reference_seed, "tokens": reference_cost.tokens},
        "prediction": {
            "objective": objective.mean,
            "objective_se": objective.mean_se,
            "average": average.mean,
            "average_se": average.mean_se,
            "per_task": average.per_task.to_dict(orient="index"),
            "units": "nats of benefit against continue (its loss minus this mixture's), "
            "at the rollouts' tokens; larger is better",
        },
    }
    return write_method(
        out,
        result.weights,
        method="tikmix_c",
        influence_csv=influence_csv,
        normalisation=normalisation,
        solver=solver,
        compute=ComputeRecord(),
        upstream_compute=influence_cost(influence_sidecar) + cost,
        provenance={
            "influence": str(influence_csv),
            "continue": str(continue_mixture),
            "rollouts": [str(path) for path in rollout_runs],
        },
        availability=stage,
    )
