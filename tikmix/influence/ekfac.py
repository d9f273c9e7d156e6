"""EK-FAC curvature of the tracked layers, as map-reduce pieces (George et al. 2018; Grosse et al. 2023).

The curvature approximated is the Fisher of the *per-sequence summed loss*,
``F = E_seq[vec(G_n) vec(G_n)ᵀ]`` with ``G_n = Σ_t g_t a_tᵀ`` the gradient of sequence ``n``'s summed
token loss (``a`` the layer input with a 1 appended for a bias, ``g`` the gradient w.r.t. the layer
output). Per layer:

1. ``covariance_sums`` (per shard): ``Σ a aᵀ`` and ``Σ g gᵀ`` over scored tokens, and their counts;
   ``CovarianceSums`` add up exactly across shards.
2. ``eigendecompose``: ``A = Σ a aᵀ / n_tokens``, ``S = Σ g gᵀ / n_tokens`` (symmetrised) and their
   float64 eigenbases ``Q_A``, ``Q_S``.
3. ``lambda_sums`` (per shard): ``Σ_n (Q_Sᵀ G_n Q_A)²`` and the sequence count.
4. ``EkfacFactors.from_lambda``: ``Λ = Σ_n (Q_Sᵀ G_n Q_A)² / n_sequences``, damping ``λ`` and
   ``IHVP(V) = Q_S [(Q_Sᵀ V Q_A) / (Λ + λ)] Q_Aᵀ``.

These are kronfluence's normalisations exactly (covariances per token, Λ per sequence, damping
heuristic ``0.1 · mean(Λ)`` per module), so with the same labels and damping its EK-FAC scores and
ours agree. Covariances run over the positions whose prediction is scored (padding excluded);
``G_n`` is the exact per-sequence gradient, i.e. summed over all positions.

Fisher labels: ``fisher="true"`` (default) samples each position's label from the model's
predictive distribution; the generator of a sequence is seeded by ``(seed, its token ids)``, so the
labels do not depend on batch size, sharding or order, and the covariance and Λ passes see the same
labels. ``fisher="empirical"`` uses the data's next tokens.

Precision and scale: ``precision="bf16"`` runs the forward passes under bfloat16 autocast while
covariances and Λ accumulate in ``dtype`` (float64 by default) and eigendecompositions run in
float64. With ``projections`` (``tikmix.influence.projection``) every statistic is fitted in the
projected space: the hooks project ``a`` and ``g`` first, so ``A' = P_in A P_inᵀ``,
``S' = P_out S P_outᵀ`` and Λ' are those of the projected gradients ``P_out G_n P_inᵀ``, and the
factors precondition projected task gradients. Only ``[r, r]`` covariances are ever allocated,
which is what makes tracking a large-vocabulary LM head possible (``docs/scaling.md``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tikmix.influence.projection import ModuleProjection
from tikmix.influence.tracking import (
    Batch,
    LayerRecorder,
    Precision,
    autocast,
    evaluation_mode,
    forward_slices,
    gradient_shape,
    position_mask,
    projections_on,
    tracked_parameters_require_grad,
    unpack_batch,
    working_dtype,
)
from tikmix.models.loss import (
    causal_lm_logits,
    chunkable_head,
    final_hidden_states,
    head_cross_entropy,
)

FisherKind = Literal["true", "empirical"]
DAMPING_SCALE = 0.1  # damping="auto": λ = DAMPING_SCALE · mean(Λ), per module (as kronfluence)


def _sequence_seed(seed: int, row: np.ndarray) -> int:
    digest = hashlib.blake2b(digest_size=8)
    digest.update(int(seed).to_bytes(8, "little", signed=True))
    digest.update(row.astype(np.int64).tobytes())
    return int.from_bytes(digest.digest(), "little") & (2**63 - 1)


def _label_uniforms(ids: torch.Tensor, mask: torch.Tensor, seed: int) -> torch.Tensor:
    """Uniforms ``[B, L]`` (float64) for drawing each position's label, and NaN after a
    sequence's last scored position (those positions get label 0).

    Sequence ``n`` draws its uniforms from a generator seeded by ``seed`` and its token ids up
    to its last scored position, so its labels depend neither on the rest of the batch nor on
    trailing padding.
    """
    batch, length = mask.shape
    positions = torch.arange(length, device=mask.device)
    lengths = (torch.where(mask, positions, -1).max(dim=1).values + 1).tolist()
    rows = ids.detach().cpu().numpy()
    uniforms = torch.full((batch, length), float("nan"), dtype=torch.float64)
    for n, scored_length in enumerate(lengths):
        if scored_length > 0:
            generator = torch.Generator(device="cpu").manual_seed(
                _sequence_seed(seed, rows[n, : scored_length + 1])
            )
            uniforms[n, :scored_length] = torch.rand(
                scored_length, 1, dtype=torch.float64, generator=generator
            ).squeeze(1)
    return uniforms.to(mask.device)


def _draw_labels(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Labels ``[rows]`` drawn from ``probs [rows, V]`` by inverse-CDF sampling (label 0 where
    the uniform is NaN); only drawing the uniforms is per sequence, the search runs on rows."""
    cdf = probs.double().cumsum(dim=-1)
    unscored = uniforms.isnan()
    u = uniforms.masked_fill(unscored, 0.0).unsqueeze(-1)
    targets = torch.searchsorted(cdf, u * cdf[..., -1:]).squeeze(-1)
    targets.clamp_(max=probs.shape[-1] - 1)
    return targets.masked_fill_(unscored, 0)


