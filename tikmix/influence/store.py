"""Zarr v3 stores for gradients, curvature pieces and factors, written atomically.

A store is a Zarr group with one array per (module, quantity), named ``"{module}/{quantity}"``
and chunked so that a chunk never spans two modules. Writing is streamed: arrays come from an
iterable and are written one at a time, so a model's gradients are never held twice in memory.
A store is written to a temporary sibling directory, its attributes end with ``complete: true``
and ``format_version``, and only then is it renamed into place; a store without them (a job that
died) is treated as absent: ``open_store`` raises ``IncompleteStoreError``.

The array names are recorded in the attributes (``arrays``: name → shape), and readers use that
list rather than listing the directory, which Snakemake litters with ``.snakemake_timestamp``.

Provenance attributes are the caller's (``checkpoint`` hash, ``domain``, ``token_range``, ``seed``,
``code_version`` …); the typed savers add the counts (``n_tokens``, ``n_sequences``). Stores of
per-shard *sums* reduce exactly by adding arrays and counts (``reduce_sum_stores``); domain
gradients reduce to a per-token *mean* (``reduce_gradient_stores``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from zarr.codecs import ZstdCodec

import tikmix
from tikmix.core.atomic import atomic_directory
from tikmix.core.compute import ComputeRecord
from tikmix.influence.ekfac import CovarianceSums, Eigenbasis, EkfacFactors, LambdaSums
from tikmix.influence.gradients import GradientStats

FORMAT_VERSION = 1
CHUNK_BYTES = 64 * 2**20  # rows of a large module's array are split into chunks of at most this
#: Attributes that must agree between the part-stores of one reduction.
COMPATIBLE_KEYS = ("kind", "checkpoint", "domain", "task", "fisher", "projection", "arrays")
#: Attributes that are added up by a reduction (ints, or dicts of ints per module).
COUNT_KEYS = ("n_tokens", "n_sequences")


class IncompleteStoreError(FileNotFoundError):
    """The store does not exist, or its writer did not finish (no ``complete`` attribute)."""


class IncompatibleStoresError(ValueError):
    """Part-stores that cannot be reduced together (different modules, checkpoint, domain …)."""


def _chunks(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    if len(shape) == 0:
        return ()
    row_bytes = itemsize * int(np.prod(shape[1:], dtype=np.int64))
    rows = max(1, min(shape[0], CHUNK_BYTES // max(row_bytes, 1)))
    return (rows, *shape[1:])


def write_store(
    path: str | os.PathLike, arrays: Iterable[tuple[str, np.ndarray]], attrs: dict[str, Any]
) -> Path:
    """Write ``arrays`` (streamed, one at a time) and ``attrs`` to a Zarr store at ``path``, atomically.

    An existing store at ``path`` is replaced only once the new one is complete. If anything
    raises, the temporary directory is removed and ``path`` is left as it was. A writer killed
    outright (SIGKILL, a node lost) cannot clean up; its temporary directory, never trusted
    (it has no completion mark), is removed when the same store is next written.
    """
    path = Path(path)
    with atomic_directory(path) as tmp:
        group = zarr.open_group(tmp, mode="w")
        shapes: dict[str, list[int]] = {}
        for name, array in arrays:
            array = np.ascontiguousarray(array)
            if name in shapes:
                raise ValueError(f"array {name!r} written twice to store {path}")
            target = group.create_array(
                name,
                shape=array.shape,
                dtype=array.dtype,
                chunks=_chunks(array.shape, array.dtype.itemsize),
                compressors=ZstdCodec(level=3),
            )
            target[...] = array
            shapes[name] = list(array.shape)
        # The attributes are written after the arrays, so a streaming writer may fill in values
        # it learns while producing them (e.g. each module's damping).
        group.attrs.update(_jsonable(attrs))
        group.attrs.update({"arrays": shapes, "complete": True, "format_version": FORMAT_VERSION})
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


class Store:
    """A complete store opened read-only: ``attrs``, ``names`` and ``store[name]`` → ndarray."""

    def __init__(self, path: Path, group: zarr.Group):
        self.path = path
        self._group = group
        self.attrs: dict[str, Any] = dict(group.attrs)

    @property
    def names(self) -> list[str]:
        return list(self.attrs["arrays"])

    @property
    def kind(self) -> str | None:
        return self.attrs.get("kind")

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.attrs["arrays"]:
            raise KeyError(f"store {self.path} has no array {name!r}")
        return self._group[name][...]

    def tensor(self, name: str) -> torch.Tensor:
        return torch.from_numpy(self[name])


def open_store(path: str | os.PathLike, kind: str | None = None) -> Store:
    """Open a complete store; ``IncompleteStoreError`` if it is missing or unfinished.

    With ``kind``, also check the store holds that kind of data (``ValueError`` otherwise).
    """
    path = Path(path)
    if not (path / "zarr.json").is_file():
        raise IncompleteStoreError(f"no influence store at {path} (missing or not a Zarr group)")
    group = zarr.open_group(path, mode="r")
    attrs = group.attrs
    if attrs.get("complete") is not True:
        raise IncompleteStoreError(
            f"influence store {path} is incomplete (no 'complete' attribute): its writer did "
            "not finish; delete it and rerun the job that writes it"
        )
    if attrs.get("format_version") != FORMAT_VERSION:
        raise IncompleteStoreError(
            f"influence store {path} has format_version {attrs.get('format_version')!r}, "
            f"this code reads {FORMAT_VERSION}; rerun the job that writes it"
        )
    store = Store(path, group)
    if kind is not None and store.kind != kind:
        raise ValueError(f"store {path} holds {store.kind!r}, expected {kind!r}")
    return store


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def _provenance(provenance: dict[str, Any] | None) -> dict[str, Any]:
    return {"code_version": tikmix.__version__, **(provenance or {})}


# --- typed savers / loaders -------------------------------------------------------------------


def save_gradients(
    path: str | os.PathLike, stats: GradientStats, provenance: dict[str, Any] | None = None
) -> Path:
    """Store summed gradients (kind ``gradient_sums``): one ``{module}/gradient`` array each."""
    attrs = {
        **_provenance(provenance),
        "kind": "gradient_sums",
        "modules": list(stats.sums),
        "n_tokens": stats.n_tokens,
        "n_sequences": stats.n_sequences,
    }
    arrays = ((f"{name}/gradient", _numpy(s)) for name, s in stats.sums.items())
    return write_store(path, arrays, attrs)


def load_gradients(path: str | os.PathLike) -> GradientStats:
    """Summed gradients and counts of a ``gradient_sums`` store."""
    store = open_store(path, kind="gradient_sums")
    return GradientStats(
        sums={m: store.tensor(f"{m}/gradient") for m in store.attrs["modules"]},
        n_tokens=store.attrs["n_tokens"],
        n_sequences=store.attrs["n_sequences"],
    )


def load_mean_gradients(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Per-token mean gradients per module and the attributes of a ``gradient_mean`` store."""
    store = open_store(path, kind="gradient_mean")
    return {m: store.tensor(f"{m}/gradient") for m in store.attrs["modules"]}, store.attrs


