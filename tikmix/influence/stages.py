"""The influence stages on disk: one function per workflow rule, named after it.

The numerics are in :mod:`tikmix.influence.gradients` and :mod:`tikmix.influence.ekfac`; the
in-memory API (:func:`tikmix.influence.api.fit_ekfac`, ``group_influence``) runs the same
stage functions back to back. A function here opens the checkpoint and the data, runs one stage
on its shard, and writes a store (:mod:`tikmix.influence.store`) with what it processed and
cost (``compute``, ``resources``) and where it came from (checkpoint hash, token range, seed,
``projection``, ``precision``).

Every sum is computed per shard and reduced by a cheap job (map-reduce), so that a cluster runs
domains × shards in parallel. A shard is a slice of ONE sample drawn for the whole budget, which
is why 1 shard and 4 shards give the same result.

=============================== ==================================================
rule                            function
=============================== ==================================================
domain_gradients                :func:`domain_gradients`
reduce_domain_gradients         :func:`reduce_domain_gradients`
task_gradients                  :func:`task_gradients`
ekfac_covariances               :func:`ekfac_covariances`
ekfac_eigen                     :func:`ekfac_eigen`
ekfac_lambda                    :func:`ekfac_lambda`
ekfac_domain_lambda             :func:`ekfac_domain_lambda`
ekfac_factors                   :func:`ekfac_factors`
precondition_task_gradients     :func:`precondition_task_gradients`
influence_matrix                :func:`influence_matrix`
measure_mixtures                :func:`measure_mixtures`
curvature_responses             :func:`curvature_responses`
=============================== ==================================================
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

from tikmix.core.atomic import atomic_output, write_json_atomic
from tikmix.core.compute import ComputeRecord
from tikmix.core.conventions import BENEFIT_DEFINITION
from tikmix.core.gradient_pass import GradientPassSettings
from tikmix.core.mixture import read_mixture
from tikmix.data.sampler import MixturePlan, load_streams, plan_mixture
from tikmix.influence import api, mixture_curvature
from tikmix.influence.ekfac import (
    Eigenbasis,
    EkfacFactors,
    covariance_sums,
    eigendecompose,
    lambda_sums,
)
from tikmix.influence.gradients import GradientStats, summed_gradients
from tikmix.influence.measure import measure_mixture_table
from tikmix.influence.projection import projection_attrs, resolve_projections
from tikmix.influence.store import (
    check_projection,
    iter_module_covariances,
    iter_module_factors,
    iter_module_lambdas,
    load_eigenbases,
    open_preconditioned,
    open_store,
    reduce_gradient_stores,
    save_covariances,
    save_eigenbases,
    save_factors,
    save_gradients,
    save_lambdas,
    total_compute,
    write_store,
)
from tikmix.influence.tracking import select_modules, slice_batches, working_dtype
from tikmix.mixing.responses import BENEFIT_PREFIX
from tikmix.models.checkpoint import checkpoint_hash, load_checkpoint
from tikmix.models.device import resolve_device
from tikmix.models.flops import eigh_flops, training_flops_per_token
from tikmix.models.lookahead import lookahead_responses
from tikmix.progress import Progress, with_progress
from tikmix.resources import ResourceMonitor
from tikmix.seeds import derive_seed

log = logging.getLogger(__name__)

# Config name of the Fisher's labels -> the library's name.
FISHER_LABELS = {"sampled": "true", "empirical": "empirical"}


def load_model(checkpoint: str | Path, device: str = "auto"):
    """The checkpoint's model on the configured device, and its provenance hash."""
    model, _ = load_checkpoint(checkpoint, device=resolve_device(device))
    return model, checkpoint_hash(checkpoint)


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
        gradient_pass: GradientPassSettings,
        streams: Mapping[str, np.ndarray],
        plan: MixturePlan,
        shards: int,
        shard: int,
        what: str,
    ) -> _ShardPass:
        settings = gradient_pass
        monitor = ResourceMonitor(resolve_device(settings.device))
        model, ckpt_hash = load_model(checkpoint, settings.device)
        modules = select_modules(model, settings.tracked_modules)
        rows = shard_rows(len(plan), shards, shard)
        n_tokens = len(rows) * plan.seq_len
        batches = with_progress(
            slice_batches(_batches(plan, streams, rows, settings.batch_size), modules),
            n_tokens,
            what,
            log,
        )
        flops = n_tokens * training_flops_per_token(model, plan.seq_len)
        provenance = {
            "checkpoint": ckpt_hash,
            "projection": projection_attrs(settings.projection),
            "precision": settings.precision,
            "sequence_range": [int(rows[0]), int(rows[-1]) + 1] if len(rows) else [0, 0],
            "shard": shard,
            "shards": shards,
            "compute": ComputeRecord(n_tokens, flops).to_dict(),
        }
        projections = resolve_projections(modules, settings.projection)
        return cls(model, modules, projections, batches, provenance, monitor)

    def fisher_options(self, fisher: str, settings: GradientPassSettings) -> dict[str, Any]:
        """The EK-FAC passes' options: the Fisher's labels (``sampled`` or ``empirical``) and
        their seed, the precision and this job's projections."""
        return {
            "fisher": FISHER_LABELS[fisher],
            "seed": derive_seed(settings.seed, "fisher"),
            "precision": settings.precision,
            "projections": self.projections,
        }

    def finish(self, **extra: Any) -> dict[str, Any]:
        """The store's provenance, with this job's peak memory and wall time."""
        return {**self.provenance, **extra, "resources": self.monitor.usage()}


