"""The influence stages of the workflow, one function per rule (scripts only parse arguments).

Every sum is computed per shard and reduced by a cheap job (map-reduce), so that a cluster runs
domains × shards in parallel. A shard is a slice of ONE sample drawn for the whole budget, which is
why 1 shard and 4 shards give the same result. Every store records what it processed
(``compute: {tokens, flops}``), what it cost (``resources: {peak_rss_mb, peak_gpu_mb, seconds}``)
and where it came from (checkpoint hash, token range, seed, ``projection``, ``precision``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tikmix.core.atomic import dumps_json
from tikmix.core.conventions import BENEFIT_DEFINITION
from tikmix.data.sampler import MixturePlan, load_streams, plan_mixture
from tikmix.influence.api import benefit_matrix, influence_matrix, precondition, task_gradient
from tikmix.influence.ekfac import (
    EkfacFactors,
    covariance_sums,
    eigendecompose,
    lambda_sums,
    reduce,
)
from tikmix.influence.gradients import GradientStats, summed_gradients
from tikmix.influence.measure import measure_mixture_table
from tikmix.influence.projection import projection_attrs, resolve_projections
from tikmix.influence.store import (
    check_projection,
    iter_module_factors,
    load_covariances,
    load_eigenbases,
    load_lambdas,
    open_store,
    reduce_gradient_stores,
    save_covariances,
    save_eigenbases,
    save_factors,
    save_gradients,
    save_lambdas,
    write_store,
)
from tikmix.influence.tracking import select_modules
from tikmix.models.checkpoint import checkpoint_hash, load_checkpoint
from tikmix.models.device import resolve_device
from tikmix.models.flops import eigh_flops, training_flops_per_token
from tikmix.models.lookahead import lookahead_responses
from tikmix.progress import with_progress
from tikmix.resources import ResourceMonitor
from tikmix.seeds import derive_seed

log = logging.getLogger(__name__)

# Config name of the Fisher's labels -> the library's name.
FISHER_LABELS = {"sampled": "true", "empirical": "empirical"}


def load_model(checkpoint: str | Path, device: str = "auto"):
    """The checkpoint's model on the configured device, and its provenance hash."""
    model, _ = load_checkpoint(checkpoint, device=resolve_device(device))
    return model, checkpoint_hash(checkpoint)


def _monitor(device: str) -> ResourceMonitor:
    return ResourceMonitor(resolve_device(device))


def shard_rows(n_rows: int, shards: int, shard: int) -> np.ndarray:
    """Rows of shard ``shard`` of ``shards`` contiguous, near-equal slices of ``n_rows``."""
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is not in 0..{shards - 1}")
    return np.array_split(np.arange(n_rows), shards)[shard]


def _batches(
    plan: MixturePlan, streams, rows: np.ndarray, batch_size: int
) -> Iterator[torch.Tensor]:
    for start in range(0, len(rows), batch_size):
        yield torch.from_numpy(plan.gather(streams, rows[start : start + batch_size]))


def _compute(tokens: int, flops: float) -> dict[str, float]:
    return {"tokens": int(tokens), "flops": float(flops)}


def _total(*records: Mapping[str, float]) -> dict[str, float]:
    """Sum of compute records: a stage's own cost plus everything upstream of it."""
    return _compute(sum(r["tokens"] for r in records), sum(r["flops"] for r in records))


def _store_total(path: str | Path) -> dict[str, float]:
    """Total compute behind a store: its ``total_compute``, or its own plus its parts'."""
    attrs = open_store(path).attrs
    if "total_compute" in attrs:
        return attrs["total_compute"]
    parts = [part["compute"] for part in attrs.get("parts", []) if "compute" in part]
    return _total(*([attrs["compute"]] if "compute" in attrs else []), *parts)