def save_covariances(
    path: str | os.PathLike, sums: CovarianceSums, provenance: dict[str, Any] | None = None
) -> Path:
    """Store covariance sums (kind ``covariance_sums``)."""
    attrs = {
        **_provenance(provenance),
        "kind": "covariance_sums",
        "modules": list(sums.activation),
        "n_tokens": sums.n_tokens,
        "n_sequences": sums.n_sequences,
    }

    def arrays() -> Iterator[tuple[str, np.ndarray]]:
        for name in sums.activation:
            yield f"{name}/activation", _numpy(sums.activation[name])
            yield f"{name}/gradient", _numpy(sums.gradient[name])

    return write_store(path, arrays(), attrs)


def iter_module_covariances(
    parts: Sequence[str | os.PathLike],
) -> Iterator[tuple[str, CovarianceSums]]:
    """``(module, its covariance sums over all parts)``, one module read at a time (the same
    sums, added in the same order, as reducing whole parts)."""
    stores = [open_store(p, kind="covariance_sums") for p in parts]
    n_sequences = sum(store.attrs["n_sequences"] for store in stores)
    for module in stores[0].attrs["modules"]:
        total = None
        for store in stores:
            part = CovarianceSums(
                activation={module: store.tensor(f"{module}/activation")},
                gradient={module: store.tensor(f"{module}/gradient")},
                n_tokens={module: store.attrs["n_tokens"][module]},
                n_sequences=store.attrs["n_sequences"],
            )
            total = part if total is None else total + part
        total.n_sequences = n_sequences
        yield module, total