def domain_gradients(
    *,
    checkpoint: str | Path,
    domain: str,
    domain_dir: str | Path,
    tokens: int,
    shards: int,
    shard: int,
    gradient_pass: GradientPassSettings,
    out: str | Path,
) -> Path:
    """Summed gradient of shard ``shard`` of the domain's token budget."""
    role = ("domain_gradients", domain)
    job = _sample_shard(
        f"{domain} gradient",
        checkpoint=checkpoint,
        domain_dirs={domain: domain_dir},
        weights={domain: 1.0},
        tokens=tokens,
        shards=shards,
        shard=shard,
        gradient_pass=gradient_pass,
        sample_role=role,
    )
    stats = summed_gradients(
        job.model,
        job.modules,
        job.batches,
        precision=gradient_pass.precision,
        projections=job.projections,
    )
    provenance = job.finish(domain=domain, seed=derive_seed(gradient_pass.seed, *role))
    return save_gradients(out, stats, provenance)


def reduce_domain_gradients(parts: list[str | Path], out: str | Path) -> Path:
    """Per-token mean gradient of a domain from its part-stores."""
    return reduce_gradient_stores(parts, out)


def task_gradients(
    *,
    checkpoint: str | Path,
    task: str,
    task_file: str | Path,
    gradient_pass: GradientPassSettings,
    out: str | Path,
) -> Path:
    """Summed gradient of a task's loss over its scored tokens (all of the task's rows)."""
    settings = gradient_pass
    monitor = ResourceMonitor(resolve_device(settings.device))
    model, ckpt_hash = load_model(checkpoint, settings.device)
    modules = select_modules(model, settings.tracked_modules)
    with np.load(task_file) as data:
        ids, loss_mask = data["input_ids"], data["loss_mask"]
    seq_len = ids.shape[1] - 1
    batches = api.iterate_batches(ids, loss_mask, settings.batch_size)
    stats = api.domain_gradient(  # api.task_gradient's pass, with progress lines
        model,
        with_progress(
            slice_batches(batches, modules), len(ids) * seq_len, f"{task} task gradient", log
        ),
        modules,
        precision=settings.precision,
        projection=settings.projection,
    )
    flops = ids.shape[0] * seq_len * training_flops_per_token(model, seq_len)
    provenance = {
        "checkpoint": ckpt_hash,
        "task": task,
        "projection": projection_attrs(settings.projection),
        "precision": settings.precision,
        "compute": ComputeRecord(ids.size, flops).to_dict(),
        "resources": monitor.usage(),
    }
    return save_gradients(out, stats, provenance)


def _sample_shard(
    what: str,
    *,
    checkpoint: str | Path,
    domain_dirs: Mapping[str, str | Path],
    tokens: int,
    shards: int,
    shard: int,
    gradient_pass: GradientPassSettings,
    weights: Mapping[str, float] | None = None,
    prior: str | Path | None = None,
    sample_role: tuple[str, ...] = ("ekfac",),
) -> _ShardPass:
    """Shard ``shard`` of a sample, ready to iterate.

    The sample is ``tokens`` drawn from ``weights`` (or the mixture file ``prior``: the EK-FAC
    fit's) over ``domain_dirs`` with a seed derived from
    the workflow's seed and ``sample_role``: the EK-FAC fit's (``ekfac``), so the covariance pass
    and the Λ pass see the same sequences, TiKMiX-M's per-domain Λ passes' and each domain's
    gradient sample their own.
    """
    if prior is not None:
        weights = read_mixture(prior).to_dict()
    streams = load_streams(domain_dirs)
    plan = plan_mixture(
        {d: len(s) for d, s in streams.items()},
        dict(weights),
        tokens,
        gradient_pass.seq_len,
        derive_seed(gradient_pass.seed, *sample_role),
    )
    return _ShardPass.open(
        checkpoint=checkpoint,
        gradient_pass=gradient_pass,
        streams=streams,
        plan=plan,
        shards=shards,
        shard=shard,
        what=what,
    )


