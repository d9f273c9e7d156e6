"""Compute accounting: records read from stores and JSON, summed per method and component."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tikmix.analysis.compute import (
    ComputeRecordError,
    compute_tables,
    read_compute,
    total_compute,
)
from tikmix.influence.store import IncompleteStoreError, write_store


def _store(path, tokens, flops):
    return write_store(
        path,
        [("m/x", np.zeros(2))],
        {"kind": "gradient_sums", "compute": {"tokens": tokens, "flops": flops}},
    )


def _json(path, tokens, flops, **extra):
    path.write_text(
        json.dumps({"method": "x", "compute": {"tokens": tokens, "flops": flops}, **extra})
    )
    return path


def test_records_from_stores_and_json_add_up(tmp_path):
    paths = [_store(tmp_path / "g.zarr", 100, 6e5), _json(tmp_path / "m.json", 20, 1.5e3)]
    assert read_compute(paths[0]).flops == 6e5
    total = total_compute(paths)
    assert (total.tokens, total.flops) == (120, 6e5 + 1.5e3)


def test_tables_sum_components_and_divide_by_regmix(tmp_path):
    influence = {
        "domain gradients": [_store(tmp_path / f"d{i}.zarr", 1000, 6e6) for i in range(3)],
        "EK-FAC": [_store(tmp_path / "cov.zarr", 500, 3e6), _store(tmp_path / "eig.zarr", 0, 9e3)],
        "influence matrix": [_json(tmp_path / "influence.json", 0, 40)],
    }
    sources = {
        "natural": {},
        "tikmix_d": {**influence, "solve": [_json(tmp_path / "d.json", 0, 0)]},
        "tikmix_m": {**influence, "direct measurements": [_json(tmp_path / "m.json", 4000, 2.4e7)]},
        "regmix": {"proxy runs": [_json(tmp_path / "r.json", 9000, 1e8)]},
    }
    summary, components = compute_tables(sources)
    flops = summary.set_index("method")["flops"]
    d_flops = 3 * 6e6 + 3e6 + 9e3 + 40
    assert flops.to_dict() == pytest.approx(
        {"natural": 0.0, "tikmix_d": d_flops, "tikmix_m": d_flops + 2.4e7, "regmix": 1e8}
    )
    assert summary.set_index("method").loc["tikmix_d", "tokens"] == 3000 + 500
    ratio = summary.set_index("method")["ratio_to_regmix"]
    assert ratio["tikmix_m"] == pytest.approx((d_flops + 2.4e7) / 1e8)
    assert ratio["regmix"] == 1.0
    row = components.set_index(["method", "component"]).loc[("tikmix_d", "EK-FAC")]
    assert (row["n_records"], row["flops"]) == (2, 3e6 + 9e3)
    summary, _ = compute_tables({"tikmix_d": sources["tikmix_d"]})
    assert "ratio_to_regmix" not in summary.columns


def test_missing_or_malformed_records_name_the_file(tmp_path):
    write_store(tmp_path / "bare.zarr", [], {"kind": "gradient_sums"})
    with pytest.raises(ComputeRecordError, match="bare.zarr"):
        read_compute(tmp_path / "bare.zarr")
    (tmp_path / "no.json").write_text(json.dumps({"weights": {}}))
    with pytest.raises(ComputeRecordError, match="no.json.*'compute'"):
        read_compute(tmp_path / "no.json")
    with pytest.raises(ComputeRecordError, match="compute.flops"):
        read_compute(_json(tmp_path / "neg.json", 1, -5))
    with pytest.raises(FileNotFoundError, match="absent.json"):
        read_compute(tmp_path / "absent.json")
    (tmp_path / "dead.zarr").mkdir()  # a store whose writer died
    with pytest.raises(IncompleteStoreError):
        read_compute(tmp_path / "dead.zarr")
