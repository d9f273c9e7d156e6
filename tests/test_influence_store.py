"""Zarr stores: atomic writes, completion marker, round trips, chunking and reductions."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from test_influence_models import markov_tokens, tiny_model

from tikmix.influence import (
    IncompatibleStoresError,
    IncompleteStoreError,
    domain_gradient,
    fit_ekfac,
    load_factors,
    load_gradients,
    load_mean_gradients,
    open_store,
    reduce,
    reduce_gradient_stores,
    reduce_sum_stores,
    save_factors,
    save_gradients,
    select_modules,
    write_store,
)
from tikmix.influence import store as store_module

PROVENANCE = {"checkpoint": "sha256:abc", "domain": "news", "seed": 1}


@pytest.fixture(scope="module")
def model():
    return tiny_model(1)


def test_failed_write_leaves_nothing(tmp_path):
    def arrays():
        yield "a/x", np.ones((3, 4))
        raise RuntimeError("job killed")

    with pytest.raises(RuntimeError, match="job killed"):
        write_store(tmp_path / "s.zarr", arrays(), {"kind": "test"})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(IncompleteStoreError, match="no influence store"):
        open_store(tmp_path / "s.zarr")


def test_failed_rewrite_keeps_previous_store(tmp_path):
    path = write_store(tmp_path / "s.zarr", [("a/x", np.arange(4.0))], {"kind": "test"})

    def broken():
        yield "a/x", np.zeros(4)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_store(path, broken(), {"kind": "test"})
    np.testing.assert_array_equal(open_store(path)["a/x"], np.arange(4.0))
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]


def test_killed_writers_leftover_is_removed_by_the_next_successful_write(tmp_path):
    """A SIGKILLed writer leaves its temporary directory (nothing can clean up); the next
    complete write of the same store removes it, and leaves other stores' files alone."""
    import zarr

    for name in (".s.zarr.tmp-4242-deadbeef", ".other.zarr.tmp-4242-cafe0000"):
        zarr.open_group(tmp_path / name, mode="w").create_array("a", shape=(2,), dtype="f8")
    write_store(tmp_path / "s.zarr", [("a/x", np.arange(4.0))], {"kind": "test"})
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.zarr.tmp-4242-cafe0000", "s.zarr"]


def test_store_without_completion_attribute_is_incomplete(tmp_path):
    import zarr

    group = zarr.open_group(tmp_path / "half.zarr", mode="w")
    group.create_array("a", shape=(2,), dtype="float64")
    group.attrs.update({"kind": "gradient_sums"})
    with pytest.raises(IncompleteStoreError, match="incomplete"):
        open_store(tmp_path / "half.zarr")


def test_round_trip_chunking_and_snakemake_timestamp(tmp_path, model, monkeypatch):
    modules = select_modules(model)
    stats = domain_gradient(model, [markov_tokens(4, 8, seed=2)], modules)
    path = save_gradients(tmp_path / "g.zarr", stats, {**PROVENANCE, "token_range": [0, 32]})
    (path / ".snakemake_timestamp").touch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = load_gradients(path)
        attrs = open_store(path).attrs
    assert back.n_tokens == stats.n_tokens == 32 and back.n_sequences == 4
    for name in modules:
        torch.testing.assert_close(back.sums[name], stats.sums[name], rtol=0, atol=0)
    assert attrs["complete"] is True and attrs["format_version"] == store_module.FORMAT_VERSION
    assert attrs["checkpoint"] == "sha256:abc" and attrs["token_range"] == [0, 32]
    assert "code_version" in attrs
    # one directory per module, one chunk per small array, compressed with zstd
    import zarr

    group = zarr.open_group(path, mode="r")
    for name in modules:
        array = group[f"{name}/gradient"]
        assert array.chunks == array.shape
        assert "zstd" in str(array.compressors).lower()
    # large arrays are split into row chunks, never across modules
    monkeypatch.setattr(store_module, "CHUNK_BYTES", 8 * 10)
    big = write_store(tmp_path / "big.zarr", [("m/x", np.ones((7, 10)))], {"kind": "test"})
    assert zarr.open_group(big, mode="r")["m/x"].chunks == (1, 10)


def test_reduce_parts_equals_one_shot(tmp_path, model):
    modules = select_modules(model)
    ids = markov_tokens(12, 8, seed=3)
    parts = []
    for i, shard in enumerate(ids.chunk(3)):
        stats = domain_gradient(model, [shard], modules)
        parts.append(
            save_gradients(
                tmp_path / f"part-{i}.zarr",
                stats,
                {**PROVENANCE, "token_range": [32 * i, 32 * (i + 1)]},
            )
        )
    one_shot = domain_gradient(model, [ids], modules)
    mean, attrs = load_mean_gradients(reduce_gradient_stores(parts, tmp_path / "news.zarr"))
    assert attrs["n_tokens"] == 96 and attrs["n_sequences"] == 12
    assert [p["token_range"] for p in attrs["parts"]] == [[0, 32], [32, 64], [64, 96]]
    for name in modules:
        torch.testing.assert_close(mean[name], one_shot.mean()[name], rtol=1e-6, atol=1e-16)
    sums = load_gradients(reduce_sum_stores(parts, tmp_path / "sums.zarr"))
    expected = reduce(load_gradients(p) for p in parts)
    for name in modules:
        torch.testing.assert_close(sums.sums[name], expected.sums[name], rtol=1e-12, atol=0)


def test_reduce_rejects_incompatible_parts(tmp_path, model):
    modules = select_modules(model)
    stats = domain_gradient(model, [markov_tokens(2, 8, seed=4)], modules)
    a = save_gradients(tmp_path / "a.zarr", stats, PROVENANCE)
    b = save_gradients(tmp_path / "b.zarr", stats, {**PROVENANCE, "checkpoint": "sha256:def"})
    with pytest.raises(IncompatibleStoresError, match="checkpoint"):
        reduce_gradient_stores([a, b], tmp_path / "out.zarr")
    fewer = domain_gradient(
        model, [markov_tokens(2, 8, seed=4)], select_modules(model, r"mlp\.\w+_proj$")
    )
    c = save_gradients(tmp_path / "c.zarr", fewer, PROVENANCE)
    with pytest.raises(IncompatibleStoresError, match="arrays"):
        reduce_gradient_stores([a, c], tmp_path / "out.zarr")
    assert not (tmp_path / "out.zarr").exists()


def test_factors_round_trip(tmp_path, model):
    factors = fit_ekfac(model, [markov_tokens(6, 8, seed=5)], fisher="true", seed=2)
    back = load_factors(save_factors(tmp_path / "ekfac.zarr", factors, PROVENANCE))
    assert back.kind == "ekfac" and back.damping == factors.damping
    v = {n: torch.randn(e.shape, dtype=torch.float64) for n, e in factors.eigenvalues.items()}
    for name, x in factors.ihvp(v).items():
        torch.testing.assert_close(back.ihvp(v)[name], x, rtol=1e-12, atol=1e-14)
