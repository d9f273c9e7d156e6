"""The mixture sampler: the only way sequences are drawn from domain token streams.

Training, EK-FAC fitting, domain gradients (weight 1 on one domain) and direct mixture measurements
all call :func:`sample_mixture` (docs/architecture.md, "Mixture sampler"):

* ``n_seq = n_tokens // seq_len`` sequences (each predicts ``seq_len`` tokens), each a contiguous
  window of ``seq_len + 1`` tokens at a uniformly random offset of one domain's stream, so documents
  are packed with the EOS between them exactly as they are stored;
* domain ``d`` gets ``n_d`` sequences, the largest-remainder (Hamilton) rounding of ``w_d · n_seq``:
  ``n_d`` is ``floor`` or ``ceil`` of ``w_d · n_seq``, hence ``|n_d / n_seq − w_d| < 1 / n_seq``;
* the order of the sequences is shuffled; everything is deterministic for a seed. Each domain's
  offsets come from a generator keyed by ``(seed, domain name)``, so they do not depend on the
  other domains of the mixture.

:func:`plan_mixture` draws only the (domain, offset) pairs; :meth:`MixturePlan.iter_batches` gathers
windows batch by batch, which keeps memory bounded for large token budgets.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tikmix.data.errors import DataError

WEIGHT_SUM_TOLERANCE = 1e-6


@dataclass(frozen=True)
class MixturePlan:
    """Which window each sequence is: ``domains[domain_index[i]]`` stream at ``offsets[i]``."""

    domains: list[str]
    domain_index: np.ndarray  # int64 [n_seq]
    offsets: np.ndarray  # int64 [n_seq]
    seq_len: int

    def __len__(self) -> int:
        return len(self.offsets)

    def gather(self, streams: Mapping[str, np.ndarray], rows: slice | np.ndarray = slice(None)):
        """Token windows of the selected sequences as int64 ``[k, seq_len + 1]``."""
        domain_index, offsets = self.domain_index[rows], self.offsets[rows]
        span = np.arange(self.seq_len + 1)
        out = np.empty((len(offsets), self.seq_len + 1), dtype=np.int64)
        for k, name in enumerate(self.domains):
            sel = np.flatnonzero(domain_index == k)
            if sel.size:
                out[sel] = streams[name][offsets[sel, None] + span]
        return out

    def iter_batches(
        self, streams: Mapping[str, np.ndarray], batch_size: int
    ) -> Iterator[np.ndarray]:
        """Gather the sequences ``batch_size`` at a time, in plan order (last batch may be short)."""
        _check_batch_size(batch_size)
        for start in range(0, len(self), batch_size):
            yield self.gather(streams, slice(start, start + batch_size))


@dataclass(frozen=True)
class MixtureSample:
    """Sampled sequences: ``ids[i]`` (int64, ``seq_len + 1`` tokens) comes from
    ``domains[domain_index[i]]``, starting at token ``offsets[i]`` of that domain's stream."""

    ids: np.ndarray
    domains: list[str]
    domain_index: np.ndarray
    offsets: np.ndarray

    def counts(self) -> dict[str, int]:
        """Number of sequences per domain."""
        n = np.bincount(self.domain_index, minlength=len(self.domains))
        return {name: int(c) for name, c in zip(self.domains, n, strict=True)}


def largest_remainder(weights: Sequence[float], n: int) -> np.ndarray:
    """Integers ``n_d ≥ 0`` summing to ``n`` with ``n_d ∈ {⌊w_d n⌋, ⌈w_d n⌉}`` (Hamilton's method).

    ``weights`` are normalised to sum 1 first; the leftover units go to the largest fractional
    parts, ties to the earlier domain.
    """
    w = np.asarray(weights, dtype=np.float64)
    quotas = w / w.sum() * n
    counts = np.floor(quotas).astype(np.int64)
    leftover = n - int(counts.sum())
    order = np.argsort(-(quotas - counts), kind="stable")
    counts[order[:leftover]] += 1
    return counts


def _check_weights(weights: Mapping[str, float], known: Mapping[str, int]) -> None:
    if not weights:
        raise DataError("mixture weights are empty")
    for name, w in weights.items():
        if name not in known:
            raise DataError(f"mixture weight for unknown domain {name!r} (known: {sorted(known)})")
        if not isinstance(w, (int, float, np.floating, np.integer)) or not math.isfinite(w):
            raise DataError(f"mixture weight of domain {name!r} is not a finite number: {w!r}")
        if w < 0:
            raise DataError(f"mixture weight of domain {name!r} is negative: {w}")
    total = math.fsum(float(w) for w in weights.values())
    if abs(total - 1.0) > WEIGHT_SUM_TOLERANCE:
        raise DataError(
            f"mixture weights sum to {total!r}, not 1 (tolerance {WEIGHT_SUM_TOLERANCE})"
        )


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise DataError(f"batch_size must be positive, got {batch_size}")