def load_covariances(path: str | os.PathLike) -> CovarianceSums:
    store = open_store(path, kind="covariance_sums")
    modules = store.attrs["modules"]
    return CovarianceSums(
        activation={m: store.tensor(f"{m}/activation") for m in modules},
        gradient={m: store.tensor(f"{m}/gradient") for m in modules},
        n_tokens=dict(store.attrs["n_tokens"]),
        n_sequences=store.attrs["n_sequences"],
    )


_EIGEN_FIELDS = (
    "activation_eigenvectors",
    "activation_eigenvalues",
    "gradient_eigenvectors",
    "gradient_eigenvalues",
)


def save_eigenbases(
    path: str | os.PathLike,
    bases: Mapping[str, Eigenbasis] | Iterable[tuple[str, Eigenbasis]],
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Store eigenbases (kind ``eigenbases``); ``bases`` may be streamed as ``(module, basis)``
    pairs, each written before the next is computed."""
    modules: list[str] = []  # filled while streaming (the attributes are written last)
    attrs = {**_provenance(provenance), "kind": "eigenbases", "modules": modules}

    def arrays() -> Iterator[tuple[str, np.ndarray]]:
        for name, basis in bases.items() if isinstance(bases, Mapping) else bases:
            modules.append(name)
            for field in _EIGEN_FIELDS:
                yield f"{name}/{field}", _numpy(getattr(basis, field))
        attrs.update(_provenance(provenance))  # what the producer filled in while streaming

    return write_store(path, arrays(), attrs)


def load_eigenbases(
    path: str | os.PathLike, dtype: torch.dtype | None = None
) -> dict[str, Eigenbasis]:
    """Eigenbases of a store, in ``dtype`` (float64 as stored when None), one array converted
    at a time."""
    store = open_store(path, kind="eigenbases")

    def tensor(name: str) -> torch.Tensor:
        return store.tensor(name) if dtype is None else store.tensor(name).to(dtype)

    return {
        m: Eigenbasis(*(tensor(f"{m}/{field}") for field in _EIGEN_FIELDS))
        for m in store.attrs["modules"]
    }


def save_lambdas(
    path: str | os.PathLike, sums: LambdaSums, provenance: dict[str, Any] | None = None
) -> Path:
    """Store Λ sums (kind ``lambda_sums``)."""
    attrs = {
        **_provenance(provenance),
        "kind": "lambda_sums",
        "modules": list(sums.sums),
        "n_sequences": sums.n_sequences,
    }
    arrays = ((f"{name}/lambda", _numpy(s)) for name, s in sums.sums.items())
    return write_store(path, arrays, attrs)


def load_lambdas(path: str | os.PathLike) -> LambdaSums:
    store = open_store(path, kind="lambda_sums")
    return LambdaSums(
        sums={m: store.tensor(f"{m}/lambda") for m in store.attrs["modules"]},
        n_sequences=store.attrs["n_sequences"],
    )


def iter_module_lambdas(
    eigen: str | os.PathLike, parts: Sequence[str | os.PathLike]
) -> Iterator[tuple[str, Eigenbasis, LambdaSums]]:
    """``(module, its eigenbasis, its Λ sums over all parts)``, one module read at a time (the
    same sums, added in the same order, as reducing whole parts)."""
    bases = open_store(eigen, kind="eigenbases")
    stores = [open_store(p, kind="lambda_sums") for p in parts]
    for module in stores[0].attrs["modules"]:
        basis = Eigenbasis(*(bases.tensor(f"{module}/{field}") for field in _EIGEN_FIELDS))
        total = None
        for store in stores:
            part = LambdaSums(
                {module: store.tensor(f"{module}/lambda")}, store.attrs["n_sequences"]
            )
            total = part if total is None else total + part
        yield module, basis, total


def save_factors(
    path: str | os.PathLike,
    factors: EkfacFactors | Iterable[EkfacFactors],
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Store (E)K-FAC factors (kind ``factors``): eigenvectors, eigenvalues and damping.

    ``factors`` may be streamed as factors of a few modules each, each written before the next
    is formed."""
    modules: list[str] = []  # filled while streaming (the attributes are written last)
    damping: dict[str, float] = {}
    attrs = {**_provenance(provenance), "kind": "factors", "modules": modules, "damping": damping}

    def arrays() -> Iterator[tuple[str, np.ndarray]]:
        for part in [factors] if isinstance(factors, EkfacFactors) else factors:
            attrs["factor_kind"] = part.kind
            for name in part.modules:
                modules.append(name)
                damping[name] = part.damping[name]
                yield f"{name}/activation_eigenvectors", _numpy(part.activation_eigenvectors[name])
                yield f"{name}/gradient_eigenvectors", _numpy(part.gradient_eigenvectors[name])
                yield f"{name}/eigenvalues", _numpy(part.eigenvalues[name])

    return write_store(path, arrays(), attrs)


def _module_factors(store: Store, modules: Sequence[str]) -> EkfacFactors:
    return EkfacFactors(
        activation_eigenvectors={m: store.tensor(f"{m}/activation_eigenvectors") for m in modules},
        gradient_eigenvectors={m: store.tensor(f"{m}/gradient_eigenvectors") for m in modules},
        eigenvalues={m: store.tensor(f"{m}/eigenvalues") for m in modules},
        damping={m: float(store.attrs["damping"][m]) for m in modules},
        kind=store.attrs["factor_kind"],
    )


def load_factors(path: str | os.PathLike) -> EkfacFactors:
    store = open_store(path, kind="factors")
    return _module_factors(store, store.attrs["modules"])


def iter_module_factors(path: str | os.PathLike) -> Iterator[tuple[str, EkfacFactors]]:
    """``(module, its factors alone)``, one module read at a time: memory bounded by the largest
    module, not the model (preconditioning streams through these)."""
    store = open_store(path, kind="factors")
    for module in store.attrs["modules"]:
        yield module, _module_factors(store, [module])


class _StoredModules(Mapping[str, torch.Tensor]):
    """One task's preconditioned gradients, each module's array read when it is looked up."""

    def __init__(self, store: Store, task: str):
        self._store, self._task = store, task

    def __getitem__(self, module: str) -> torch.Tensor:
        if module not in self._store.attrs["modules"]:
            raise KeyError(module)
        return self._store.tensor(f"{self._task}/{module}")

    def __iter__(self) -> Iterator[str]:
        return iter(self._store.attrs["modules"])

    def __len__(self) -> int:
        return len(self._store.attrs["modules"])


def open_preconditioned(path: str | os.PathLike) -> dict[str, Mapping[str, torch.Tensor]]:
    """Preconditioned task gradients like :func:`load_preconditioned`'s, but nothing is read
    until a module is looked up: a consumer going module by module holds one module's arrays."""
    store = open_store(path, kind="preconditioned_tasks")
    return {task: _StoredModules(store, task) for task in store.attrs["tasks"]}


def load_preconditioned(path: str | os.PathLike) -> dict[str, dict[str, torch.Tensor]]:
    """Preconditioned task gradients: task → module → ``(G + λI)⁻¹ ∇f_v``."""
    store = open_store(path, kind="preconditioned_tasks")
    return {
        task: {m: store.tensor(f"{task}/{m}") for m in store.attrs["modules"]}
        for task in store.attrs["tasks"]
    }


def total_compute(path: str | os.PathLike) -> ComputeRecord:
    """Total compute behind a store: its ``total_compute``, or its own plus its parts'."""
    attrs, where = open_store(path).attrs, f"store {path}"
    if "total_compute" in attrs:
        return ComputeRecord.read(attrs, where, "total_compute")
    holders = [attrs, *attrs.get("parts", [])]
    return ComputeRecord.total(*(ComputeRecord.read(h, where) for h in holders if "compute" in h))


def check_projection(
    expected: dict[str, Any] | None, stores: Mapping[str, str | os.PathLike], what: str
) -> None:
    """Raise ``IncompatibleStoresError`` unless every store was computed with ``expected``.

    Gradients and curvature must live in the same (projected or unprojected) space; the stores
    record it as the ``projection`` attribute (``{rank_out, rank_in, seed}`` or absent/null).
    """
    for name, path in stores.items():
        found = open_store(path).attrs.get("projection")
        if found != expected:
            raise IncompatibleStoresError(
                f"{what} {name!r} ({path}) was computed with projection {found!r}, but the "
                f"curvature with {expected!r}: recompute it with the same projection"
            )


# --- reductions --------------------------------------------------------------------------------


def _open_parts(parts: Sequence[str | os.PathLike]) -> list[Store]:
    if not parts:
        raise ValueError("nothing to reduce: no part-stores given")
    stores = [open_store(p) for p in parts]
    first = stores[0]
    if first.kind not in ("gradient_sums", "covariance_sums", "lambda_sums"):
        raise IncompatibleStoresError(f"store {first.path} holds {first.kind!r}, not sums")
    for store in stores[1:]:
        for key in COMPATIBLE_KEYS:
            if store.attrs.get(key) != first.attrs.get(key):
                raise IncompatibleStoresError(
                    f"part-stores {first.path} and {store.path} differ in {key!r}: "
                    f"{first.attrs.get(key)!r} vs {store.attrs.get(key)!r}"
                )
    return stores


def _add_counts(values: list[Any]) -> Any:
    if isinstance(values[0], dict):
        return {k: sum(v[k] for v in values) for k in values[0]}
    return sum(values)


def _reduced_attrs(stores: list[Store]) -> dict[str, Any]:
    first = stores[0].attrs
    attrs = {k: v for k, v in first.items() if k in COMPATIBLE_KEYS or k == "modules"}
    attrs.pop("arrays", None)
    attrs["code_version"] = tikmix.__version__
    for key in COUNT_KEYS:
        if key in first:
            attrs[key] = _add_counts([s.attrs[key] for s in stores])
    skip = set(COMPATIBLE_KEYS) | {"modules", "complete", "format_version"}
    attrs["parts"] = [
        {"path": str(s.path), **{k: v for k, v in s.attrs.items() if k not in skip}} for s in stores
    ]
    return attrs


def _summed_arrays(stores: list[Store], scale: float = 1.0) -> Iterator[tuple[str, np.ndarray]]:
    for name in stores[0].names:
        first = stores[0][name]
        total = first.astype(np.float64)
        for store in stores[1:]:
            total += store[name]
        yield name, (total * scale).astype(first.dtype)


def reduce_sum_stores(parts: Sequence[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Add per-shard sum-stores (gradients, covariances or Λ) into one store of the same kind.

    Parts must agree on kind, modules/shapes, checkpoint, domain/task and Fisher labels
    (``IncompatibleStoresError`` otherwise). Arrays and counts are added; each part's
    provenance (token range, seed, counts, path) is kept under ``parts``. Arrays are summed one
    at a time in float64.
    """
    stores = _open_parts(parts)
    return write_store(out, _summed_arrays(stores), _reduced_attrs(stores))


def reduce_gradient_stores(parts: Sequence[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Reduce a domain's ``gradient_sums`` part-stores to its per-token mean gradient.

    Writes kind ``gradient_mean``: ``Σ_parts sums / Σ_parts n_tokens`` per module, with the summed
    counts and the parts' provenance. Raises ``IncompatibleStoresError`` for parts of different
    modules, shapes, checkpoints or domains.
    """
    stores = _open_parts(parts)
    if stores[0].kind != "gradient_sums":
        raise IncompatibleStoresError(f"store {stores[0].path} holds {stores[0].kind!r}")
    attrs = _reduced_attrs(stores)
    if attrs["n_tokens"] == 0:
        raise ValueError(f"part-stores {[str(p) for p in parts]} cover zero scored tokens")
    attrs["kind"] = "gradient_mean"
    return write_store(out, _summed_arrays(stores, 1.0 / attrs["n_tokens"]), attrs)