@dataclass
class _ShardPass:
    """One map job: a checkpoint's tracked modules and the batches of its shard of a sample."""

    model: torch.nn.Module
    modules: dict[str, torch.nn.Linear]
    projections: Any
    batches: Iterator[torch.Tensor]
    provenance: dict[str, Any]
    monitor: ResourceMonitor

    @classmethod
    def open(
        cls,
        *,
        checkpoint: str | Path,
        device: str,
        tracked_modules: str,
        projection: dict | None,
        precision: str,
        streams: Mapping[str, np.ndarray],
        plan: MixturePlan,
        shards: int,
        shard: int,
        batch_size: int,
        what: str,
    ) -> _ShardPass:
        monitor = _monitor(device)
        model, ckpt_hash = load_model(checkpoint, device)
        modules = select_modules(model, tracked_modules)
        rows = shard_rows(len(plan), shards, shard)
        n_tokens = len(rows) * plan.seq_len
        batches = with_progress(_batches(plan, streams, rows, batch_size), n_tokens, what, log)
        provenance = {
            "checkpoint": ckpt_hash,
            "projection": projection_attrs(projection),
            "precision": precision,
            "sequence_range": [int(rows[0]), int(rows[-1]) + 1] if len(rows) else [0, 0],
            "shard": shard,
            "shards": shards,
            "compute": _compute(n_tokens, n_tokens * training_flops_per_token(model, plan.seq_len)),
        }
        projections = resolve_projections(modules, projection)
        return cls(model, modules, projections, batches, provenance, monitor)

    def finish(self, **extra: Any) -> dict[str, Any]:
        """The store's provenance, with this job's peak memory and wall time."""
        return {**self.provenance, **extra, "resources": self.monitor.usage()}


def domain_gradient_part(
    *,
    checkpoint: str | Path,
    domain: str,
    domain_dir: str | Path,
    tokens: int,
    shards: int,
    shard: int,
    seq_len: int,
    batch_size: int,
    tracked_modules: str,
    seed: int,
    device: str,
    out: str | Path,
    projection: dict | None = None,
    precision: str = "fp32",
) -> Path:
    """Summed gradient of shard ``shard`` of the domain's token budget (rule domain_gradients)."""
    streams = load_streams({domain: domain_dir})
    sample_seed = derive_seed(seed, "domain_gradients", domain)
    plan = plan_mixture({domain: len(streams[domain])}, {domain: 1.0}, tokens, seq_len, sample_seed)
    job = _ShardPass.open(
        checkpoint=checkpoint,
        device=device,
        tracked_modules=tracked_modules,
        projection=projection,
        precision=precision,
        streams=streams,
        plan=plan,
        shards=shards,
        shard=shard,
        batch_size=batch_size,
        what=f"{domain} gradient",
    )
    stats = summed_gradients(
        job.model, job.modules, job.batches, precision=precision, projections=job.projections
    )
    provenance = job.finish(domain=domain, seed=sample_seed)
    return save_gradients(out, stats, provenance)


def reduce_domain_gradients(parts: list[str | Path], out: str | Path) -> Path:
    """Per-token mean gradient of a domain from its part-stores (rule reduce_domain_gradients)."""
    return reduce_gradient_stores(parts, out)


def task_gradient_store(
    *,
    checkpoint: str | Path,
    task: str,
    task_file: str | Path,
    batch_size: int,
    tracked_modules: str,
    device: str,
    out: str | Path,
    projection: dict | None = None,
    precision: str = "fp32",
) -> Path:
    """Summed gradient of a task's loss over its scored tokens (rule task_gradients)."""
    monitor = _monitor(device)
    model, ckpt_hash = load_model(checkpoint, device)
    modules = select_modules(model, tracked_modules)
    with np.load(task_file) as data:
        ids, loss_mask = data["input_ids"], data["loss_mask"]
    stats = task_gradient(
        model,
        ids,
        loss_mask,
        modules,
        batch_size=batch_size,
        precision=precision,
        projection=projection,
    )
    seq_len = ids.shape[1] - 1
    provenance = {
        "checkpoint": ckpt_hash,
        "task": task,
        "projection": projection_attrs(projection),
        "precision": precision,
        "compute": _compute(
            ids.size, ids.shape[0] * seq_len * training_flops_per_token(model, seq_len)
        ),
        "resources": monitor.usage(),
    }
    return save_gradients(out, stats, provenance)


def _ekfac_pass(
    what: str,
    *,
    domain_dirs: Mapping[str, str | Path],
    weights: Mapping[str, float],
    tokens: int,
    seq_len: int,
    seed: int,
    sample_role: tuple[str, ...] = ("ekfac",),
    **shard_args: Any,
) -> _ShardPass:
    """Shard ``shard`` of the EK-FAC sample, ready to iterate.

    The sample is ``tokens`` drawn from ``weights`` over ``domain_dirs`` with a seed derived from
    ``seed`` and ``sample_role``, so the covariance pass and the Λ pass see the same sequences
    (and TiKMiX-M's per-domain Λ passes their own). ``shard_args`` are
    :meth:`_ShardPass.open`'s: checkpoint, device, tracked_modules, projection, precision,
    shards, shard, batch_size.
    """
    streams = load_streams(domain_dirs)
    plan = plan_mixture(
        {d: len(s) for d, s in streams.items()},
        dict(weights),
        tokens,
        seq_len,
        derive_seed(seed, *sample_role),
    )
    return _ShardPass.open(streams=streams, plan=plan, what=what, **shard_args)