def _sample_labels(
    probs: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, seed: int
) -> torch.Tensor:
    """Labels ``[B, L]`` drawn from ``probs [B, L, V]`` (:func:`_label_uniforms`,
    :func:`_draw_labels`)."""
    return _draw_labels(probs, _label_uniforms(ids, mask, seed))


def fisher_loss(
    model: nn.Module,
    ids: torch.Tensor,
    loss_mask: torch.Tensor | None,
    fisher: FisherKind,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed loss whose gradients define the Fisher, and the ``[B, L]`` scored-position mask.

    With ``fisher="true"`` the targets are drawn from the model's own predictive distribution
    (deterministic for ``seed`` and the sequence's token ids); with ``"empirical"`` they are the
    data's next tokens. The head runs in chunks where the model allows it
    (:func:`tikmix.models.loss.head_cross_entropy`); labels are drawn chunk by chunk from the
    same uniforms, so they do not depend on the chunking.
    """
    if fisher not in ("true", "empirical"):
        raise ValueError(f"fisher must be 'true' or 'empirical', got {fisher!r}")
    mask = position_mask(ids, loss_mask)
    head = chunkable_head(model)
    if head is not None:
        hidden = final_hidden_states(model, ids[:, :-1])
        labels = None
        if fisher == "true":
            flat_uniforms = _label_uniforms(ids, mask, seed).reshape(-1)

            def labels(probs: torch.Tensor, rows: slice) -> torch.Tensor:
                return _draw_labels(probs, flat_uniforms[rows])

        targets = ids[:, 1:] if fisher == "empirical" else None
        loss, _, _ = head_cross_entropy(hidden, head, targets, mask, labels)
        return loss, mask
    logits = causal_lm_logits(model, ids[:, :-1])
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    if fisher == "empirical":
        targets = ids[:, 1:]
    else:
        targets = _sample_labels(torch.softmax(logits.detach(), dim=-1), ids, mask, seed)
    losses = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    ).view_as(targets)
    return (losses * mask).sum(), mask


def _backward_recorded(
    model: nn.Module,
    recorder: LayerRecorder,
    ids: torch.Tensor,
    loss_mask: torch.Tensor | None,
    fisher: FisherKind,
    seed: int,
    precision: Precision,
) -> torch.Tensor:
    """One forward/backward pass of the Fisher loss with the recorder's hooks installed."""
    with recorder.recording(ids.shape[0], ids.shape[1] - 1):
        with autocast(ids.device, precision):
            loss, mask = fisher_loss(model, ids, loss_mask, fisher, seed)
        recorder.backward(loss)
    return mask


def _sliced(
    batches: Iterable[Batch], device: torch.device, modules: dict[str, nn.Linear]
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Every batch on ``device``, in slices of whole sequences within the activation budget
    (``tracking.forward_slices``): the passes sum over sequences and tokens, and each
    sequence's labels depend on it alone, so the slicing changes no statistic."""
    for batch in batches:
        yield from forward_slices(*unpack_batch(batch, device), modules)


def _gram_upper(x: torch.Tensor) -> torch.Tensor:
    """``xᵀ x`` of ``x [n, d]``; only its upper triangle is meaningful.

    On the CPU BLAS ``syrk`` computes just that triangle, half the FLOPs of a matrix product;
    elsewhere it is a plain product. Callers symmetrise once (``_symmetric_from_upper``).
    """
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and x.shape[0] > 0:
        from scipy.linalg import blas  # lazily: only the CPU covariance pass needs it

        syrk = blas.ssyrk if x.dtype == torch.float32 else blas.dsyrk
        # the column-major lower triangle of xᵀx, transposed: the row-major upper triangle, so
        # adding it into a row-major sum reads memory in order
        return torch.from_numpy(syrk(1.0, x.contiguous().numpy().T, trans=0, lower=1).T)
    return x.T @ x


#: Rows per block when mirroring the upper triangle: a block's transposed reads stay in cache.
SYMMETRISE_BLOCK = 256


def _symmetric_from_upper(matrix: torch.Tensor) -> torch.Tensor:
    """``matrix`` made symmetric in place from its upper triangle (its lower one is ignored).

    The same values as ``matrix.triu() + matrix.triu(1).T``, mirrored one block of rows at a
    time: reading a whole transposed float64 matrix strides across memory and costs several
    times more on large layers, and a copy would double the pass's peak.
    """
    n = matrix.shape[0]
    for start in range(0, n, SYMMETRISE_BLOCK):
        stop = min(n, start + SYMMETRISE_BLOCK)
        matrix[start:stop, :start] = matrix[:start, start:stop].T
        block = matrix[start:stop, start:stop]
        block.copy_(block.triu() + block.triu(1).T)
    return matrix


def _scored_rows(x: torch.Tensor, mask: torch.Tensor, all_scored: bool) -> torch.Tensor:
    """The ``[n_scored, features]`` rows of ``x [B, L, features]`` at scored positions."""
    return x.reshape(-1, x.shape[-1]) if all_scored else x[mask]


def _recorder(
    model: nn.Module,
    modules: dict[str, nn.Linear],
    projections: Mapping[str, ModuleProjection] | None,
) -> tuple[LayerRecorder, dict[str, tuple[int, int]]]:
    """A recorder (projecting if asked) and the gradient shape it yields per module."""
    device = next(model.parameters()).device
    projections = projections_on(projections, device, working_dtype(model)) or {}
    shapes = {name: gradient_shape(m, projections.get(name)) for name, m in modules.items()}
    return LayerRecorder(modules, projections), shapes


@dataclass
class CovarianceSums:
    """Per module: ``Σ a aᵀ`` (activation) and ``Σ g gᵀ`` (gradient) over scored tokens.

    ``n_tokens[name]`` counts the tokens summed (times the number of calls, for a module applied
    more than once per forward pass); ``n_sequences`` counts sequences. Shards add up with ``+``.
    Modules that read the same input (q/k/v, gate/up) may hold the same ``activation`` tensor:
    treat the sums as read-only.
    """

    activation: dict[str, torch.Tensor]
    gradient: dict[str, torch.Tensor]
    n_tokens: dict[str, int]
    n_sequences: int

    def __add__(self, other: CovarianceSums) -> CovarianceSums:
        _check_same_modules(self.activation, other.activation)
        return CovarianceSums(
            activation={k: v + other.activation[k] for k, v in self.activation.items()},
            gradient={k: v + other.gradient[k] for k, v in self.gradient.items()},
            n_tokens={k: v + other.n_tokens[k] for k, v in self.n_tokens.items()},
            n_sequences=self.n_sequences + other.n_sequences,
        )


@dataclass
class Eigenbasis:
    """Eigen-decompositions of one module's normalised covariances ``A`` and ``S`` (float64)."""

    activation_eigenvectors: torch.Tensor  # Q_A [in', in'], columns are eigenvectors
    activation_eigenvalues: torch.Tensor  # [in'], ascending
    gradient_eigenvectors: torch.Tensor  # Q_S [out, out]
    gradient_eigenvalues: torch.Tensor  # [out]


@dataclass
class LambdaSums:
    """Per module ``Σ_n (Q_Sᵀ G_n Q_A)²`` ``[out, in']`` over sequences; shards add up with ``+``."""

    sums: dict[str, torch.Tensor]
    n_sequences: int

    def __add__(self, other: LambdaSums) -> LambdaSums:
        _check_same_modules(self.sums, other.sums)
        return LambdaSums(
            sums={k: v + other.sums[k] for k, v in self.sums.items()},
            n_sequences=self.n_sequences + other.n_sequences,
        )


def _check_same_modules(a: dict, b: dict) -> None:
    if a.keys() != b.keys():
        raise ValueError(f"cannot add sums of different modules: {sorted(a)} vs {sorted(b)}")


def reduce(parts: Iterable):
    """Add per-shard sums (``CovarianceSums``, ``LambdaSums`` or ``GradientStats``)."""
    parts = list(parts)
    if not parts:
        raise ValueError("nothing to reduce: no parts given")
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


def covariance_sums(
    model: nn.Module,
    modules: dict[str, nn.Linear],
    batches: Iterable[Batch],
    *,
    fisher: FisherKind = "true",
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    precision: Precision = "fp32",
    projections: Mapping[str, ModuleProjection] | None = None,
) -> CovarianceSums:
    """Accumulate ``Σ a aᵀ`` and ``Σ g gᵀ`` over the scored tokens of ``batches`` (in ``dtype``).

    With ``projections``, of the projected ``a' = P_in a`` and ``g' = P_out g``.
    """
    device = next(model.parameters()).device
    recorder, shapes = _recorder(model, modules, projections)
    # activation sums are filled when the shared sums settle (below); gradient sums per module
    activation: dict[str, torch.Tensor] = {}
    gradient = {
        name: torch.zeros(out_dim, out_dim, dtype=dtype, device=device)
        for name, (out_dim, _) in shapes.items()
    }
    n_tokens = dict.fromkeys(modules, 0)
    n_sequences = 0
    # per-batch products in the working dtype (float32 for float32/bf16 models), summed in dtype
    work = working_dtype(model)
    # Modules whose calls all read the same inputs (q/k/v, gate/up) share one running Σ a aᵀ,
    # held by the group's first module and added to every member when the grouping ends (it
    # only changes if a model routes inputs differently between batches).
    leaders: dict[str, str] = {}
    shared: dict[str, torch.Tensor] = {}

    def settle_shared_sums() -> None:
        # A module's first contribution is its group's sum itself (the group's members then
        # hold one tensor, symmetrised once); a later one (a model that regrouped) is added.
        for name, leader in leaders.items():
            if leader in shared:
                previous = activation.get(name)
                activation[name] = shared[leader] if previous is None else previous + shared[leader]
        shared.clear()

    with evaluation_mode(model), tracked_parameters_require_grad({}, model):
        for ids, loss_mask in _sliced(batches, device, modules):
            mask = _backward_recorded(model, recorder, ids, loss_mask, fisher, seed, precision)
            count = int(mask.sum())
            all_scored = count == mask.numel()
            n_sequences += ids.shape[0]
            first_reader: dict[tuple[int, ...], str] = {}
            batch_leaders = {
                name: first_reader.setdefault(tuple(id(a) for a, _ in recorder.pairs(name)), name)
                for name in modules
            }
            if batch_leaders != leaders:
                settle_shared_sums()
                leaders = batch_leaders
            # Σ a aᵀ of the last input read, for a next leader that reads the same input; one
            # product per distinct input kept for the whole slice held 4·Σ i² bytes and
            # fragmented the heap (2 GB of the pass's peak at SmolLM2's shape)
            last_product: tuple[int, torch.Tensor] | None = None
            for name in modules:
                for a, g in recorder.pairs(name):
                    if leaders[name] == name:
                        if last_product is None or last_product[0] != id(a):
                            last_product = None  # freed before the next one is formed
                            last_product = (
                                id(a),
                                _gram_upper(_scored_rows(a, mask, all_scored).to(work)),
                            )
                        if name not in shared:
                            in_dim = shapes[name][1]
                            shared[name] = torch.zeros(in_dim, in_dim, dtype=dtype, device=device)
                        shared[name] += last_product[1]
                    gradient[name] += _gram_upper(_scored_rows(g, mask, all_scored).to(work))
                    n_tokens[name] += count
    settle_shared_sums()
    symmetric: dict[int, torch.Tensor] = {}  # one symmetrisation per distinct sum
    for m in activation.values():
        if id(m) not in symmetric:
            symmetric[id(m)] = _symmetric_from_upper(m)
    activation = {
        name: symmetric[id(activation[name])]
        if name in activation
        else torch.zeros(in_dim, in_dim, dtype=dtype, device=device)  # no batch reached it
        for name, (_, in_dim) in shapes.items()
    }
    gradient = {name: _symmetric_from_upper(m) for name, m in gradient.items()}
    return CovarianceSums(activation, gradient, n_tokens, n_sequences)


def _eigh(covariance_sum: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    matrix = covariance_sum.to(torch.float64) / count
    values, vectors = torch.linalg.eigh(0.5 * (matrix + matrix.T))
    return values, vectors


def eigendecompose(covariances: CovarianceSums) -> dict[str, Eigenbasis]:
    """Float64 eigenbases of ``A = Σ a aᵀ / n`` and ``S = Σ g gᵀ / n`` per module."""
    bases = {}
    for name, count in covariances.n_tokens.items():
        if count == 0:
            raise ValueError(f"no scored tokens reached module {name!r}: cannot fit its curvature")
        a_values, a_vectors = _eigh(covariances.activation[name], count)
        s_values, s_vectors = _eigh(covariances.gradient[name], count)
        bases[name] = Eigenbasis(a_vectors, a_values, s_vectors, s_values)
    return bases


def lambda_sums(
    model: nn.Module,
    modules: dict[str, nn.Linear],
    eigenbases: dict[str, Eigenbasis],
    batches: Iterable[Batch],
    *,
    fisher: FisherKind = "true",
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    precision: Precision = "fp32",
    projections: Mapping[str, ModuleProjection] | None = None,
) -> LambdaSums:
    """Accumulate ``Σ_n (Q_Sᵀ G_n Q_A)²`` per module over the sequences of ``batches``.

    ``G_n`` is never formed in the original basis: ``a`` and ``g`` are first rotated into the
    eigenbases, then ``Q_Sᵀ G_n Q_A = (g Q_S)ᵀ (a Q_A)`` is one batched matmul
    ``[B, out, T] @ [B, T, in']`` for the whole batch. With ``projections`` (the same as the
    eigenbases were fitted with), ``a`` and ``g`` are projected first.
    """
    missing = set(modules) - set(eigenbases)
    if missing:
        raise ValueError(f"no eigenbasis for tracked modules {sorted(missing)}")
    device = next(model.parameters()).device
    recorder, shapes = _recorder(model, modules, projections)
    # rotations and per-batch products in the working dtype, sums in dtype
    work = working_dtype(model)
    rotations = {
        name: (
            eigenbases[name].activation_eigenvectors.to(device=device, dtype=work),
            eigenbases[name].gradient_eigenvectors.to(device=device, dtype=work),
        )
        for name in modules
    }
    for name, (out_dim, in_dim) in shapes.items():
        expected = (rotations[name][1].shape[0], rotations[name][0].shape[0])
        if expected != (out_dim, in_dim):
            raise ValueError(
                f"eigenbasis of module {name!r} is for gradients of shape {expected}, the tracked "
                f"module's are {(out_dim, in_dim)}: fitted with a different projection?"
            )
    sums = {name: torch.zeros(shape, dtype=dtype, device=device) for name, shape in shapes.items()}
    n_sequences = 0
    same_bases: dict[tuple[str, str], bool] = {}

    def same_basis(first: str, second: str) -> bool:
        if (first, second) not in same_bases:
            same_bases[first, second] = first == second or torch.equal(
                rotations[first][0], rotations[second][0]
            )
        return same_bases[first, second]

    with evaluation_mode(model), tracked_parameters_require_grad({}, model):
        for ids, loss_mask in _sliced(batches, device, modules):
            _backward_recorded(model, recorder, ids, loss_mask, fisher, seed, precision)
            n_sequences += ids.shape[0]
            # a Q_A once per distinct (input, Q_A): modules sharing an input share A, hence Q_A
            rotated_inputs: dict[int, list[tuple[str, torch.Tensor]]] = {}
            for name in modules:
                q_a, q_s = rotations[name]
                rotated = None
                for a, g in recorder.pairs(name):
                    rotated_a = next(
                        (
                            r
                            for owner, r in rotated_inputs.get(id(a), ())
                            if same_basis(owner, name)
                        ),
                        None,
                    )
                    if rotated_a is None:
                        rotated_a = a.to(work) @ q_a
                        rotated_inputs.setdefault(id(a), []).append((name, rotated_a))
                    product = torch.bmm((g.to(work) @ q_s).transpose(1, 2), rotated_a)
                    rotated = product if rotated is None else rotated + product
                sums[name] += rotated.square().sum(dim=0)
    return LambdaSums(sums, n_sequences)


@dataclass
class EkfacFactors:
    """Per-module eigenbases, eigenvalues and damping of an (E)K-FAC curvature; applies its inverse.

    ``eigenvalues[name]`` is ``[out, in']``: the corrected eigenvalues Λ for EK-FAC, or the
    Kronecker products of the covariance eigenvalues for plain K-FAC (``kind="kfac"``).
    """

    activation_eigenvectors: dict[str, torch.Tensor]
    gradient_eigenvectors: dict[str, torch.Tensor]
    eigenvalues: dict[str, torch.Tensor]
    damping: dict[str, float]
    kind: Literal["ekfac", "kfac"] = "ekfac"

    @classmethod
    def from_lambda(
        cls,
        eigenbases: dict[str, Eigenbasis],
        lambdas: LambdaSums,
        damping: float | Literal["auto"] = "auto",
    ) -> EkfacFactors:
        """EK-FAC: ``Λ = Σ_n (Q_Sᵀ G_n Q_A)² / n_sequences``."""
        if lambdas.n_sequences == 0:
            raise ValueError("Λ was accumulated over zero sequences")
        values = {k: v.to(torch.float64) / lambdas.n_sequences for k, v in lambdas.sums.items()}
        return cls._build(eigenbases, values, damping, "ekfac")

    @classmethod
    def kfac(
        cls,
        eigenbases: dict[str, Eigenbasis],
        covariances: CovarianceSums,
        damping: float | Literal["auto"] = "auto",
    ) -> EkfacFactors:
        """Plain K-FAC, for comparison: eigenvalues ``T · λ_S λ_Aᵀ`` without the EK-FAC correction.

        ``T = n_tokens / n_sequences`` (mean scored tokens per sequence) puts K-FAC on the same
        per-sequence scale as EK-FAC's Λ (kronfluence omits it; with ``damping="auto"`` the scale
        cancels in every score ratio).
        """
        values = {}
        for name, basis in eigenbases.items():
            tokens_per_sequence = covariances.n_tokens[name] / covariances.n_sequences
            values[name] = tokens_per_sequence * torch.outer(
                basis.gradient_eigenvalues, basis.activation_eigenvalues
            )
        return cls._build(eigenbases, values, damping, "kfac")

    @classmethod
    def _build(cls, eigenbases, values, damping, kind) -> EkfacFactors:
        if damping != "auto" and (not isinstance(damping, int | float) or damping < 0):
            raise ValueError(f"damping must be 'auto' or a non-negative number, got {damping!r}")
        return cls(
            activation_eigenvectors={k: b.activation_eigenvectors for k, b in eigenbases.items()},
            gradient_eigenvectors={k: b.gradient_eigenvectors for k, b in eigenbases.items()},
            eigenvalues=values,
            damping={
                k: DAMPING_SCALE * float(v.mean()) if damping == "auto" else float(damping)
                for k, v in values.items()
            },
            kind=kind,
        )

    def with_damping(self, damping: float | None, damping_factor: float) -> EkfacFactors:
        """These factors with the configured damping: fixed, or ``damping_factor · mean(Λ)``
        per module (in place; returned for chaining)."""
        self.damping = {
            name: float(damping) if damping is not None else damping_factor * float(values.mean())
            for name, values in self.eigenvalues.items()
        }
        return self

    @property
    def modules(self) -> list[str]:
        return list(self.eigenvalues)

    def ihvp(self, gradients: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``Q_S [(Q_Sᵀ V Q_A) / (Λ + λ)] Q_Aᵀ`` per module, in float64."""
        missing = set(self.eigenvalues) - set(gradients)
        if missing:
            raise ValueError(f"gradient lacks tracked modules {sorted(missing)}")
        out = {}
        for name, values in self.eigenvalues.items():
            q_a = self.activation_eigenvectors[name]
            q_s = self.gradient_eigenvectors[name]
            v = gradients[name].to(device=q_a.device, dtype=q_a.dtype)
            if v.shape != values.shape:
                raise ValueError(
                    f"gradient of module {name!r} has shape {tuple(v.shape)}, "
                    f"factors expect {tuple(values.shape)}"
                )
            rotated = (q_s.T @ v @ q_a) / (values + self.damping[name])
            out[name] = q_s @ rotated @ q_a.T
        return out