def ekfac_covariances(*, fisher: str, out: str | Path, **sample: Any) -> Path:
    """Sums of a aᵀ and g gᵀ over shard ``shard`` of the EK-FAC sample.

    ``fisher`` is ``sampled`` or ``empirical``; ``sample`` are :func:`_sample_shard`'s
    arguments (checkpoint, domain_dirs, weights or prior, tokens, shards, shard, gradient_pass).
    """
    settings = sample["gradient_pass"]
    job = _sample_shard("EK-FAC covariances", **sample)
    sums = covariance_sums(
        job.model, job.modules, job.batches, **job.fisher_options(fisher, settings)
    )
    return save_covariances(out, sums, job.finish(fisher=fisher))


def ekfac_eigen(parts: list[str | Path], out: str | Path) -> Path:
    """Reduce covariance parts and eigendecompose A and S in float64, one module at a time
    (its parts' sums read, added, decomposed and written before the next module's are read)."""
    monitor = ResourceMonitor()
    stores = [open_store(p) for p in parts]
    first = stores[0].attrs
    n_tokens: dict[str, int] = {}
    flops = 0
    provenance = {
        "checkpoint": first["checkpoint"],
        "fisher": first["fisher"],
        "projection": first.get("projection"),
        "n_tokens": n_tokens,
        "n_sequences": sum(store.attrs["n_sequences"] for store in stores),
    }  # counts, compute and resources are filled while streaming (attributes are written last)
    modules = first["modules"]
    progress = Progress(len(modules), "EK-FAC eigendecomposition", log, unit="modules")

    def bases() -> Iterator[tuple[str, Eigenbasis]]:
        nonlocal flops
        for module, covariances in iter_module_covariances(parts):
            basis = eigendecompose(covariances)[module]
            n_tokens[module] = covariances.n_tokens[module]
            flops += eigh_flops(basis.activation_eigenvalues.numel()) + eigh_flops(
                basis.gradient_eigenvalues.numel()
            )
            del covariances
            yield module, basis
            progress.update(1)
        own = ComputeRecord(0, flops)
        provenance["compute"] = own.to_dict()
        provenance["total_compute"] = ComputeRecord.total(own, *map(total_compute, parts)).to_dict()
        provenance["resources"] = monitor.usage()

    return save_eigenbases(out, bases(), provenance)


def ekfac_lambda(*, eigen: str | Path, fisher: str, out: str | Path, **sample: Any) -> Path:
    """Sums of (Q_Sᵀ G_n Q_A)² over shard ``shard`` of the EK-FAC sample.

    Takes :func:`ekfac_covariances`'s arguments, plus the eigenbasis store.
    """
    settings = sample["gradient_pass"]
    eigen_attrs = open_store(eigen).attrs
    if eigen_attrs.get("projection") != projection_attrs(settings.projection):
        raise ValueError(
            f"eigenbasis store {eigen} was fitted with projection "
            f"{eigen_attrs.get('projection')!r}, this job asks for "
            f"{projection_attrs(settings.projection)!r}"
        )
    job = _sample_shard("EK-FAC eigenvalue correction", **sample)
    sums = lambda_sums(
        job.model,
        job.modules,
        load_eigenbases(eigen, working_dtype(job.model)),  # f32 for an f32 model, as rotated
        job.batches,
        **job.fisher_options(fisher, settings),
    )
    return save_lambdas(out, sums, job.finish(fisher=fisher))


def ekfac_domain_lambda(
    *, domain: str, domain_dir: str | Path, tokens: int, **lambda_args: Any
) -> Path:
    """``Σ_n (Q_Sᵀ G_n Q_A)²`` over a sample of one domain (TiKMiX-M's Λ_d).

    The EK-FAC fit's own Λ pass (:func:`ekfac_lambda`: same eigenbasis, Fisher labels and
    precision) on ``tokens`` drawn from the domain alone, with its own sample seed.
    ``lambda_args`` are ekfac_lambda's: checkpoint, eigen, fisher, gradient_pass, out.
    """
    return ekfac_lambda(
        domain_dirs={domain: domain_dir},
        weights={domain: 1.0},
        tokens=tokens,
        shards=1,
        shard=0,
        sample_role=("ekfac_domain_lambda", domain),
        **lambda_args,
    )