def covariance_part(
    *,
    fisher: str,
    seed: int,
    out: str | Path,
    projection: dict | None = None,
    precision: str = "fp32",
    **sample: Any,
) -> Path:
    """Sums of a aᵀ and g gᵀ over shard ``shard`` of the EK-FAC sample (rule ekfac_covariances).

    ``fisher`` is ``sampled`` or ``empirical``; ``sample`` are :func:`_ekfac_pass`'s arguments.
    """
    job = _ekfac_pass(
        "EK-FAC covariances", seed=seed, projection=projection, precision=precision, **sample
    )
    sums = covariance_sums(
        job.model,
        job.modules,
        job.batches,
        fisher=FISHER_LABELS[fisher],
        seed=derive_seed(seed, "fisher"),
        precision=precision,
        projections=job.projections,
    )
    provenance = job.finish(fisher=fisher)
    return save_covariances(out, sums, provenance)


def eigen_store(parts: list[str | Path], out: str | Path) -> Path:
    """Reduce covariance parts and eigendecompose A and S in float64 (rule ekfac_eigen)."""
    monitor = ResourceMonitor()
    stores = [open_store(p) for p in parts]
    covariances = reduce([load_covariances(p) for p in parts])
    bases = eigendecompose(covariances)
    flops = sum(
        eigh_flops(b.activation_eigenvalues.numel()) + eigh_flops(b.gradient_eigenvalues.numel())
        for b in bases.values()
    )
    first = stores[0].attrs
    provenance = {
        "checkpoint": first["checkpoint"],
        "fisher": first["fisher"],
        "projection": first.get("projection"),
        "n_tokens": covariances.n_tokens,
        "n_sequences": covariances.n_sequences,
        "compute": _compute(0, flops),
        "resources": monitor.usage(),
        "total_compute": _total(_compute(0, flops), *(_store_total(p) for p in parts)),
    }
    return save_eigenbases(out, bases, provenance)


def lambda_part(
    *,
    eigen: str | Path,
    fisher: str,
    seed: int,
    out: str | Path,
    projection: dict | None = None,
    precision: str = "fp32",
    **sample: Any,
) -> Path:
    """Sums of (Q_Sᵀ G_n Q_A)² over shard ``shard`` of the EK-FAC sample (rule ekfac_lambda).

    Takes the same arguments as :func:`covariance_part`, plus the eigenbasis store.
    """
    eigen_attrs = open_store(eigen).attrs
    if eigen_attrs.get("projection") != projection_attrs(projection):
        raise ValueError(
            f"eigenbasis store {eigen} was fitted with projection "
            f"{eigen_attrs.get('projection')!r}, this job asks for {projection_attrs(projection)!r}"
        )
    job = _ekfac_pass(
        "EK-FAC eigenvalue correction",
        seed=seed,
        projection=projection,
        precision=precision,
        **sample,
    )
    sums = lambda_sums(
        job.model,
        job.modules,
        load_eigenbases(eigen),
        job.batches,
        fisher=FISHER_LABELS[fisher],
        seed=derive_seed(seed, "fisher"),
        precision=precision,
        projections=job.projections,
    )
    provenance = job.finish(fisher=fisher)
    return save_lambdas(out, sums, provenance)


def factors_store(eigen: str | Path, parts: list[str | Path], out: str | Path) -> Path:
    """EK-FAC factors: eigenbases and Λ averaged over sequences (rule ekfac_factors).

    The damping stored here is the default 0.1·mean(Λ); the preconditioning rule applies the
    configured damping, so changing it does not refit the factors.
    """
    lambdas = (
        load_lambdas(parts[0]) if len(parts) == 1 else reduce([load_lambdas(p) for p in parts])
    )
    factors = EkfacFactors.from_lambda(load_eigenbases(eigen), lambdas, "auto")
    attrs = open_store(eigen).attrs
    provenance = {
        "checkpoint": attrs["checkpoint"],
        "fisher": attrs["fisher"],
        "projection": attrs.get("projection"),
        "compute": _compute(0, 0),
        "total_compute": _total(_store_total(eigen), *(_store_total(p) for p in parts)),
    }
    return save_factors(out, factors, provenance)


