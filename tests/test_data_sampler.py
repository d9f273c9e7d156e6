"""The mixture sampler: exact proportions, determinism, contiguous windows, errors."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from tikmix.data.errors import DataError
from tikmix.data.sampler import (
    MixtureSample,
    iter_batches,
    largest_remainder,
    load_streams,
    plan_mixture,
    sample_mixture,
)

SEQ_LEN = 8


@pytest.fixture
def streams():
    # Distinct value ranges per domain, and each stream strictly increasing, so a window's first
    # token identifies its domain and offset.
    return {
        "a": np.arange(0, 1000, dtype=np.uint16),
        "b": np.arange(10_000, 10_050, dtype=np.uint16),
        "c": np.arange(20_000, 20_009, dtype=np.uint16),  # exactly seq_len + 1 tokens
    }


def reference_allocation(weights, n):
    """Hamilton's method in exact rational arithmetic (ties to the earlier domain)."""
    quotas = [Fraction(w).limit_denominator(10**12) * n for w in weights]
    floors = [q.numerator // q.denominator for q in quotas]
    order = sorted(range(len(weights)), key=lambda d: (-(quotas[d] - floors[d]), d))
    for d in order[: n - sum(floors)]:
        floors[d] += 1
    return floors


def test_counts_are_the_largest_remainder_allocation_for_random_weights():
    rng = np.random.default_rng(0)
    lengths = {f"d{i}": 100 for i in range(7)}
    for trial in range(300):
        k = int(rng.integers(1, 8))
        w = rng.dirichlet(np.full(k, 0.5))
        if trial % 3 == 0 and k > 1:
            w[rng.integers(k)] = 0.0
            w /= w.sum()
        weights = {f"d{i}": float(x) for i, x in enumerate(w)}
        n_seq = int(rng.integers(1, 500))
        plan = plan_mixture(
            lengths, weights, n_seq * SEQ_LEN + int(rng.integers(SEQ_LEN)), SEQ_LEN, trial
        )
        counts = np.bincount(plan.domain_index, minlength=k)
        assert len(plan) == n_seq and counts.sum() == n_seq
        np.testing.assert_array_equal(counts, reference_allocation(list(weights.values()), n_seq))
        # the bound the contract promises: |p_hat - w| <= 1 / n_seq, and zero weight -> zero rows
        assert np.all(np.abs(counts / n_seq - w) <= 1.0 / n_seq + 1e-12)
        assert np.all(counts[w == 0] == 0)
        np.testing.assert_array_equal(counts, largest_remainder(w, n_seq))


def test_windows_are_contiguous_slices_of_their_domain(streams):
    weights = {"a": 0.5, "b": 0.3, "c": 0.2}
    sample = sample_mixture(streams, weights, n_tokens=100 * SEQ_LEN, seq_len=SEQ_LEN, seed=7)
    assert isinstance(sample, MixtureSample)
    assert sample.ids.dtype == np.int64 and sample.ids.shape == (100, SEQ_LEN + 1)
    assert sample.domains == ["a", "b", "c"]
    assert sample.counts() == {"a": 50, "b": 30, "c": 20}
    for ids, d, off in zip(sample.ids, sample.domain_index, sample.offsets, strict=True):
        stream = streams[sample.domains[d]]
        np.testing.assert_array_equal(ids, stream[off : off + SEQ_LEN + 1])
        assert 0 <= off <= len(stream) - SEQ_LEN - 1
    assert (sample.offsets[sample.domain_index == 2] == 0).all()  # the only window of stream c
    # shuffled: not grouped by domain
    assert not np.all(np.diff(sample.domain_index) >= 0)


def test_same_seed_same_sample_different_seed_different(streams):
    weights = {"a": 0.6, "b": 0.4}
    one = sample_mixture(streams, weights, 400, SEQ_LEN, seed=1)
    two = sample_mixture(streams, weights, 400, SEQ_LEN, seed=1)
    other = sample_mixture(streams, weights, 400, SEQ_LEN, seed=2)
    np.testing.assert_array_equal(one.ids, two.ids)
    np.testing.assert_array_equal(one.domain_index, two.domain_index)
    assert not np.array_equal(one.ids, other.ids)


def test_domain_offsets_do_not_depend_on_other_domains(streams):
    alone = sample_mixture(streams, {"a": 1.0}, 40 * SEQ_LEN, SEQ_LEN, seed=3)
    mixed = sample_mixture(streams, {"b": 0.5, "a": 0.5}, 80 * SEQ_LEN, SEQ_LEN, seed=3)
    np.testing.assert_array_equal(
        np.sort(alone.offsets), np.sort(mixed.offsets[mixed.domain_index == 1])
    )


def test_batches_and_lazy_plan_match_the_sample(streams):
    weights = {"a": 0.7, "b": 0.3}
    sample = sample_mixture(streams, weights, 50 * SEQ_LEN, SEQ_LEN, seed=0)
    batches = list(iter_batches(sample, batch_size=16))
    assert [len(b) for b in batches] == [16, 16, 16, 2]
    np.testing.assert_array_equal(np.concatenate(batches), sample.ids)
    plan = plan_mixture({k: len(v) for k, v in streams.items()}, weights, 50 * SEQ_LEN, SEQ_LEN, 0)
    np.testing.assert_array_equal(np.concatenate(list(plan.iter_batches(streams, 16))), sample.ids)
    np.testing.assert_array_equal(np.concatenate(list(iter_batches(sample.ids, 50))), sample.ids)


@pytest.mark.parametrize(
    ("weights", "kwargs", "pattern"),
    [
        ({"a": 0.5, "b": 0.4}, {}, r"weights sum to 0\.9, not 1"),
        ({"a": 1.2, "b": -0.2}, {}, r"weight of domain 'b' is negative"),
        ({"a": 0.5, "zzz": 0.5}, {}, r"unknown domain 'zzz'"),
        ({"a": float("nan"), "b": 1.0}, {}, r"domain 'a' is not a finite number"),
        ({}, {}, "weights are empty"),
        (
            {"a": 0.5, "c": 0.5},
            {"seq_len": 9},
            r"domain 'c': stream has 9 tokens, fewer than seq_len \+ 1 = 10",
        ),
        ({"a": 1.0}, {"n_tokens": 7}, r"n_tokens=7 is less than one sequence of seq_len=8"),
        ({"a": 1.0}, {"seq_len": 0}, r"seq_len must be positive"),
    ],
)
def test_errors(streams, weights, kwargs, pattern):
    args = {"n_tokens": 80, "seq_len": SEQ_LEN, "seed": 0, **kwargs}
    with pytest.raises(DataError, match=pattern):
        sample_mixture(streams, weights, **args)


def test_weight_tolerance_and_zero_weight_short_stream(streams):
    # within 1e-6 of one is accepted; a zero-weight stream may be shorter than a window
    sample = sample_mixture(streams, {"a": 0.5 + 4e-7, "b": 0.5, "c": 0.0}, 80, 9, seed=0)
    assert sample.counts()["c"] == 0


def test_load_streams_memory_maps(tmp_path):
    for name in ("x", "y"):
        (tmp_path / name).mkdir()
        np.save(tmp_path / name / "train.npy", np.arange(20, dtype=np.uint16))
    loaded = load_streams({n: tmp_path / n for n in ("x", "y")})
    assert isinstance(loaded["x"], np.memmap) and len(loaded["y"]) == 20
    with pytest.raises(DataError, match=r"domain 'x': token stream not found: .*heldout\.npy"):
        load_streams({"x": tmp_path / "x"}, split="heldout")
    with pytest.raises(DataError, match="split must be 'train' or 'heldout'"):
        load_streams({"x": tmp_path / "x"}, split="test")