def ekfac_factors(eigen: str | Path, parts: list[str | Path], out: str | Path) -> Path:
    """EK-FAC factors: eigenbases and Λ averaged over sequences, one module at a time (its
    eigenbasis and its Λ from every part read, averaged and written before the next module's).

    The damping stored here is the default 0.1·mean(Λ); :func:`precondition_task_gradients`
    applies the configured damping, so changing it does not refit the factors.
    """
    factors = (
        EkfacFactors.from_lambda({module: basis}, lambdas, "auto")
        for module, basis, lambdas in iter_module_lambdas(eigen, parts)
    )
    attrs = open_store(eigen).attrs
    provenance = {
        "checkpoint": attrs["checkpoint"],
        "fisher": attrs["fisher"],
        "projection": attrs.get("projection"),
        "compute": ComputeRecord().to_dict(),
        "total_compute": ComputeRecord.total(
            total_compute(eigen), *map(total_compute, parts)
        ).to_dict(),
    }
    return save_factors(out, factors, provenance)


def precondition_task_gradients(
    *,
    factors: str | Path,
    task_stores: Mapping[str, str | Path],
    damping: float | None,
    damping_factor: float,
    out: str | Path,
) -> Path:
    """(G + λI)⁻¹ ∇f_v for every task, one IHVP each.

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
    own = ComputeRecord(0, flops)
    attrs = {
        "kind": "preconditioned_tasks",
        "tasks": list(tasks),
        "modules": modules,
        "damping": {},  # filled per module while streaming (written after the arrays)
        "task_tokens": {t: store.attrs["n_tokens"] for t, store in tasks.items()},
        "checkpoint": factor_store.attrs["checkpoint"],
        "projection": projection,
        "compute": own.to_dict(),
        "total_compute": ComputeRecord.total(
            own, total_compute(factors), *map(total_compute, task_stores.values())
        ).to_dict(),
    }

    progress = Progress(len(modules), "preconditioning", log, unit="modules")

    def arrays() -> Iterator[tuple[str, np.ndarray]]:
        for module, module_factors in iter_module_factors(factors):
            progress.update(1)
            ekfac = module_factors.with_damping(damping, damping_factor)
            attrs["damping"][module] = ekfac.damping[module]
            task_grads = {
                task: GradientStats(
                    sums={module: store.tensor(f"{module}/gradient")},
                    n_tokens=store.attrs["n_tokens"],
                    n_sequences=store.attrs["n_sequences"],
                )
                for task, store in tasks.items()
            }
            for task, grads in api.precondition(ekfac, task_grads).items():
                yield f"{task}/{module}", grads[module].detach().cpu().numpy()

    return write_store(out, arrays(), attrs)


def influence_matrix(
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
        terms.append(api.influence_matrix(pre, means)[1])
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
    matrix, per_module = api.benefit_matrix(per_module, list(tasks), list(domains))
    attrs = pre_store.attrs
    n_params = sum(int(np.prod(pre_store.attrs["arrays"][f"{tasks[0]}/{m}"])) for m in modules)
    own = ComputeRecord(0, 2 * n_params * len(pre) * len(domains))
    sidecar = {
        "orientation": "benefit",
        "sign_convention": BENEFIT_DEFINITION,
        "rows": "tasks",
        "columns": "domains",
        "checkpoint": attrs["checkpoint"],
        "damping": attrs["damping"],
        "seconds": time.perf_counter() - start,
        "compute": own.to_dict(),
        "total_compute": ComputeRecord.total(
            own, total_compute(preconditioned), *map(total_compute, domain_stores.values())
        ).to_dict(),
    }
    with atomic_output(matrix_csv) as tmp:
        matrix.to_csv(tmp, float_format="%.10g")
    with atomic_output(per_module_parquet) as tmp:
        per_module.to_parquet(tmp, index=False)
    write_json_atomic(sidecar_json, sidecar)
    return matrix


def _write_responses(result: pd.DataFrame, response: str, out: str | Path) -> pd.DataFrame:
    result["response"] = response
    with atomic_output(out) as tmp:
        result.to_csv(tmp, float_format="%.12g")
    return result


def measure_mixtures(
    *,
    checkpoint: str | Path,
    preconditioned: str | Path,
    mixtures_csv: str | Path,
    domain_dirs: Mapping[str, str | Path],
    design: str,
    tokens: int,
    shards: int,
    shard: int,
    gradient_pass: GradientPassSettings,
    out: str | Path,
    response: str = "direct",
    lookahead: Mapping[str, Any] | None = None,
    task_files: Mapping[str, str | Path] | None = None,
) -> pd.DataFrame:
    """Measured response of each mixture of a shard of ``mixtures_csv``.

    ``response="direct"``: each mixture gets a freshly sampled dataset (seed role ``measure``,
    disjoint from the domain gradients' samples), one gradient pass, and dot products with the
    preconditioned task gradients: a vector of per-task benefits, written as ``benefit:<task>``
    columns. ``response="lookahead"``: each task's relative loss decrease after
    ``lookahead["steps"]`` optimizer steps on the mixture
    (:func:`tikmix.models.lookahead.lookahead_responses`). The ``response`` column says which.
    """
    settings = gradient_pass
    table = pd.read_csv(mixtures_csv, index_col="mixture")
    rows = table.iloc[shard_rows(len(table), shards, shard)]
    if response == "lookahead":
        decreases, n_tokens, flops = lookahead_responses(
            checkpoint,
            {d: domain_dirs[d] for d in table.columns},
            rows,
            task_files,
            seq_len=settings.seq_len,
            seed=settings.seed,
            device=str(resolve_device(settings.device)),
            **lookahead,
        )
        result = pd.concat([rows, decreases.add_prefix(BENEFIT_PREFIX)], axis=1)
        result["tokens"], result["flops"] = n_tokens / len(rows), flops / len(rows)
        return _write_responses(result, response, out)
    if response != "direct":
        raise ValueError(f"unknown response {response!r}; expected direct or lookahead")
    stored = open_store(preconditioned).attrs.get("projection")
    if stored != projection_attrs(settings.projection):
        raise ValueError(
            f"preconditioned task gradients {preconditioned} were computed with projection "
            f"{stored!r}, this job asks for {projection_attrs(settings.projection)!r}"
        )
    model, _ = load_model(checkpoint, settings.device)
    modules = select_modules(model, settings.tracked_modules)
    streams = load_streams({d: domain_dirs[d] for d in table.columns})
    benefits, _ = measure_mixture_table(
        model,
        modules,
        streams,
        rows,
        open_preconditioned(preconditioned),
        tokens=tokens,
        seq_len=settings.seq_len,
        batch_size=settings.batch_size,
        seed=settings.seed,
        design=design,
        precision=settings.precision,
        projections=resolve_projections(modules, settings.projection),
    )
    n_tokens = (tokens // settings.seq_len) * settings.seq_len
    result = pd.concat([rows, benefits.add_prefix(BENEFIT_PREFIX)], axis=1)
    result["tokens"] = n_tokens
    result["flops"] = n_tokens * training_flops_per_token(model, settings.seq_len)
    return _write_responses(result, response, out)


def curvature_responses(
    *,
    mixtures_csv: str | Path,
    out: str | Path,
    count_passes: bool = True,
    **stores: Any,
) -> pd.DataFrame:
    """Curvature responses of every mixture of ``mixtures_csv`` (TiKMiX-M's default response).

    ``stores`` are :func:`~tikmix.influence.mixture_curvature.stored_module_terms`'s. Writes the
    mixtures with one ``benefit:<task>`` column per task, ``tokens`` and ``flops`` and
    ``response = curvature``. The responses need no model pass; with ``count_passes`` the
    per-domain Λ passes they read are spread over the rows' ``tokens`` and ``flops`` (count them
    in one design only).
    """
    table = pd.read_csv(mixtures_csv, index_col="mixture")
    domains = list(stores["domain_stores"])
    values = mixture_curvature.curvature_responses(
        table[domains].to_numpy(), mixture_curvature.stored_module_terms(**stores)
    )
    tasks = list(stores["task_stores"])
    result = pd.concat(
        [table, pd.DataFrame(values, index=table.index, columns=tasks).add_prefix(BENEFIT_PREFIX)],
        axis=1,
    )
    passes = ComputeRecord.total(
        *(
            ComputeRecord.read(open_store(path).attrs, f"store {path}")
            for path in stores["domain_lambda_stores"].values()
        )
    )
    share = 1.0 / len(result) if count_passes else 0.0
    result["tokens"] = passes.tokens * share
    result["flops"] = passes.flops * share
    log.info("curvature responses of %d mixtures over %d tasks", len(result), len(tasks))
    return _write_responses(result, "curvature", out)