def damped(factors: EkfacFactors, damping: float | None, damping_factor: float) -> EkfacFactors:
    """The factors with the configured damping: fixed, or ``damping_factor · mean(Λ)`` per module."""
    factors.damping = {
        name: float(damping) if damping is not None else damping_factor * float(values.mean())
        for name, values in factors.eigenvalues.items()
    }
    return factors


def preconditioned_task_store(
    *,
    factors: str | Path,
    task_stores: Mapping[str, str | Path],
    damping: float | None,
    damping_factor: float,
    out: str | Path,
) -> Path:
    """(G + λI)⁻¹ ∇f_v for every task, one IHVP each (rule precondition_task_gradients).

    Streams one tracked module at a time (its factors and every task's gradient of it), so the
    peak memory is set by the largest module, not by the model.
    """
    factor_store = open_store(factors, kind="factors")
    projection = factor_store.attrs.get("projection")
    check_projection(projection, task_stores, "task gradient")
    tasks = {task: open_store(path, kind="gradient_sums") for task, path in task_stores.items()}
    modules = factor_store.attrs["modules"]
    shapes = factor_store.attrs["arrays"]
    flops = sum(
        4 * int(np.prod(shapes[f"{m}/eigenvalues"])) * sum(shapes[f"{m}/eigenvalues"])
        for m in modules
    ) * len(tasks)
    attrs = {
        "kind": "preconditioned_tasks",
        "tasks": list(tasks),
        "modules": modules,
        "damping": {},  # filled per module while streaming (written after the arrays)
        "task_tokens": {t: store.attrs["n_tokens"] for t, store in tasks.items()},
        "checkpoint": factor_store.attrs["checkpoint"],
        "projection": projection,
        "compute": _compute(0, flops),
        "total_compute": _total(
            _compute(0, flops),
            _store_total(factors),
            *(_store_total(p) for p in task_stores.values()),
        ),
    }

    def arrays() -> Iterator[tuple[str, np.ndarray]]:
        for module, module_factors in iter_module_factors(factors):
            ekfac = damped(module_factors, damping, damping_factor)
            attrs["damping"][module] = ekfac.damping[module]
            task_grads = {
                task: GradientStats(
                    sums={module: store.tensor(f"{module}/gradient")},
                    n_tokens=store.attrs["n_tokens"],
                    n_sequences=store.attrs["n_sequences"],
                )
                for task, store in tasks.items()
            }
            for task, grads in precondition(ekfac, task_grads).items():
                yield f"{task}/{module}", grads[module].detach().cpu().numpy()

    return write_store(out, arrays(), attrs)