def plan_mixture(
    stream_lengths: Mapping[str, int],
    weights: Mapping[str, float],
    n_tokens: int,
    seq_len: int,
    seed: int,
) -> MixturePlan:
    """Draw the (domain, offset) of every sequence; see the module docstring for the rules.

    Domains absent from ``weights`` are not sampled; ``plan.domains`` is ``list(weights)``.

    Raises:
        DataError: weights empty, negative, non-finite, not summing to 1 (±1e-6) or naming an
            unknown domain; ``seq_len < 1``; ``n_tokens < seq_len``; a positively weighted stream
            shorter than ``seq_len + 1`` tokens.
    """
    _check_weights(weights, stream_lengths)
    if seq_len < 1:
        raise DataError(f"seq_len must be positive, got {seq_len}")
    n_seq = n_tokens // seq_len
    if n_seq < 1:
        raise DataError(f"n_tokens={n_tokens} is less than one sequence of seq_len={seq_len}")
    domains = list(weights)
    for name in domains:
        if weights[name] > 0 and stream_lengths[name] < seq_len + 1:
            raise DataError(
                f"domain {name!r}: stream has {stream_lengths[name]} tokens, fewer than "
                f"seq_len + 1 = {seq_len + 1}"
            )
    counts = largest_remainder([weights[name] for name in domains], n_seq)
    offsets = [
        np.random.default_rng(
            np.random.SeedSequence(seed, spawn_key=(zlib.crc32(name.encode()),))
        ).integers(0, stream_lengths[name] - seq_len, size=n, dtype=np.int64)
        if n
        else np.empty(0, dtype=np.int64)
        for name, n in zip(domains, counts, strict=True)
    ]
    domain_index = np.repeat(np.arange(len(domains), dtype=np.int64), counts)
    order = np.random.default_rng(seed).permutation(n_seq)
    return MixturePlan(domains, domain_index[order], np.concatenate(offsets)[order], seq_len)


def sample_mixture(
    streams: Mapping[str, np.ndarray],
    weights: Mapping[str, float],
    n_tokens: int,
    seq_len: int,
    seed: int,
) -> MixtureSample:
    """Sample ``n_tokens // seq_len`` windows of ``seq_len + 1`` tokens from a weighted mixture.

    Args:
        streams: domain → 1-D token stream (e.g. from :func:`load_streams`; memory maps are fine).
        weights: domain → weight (non-negative, summing to 1); domains not listed are not sampled.
        n_tokens: token budget (predicted tokens); ``n_seq = n_tokens // seq_len``.
        seq_len: tokens a model sees per sequence.
        seed: makes the sample reproducible.

    Returns:
        A :class:`MixtureSample`; ``ids`` is int64 ``[n_seq, seq_len + 1]``.
    """
    for name in weights:
        if name in streams and np.ndim(streams[name]) != 1:
            raise DataError(
                f"domain {name!r}: stream must be 1-D, got shape {np.shape(streams[name])}"
            )
    plan = plan_mixture({k: len(v) for k, v in streams.items()}, weights, n_tokens, seq_len, seed)
    return MixtureSample(plan.gather(streams), plan.domains, plan.domain_index, plan.offsets)


def iter_batches(
    sample_or_ids: MixtureSample | np.ndarray, batch_size: int
) -> Iterator[np.ndarray]:
    """Consecutive ``[≤batch_size, seq_len + 1]`` slices of a sample's ids (already shuffled)."""
    _check_batch_size(batch_size)
    ids = sample_or_ids.ids if isinstance(sample_or_ids, MixtureSample) else sample_or_ids
    for start in range(0, len(ids), batch_size):
        yield ids[start : start + batch_size]


def load_streams(
    domain_dirs: Mapping[str, str | Path], split: str = "train"
) -> dict[str, np.ndarray]:
    """Memory-map ``{dir}/{split}.npy`` for each domain (read-only, nothing loaded)."""
    if split not in ("train", "heldout"):
        raise DataError(f"split must be 'train' or 'heldout', got {split!r}")
    streams = {}
    for name, directory in domain_dirs.items():
        path = Path(directory) / f"{split}.npy"
        if not path.is_file():
            raise DataError(f"domain {name!r}: token stream not found: {path}")
        streams[name] = np.load(path, mmap_mode="r")
        if streams[name].ndim != 1:
            raise DataError(f"domain {name!r}: {path} is not a 1-D token stream")
    return streams


def mixture_batches(
    streams: Mapping[str, np.ndarray],
    weights: Mapping[str, float],
    steps: int,
    batch_size: int,
    seq_len: int,
    seed: int,
) -> Iterator[np.ndarray]:
    """``steps`` training batches ``[batch_size, seq_len + 1]`` drawn from the mixture ``weights``.

    The plan covers exactly ``steps · batch_size · seq_len`` tokens, so every batch is full;
    windows are gathered batch by batch (memory stays bounded).
    """
    plan = plan_mixture(
        {name: len(s) for name, s in streams.items()},
        {d: float(w) for d, w in weights.items()},
        steps * batch_size * seq_len,
        seq_len,
        seed,
    )
    return plan.iter_batches(streams, batch_size)