def load_preconditioned(path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    store = open_store(path, kind="preconditioned_tasks")
    return {
        task: {m: store.tensor(f"{task}/{m}") for m in store.attrs["modules"]}
        for task in store.attrs["tasks"]
    }


def influence_outputs(
    *,
    preconditioned: str | Path,
    domain_stores: Mapping[str, str | Path],
    matrix_csv: str | Path,
    sidecar_json: str | Path,
    per_module_parquet: str | Path,
) -> pd.DataFrame:
    """The tasks × domains benefit matrix, its sign convention and per-module terms."""
    start = time.perf_counter()
    pre_store = open_store(preconditioned, kind="preconditioned_tasks")
    check_projection(pre_store.attrs.get("projection"), domain_stores, "domain gradient")
    domains = {d: open_store(p, kind="gradient_mean") for d, p in domain_stores.items()}
    tasks, modules = pre_store.attrs["tasks"], pre_store.attrs["modules"]
    terms = []  # one module at a time: memory bounded by the largest module
    for module in modules:
        pre = {t: {module: pre_store.tensor(f"{t}/{module}")} for t in tasks}
        means = {d: {module: store.tensor(f"{module}/gradient")} for d, store in domains.items()}
        terms.append(influence_matrix(pre, means)[1])
    # Rows in the order of the whole-model computation (domain, task, module): the same sums.
    per_module = pd.concat(terms, ignore_index=True)
    order = {name: i for i, name in enumerate(modules)}
    per_module = per_module.iloc[
        np.lexsort(
            (
                per_module["module"].map(order),
                per_module["task"].map({t: i for i, t in enumerate(tasks)}),
                per_module["domain"].map({d: i for i, d in enumerate(domains)}),
            )
        )
    ].reset_index(drop=True)
    matrix, per_module = benefit_matrix(per_module, list(tasks), list(domains))
    attrs = pre_store.attrs
    n_params = sum(int(np.prod(pre_store.attrs["arrays"][f"{tasks[0]}/{m}"])) for m in modules)
    sidecar = {
        "orientation": "benefit",
        "sign_convention": BENEFIT_DEFINITION,
        "rows": "tasks",
        "columns": "domains",
        "checkpoint": attrs["checkpoint"],
        "damping": attrs["damping"],
        "seconds": time.perf_counter() - start,
        "compute": _compute(0, 2 * n_params * len(pre) * len(domains)),
    }
    sidecar["total_compute"] = _total(
        sidecar["compute"],
        _store_total(preconditioned),
        *(_store_total(p) for p in domain_stores.values()),
    )
    for path in (matrix_csv, sidecar_json, per_module_parquet):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    matrix.to_csv(matrix_csv, float_format="%.10g")
    per_module.to_parquet(per_module_parquet, index=False)
    Path(sidecar_json).write_text(dumps_json(sidecar, indent=2) + "\n")
    return matrix


def measure_mixtures_part(
    *,
    checkpoint: str | Path,
    preconditioned: str | Path,
    mixtures_csv: str | Path,
    domain_dirs: Mapping[str, str | Path],
    design: str,
    tokens: int,
    shards: int,
    shard: int,
    seq_len: int,
    batch_size: int,
    tracked_modules: str,
    seed: int,
    device: str,
    out: str | Path,
    projection: dict | None = None,
    precision: str = "fp32",
    response: str = "direct",
    lookahead: Mapping[str, Any] | None = None,
    task_files: Mapping[str, str | Path] | None = None,
) -> pd.DataFrame:
    """Direct benefit of each mixture of a shard of ``mixtures_csv`` (rule measure_mixtures).

    Each mixture gets a freshly sampled dataset (seed role ``measure``, disjoint from the domain
    gradients' samples), one gradient pass, and dot products with the preconditioned task
    gradients: a vector of per-task benefits, written as ``benefit:<task>`` columns.

    With ``response="lookahead"`` (TiKMiX-M's non-linear option) the columns hold instead each
    task's relative loss decrease after ``lookahead["steps"]`` optimizer steps on the mixture
    (:func:`tikmix.models.lookahead.lookahead_responses`); the ``response`` column says which.
    """
    if response == "lookahead":
        table = pd.read_csv(mixtures_csv, index_col="mixture")
        rows = table.iloc[shard_rows(len(table), shards, shard)]
        decreases, n_tokens, flops = lookahead_responses(
            checkpoint,
            {d: domain_dirs[d] for d in table.columns},
            rows,
            task_files,
            seq_len=seq_len,
            seed=seed,
            device=str(resolve_device(device)),
            **lookahead,
        )
        result = pd.concat([rows, decreases.add_prefix("benefit:")], axis=1)
        result["tokens"], result["flops"] = n_tokens / len(rows), flops / len(rows)
        result["response"] = response
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        result.to_csv(out, float_format="%.12g")
        return result
    if response != "direct":
        raise ValueError(f"unknown response {response!r}; expected direct or lookahead")
    stored = open_store(preconditioned).attrs.get("projection")
    if stored != projection_attrs(projection):
        raise ValueError(
            f"preconditioned task gradients {preconditioned} were computed with projection "
            f"{stored!r}, this job asks for {projection_attrs(projection)!r}"
        )
    model, _ = load_model(checkpoint, device)
    modules = select_modules(model, tracked_modules)
    pre = load_preconditioned(preconditioned)
    table = pd.read_csv(mixtures_csv, index_col="mixture")
    streams = load_streams({d: domain_dirs[d] for d in table.columns})
    rows = table.iloc[shard_rows(len(table), shards, shard)]
    benefits, _ = measure_mixture_table(
        model,
        modules,
        streams,
        rows,
        pre,
        tokens=tokens,
        seq_len=seq_len,
        batch_size=batch_size,
        seed=seed,
        design=design,
        precision=precision,
        projections=resolve_projections(modules, projection),
    )
    n_tokens = (tokens // seq_len) * seq_len
    result = pd.concat([rows, benefits.add_prefix("benefit:")], axis=1)
    result["tokens"] = n_tokens
    result["flops"] = n_tokens * training_flops_per_token(model, seq_len)
    result["response"] = response
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    result.to_csv(out, float_format="%.12g")
    return result
