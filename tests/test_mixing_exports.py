"""Mixture files: rounding, canonical JSON, YAML/CSV/Megatron exports and validating readers."""

from __future__ import annotations

import json
import math
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from tikmix.core.conventions import SIGN_CONVENTION
from tikmix.core.mixture import (
    MixtureInputError,
    megatron_data_path,
    mixture_document,
    parse_megatron_data_path,
    read_mixture,
    round_weights,
    write_mixture,
)

WEIGHTS = pd.Series({"web": 0.45, "code": 0.3, "books": 0.25})


def test_rounded_weights_sum_to_one():
    rng = np.random.default_rng(0)
    for _ in range(500):
        d = int(rng.integers(1, 65))
        digits = int(rng.integers(4, 11))
        w = rng.dirichlet(np.full(d, rng.choice([0.05, 1.0, 50.0])))
        w = pd.Series(w / w.sum(), index=[f"d{i}" for i in range(d)])
        rounded = round_weights(w, digits)
        assert abs(math.fsum(rounded) - 1.0) <= 1e-9
        assert (rounded >= 0).all()
        assert np.abs(rounded - w).max() <= d * 0.5 * 10.0**-digits + 1e-12
        # The decimals as written (fixed-point) sum to exactly 1.
        assert sum(Decimal(f"{v:.{digits}f}") for v in rounded) == 1


def test_rounding_with_too_few_digits_is_refused():
    w = pd.Series(np.full(30, 1 / 30), index=[f"d{i}" for i in range(30)])
    with pytest.raises(MixtureInputError, match="use more digits"):
        round_weights(pd.Series(np.r_[0.12, np.full(11, 0.08)], index=range(12)), 1)
    assert round_weights(w, 1).sum() == pytest.approx(1.0)


def test_canonical_document_round_trips(tmp_path):
    doc = mixture_document(
        WEIGHTS, method="tikmix_d", stage_tokens=1000, provenance={"ckpt": "c1"}, solver={"x": 1}
    )
    assert doc["sign_convention"] == SIGN_CONVENTION
    assert doc["provenance"]["ckpt"] == "c1" and "tikmix_version" in doc["provenance"]
    path = write_mixture(tmp_path / "w.json", doc)
    loaded = json.loads(path.read_text())
    assert set(loaded) == {
        "method",
        "weights",
        "stage_tokens",
        "provenance",
        "solver",
        "sign_convention",
    }
    pd.testing.assert_series_equal(
        read_mixture(path, ["web", "code", "books"]), WEIGHTS, check_names=False
    )


@pytest.mark.parametrize("suffix", ["yaml", "csv"])
def test_yaml_and_csv_exports_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(1)
    w = pd.Series(rng.dirichlet(np.ones(7)), index=[f"dom-{i}" for i in range(7)])
    path = write_mixture(tmp_path / f"w.{suffix}", mixture_document(w, method="m"), digits=6)
    back = read_mixture(path, w.index)
    np.testing.assert_allclose(back, w, atol=7 * 1e-6)
    assert abs(math.fsum(back) - 1) <= 1e-9


def test_megatron_line_splits_by_tokens_and_parses_back():
    prefixes = {
        "web": {"/data/web_0_text_document": 3.0, "/data/web_1_text_document": 1.0},
        "code": ["/data/code_text_document"],
        "books": ["/data/books_a", "/data/books_b"],
    }
    line = megatron_data_path(WEIGHTS, prefixes, digits=6)
    assert line.split() == [
        "0.337500", "/data/web_0_text_document",
        "0.112500", "/data/web_1_text_document",
        "0.300000", "/data/code_text_document",
        "0.125000", "/data/books_a",
        "0.125000", "/data/books_b",
    ]  # fmt: skip
    pd.testing.assert_series_equal(
        parse_megatron_data_path(line, prefixes), WEIGHTS, check_names=False
    )
    assert parse_megatron_data_path(line)["/data/books_b"] == pytest.approx(0.125)


def test_megatron_random_weights_parse_back():
    rng = np.random.default_rng(2)
    for _ in range(50):
        d = int(rng.integers(1, 20))
        w = pd.Series(rng.dirichlet(np.ones(d)), index=[f"d{i}" for i in range(d)])
        prefixes = {k: [f"/p/{k}_{s}" for s in range(int(rng.integers(1, 4)))] for k in w.index}
        line = megatron_data_path(w, prefixes, digits=8)
        back = parse_megatron_data_path(line, prefixes)
        np.testing.assert_allclose(back, w, atol=1e-7)
        assert abs(math.fsum(float(x) for x in line.split()[::2]) - 1) <= 1e-9


def test_megatron_errors():
    with pytest.raises(MixtureInputError, match="no shard prefix for domain 'books'"):
        megatron_data_path(WEIGHTS, {"web": ["a"], "code": ["b"]})
    with pytest.raises(MixtureInputError, match=r"unknown domain\(s\) \['math'\]"):
        megatron_data_path(WEIGHTS, {"web": ["a"], "code": ["b"], "books": ["c"], "math": ["d"]})
    with pytest.raises(MixtureInputError, match="prefix 'x' belongs to no domain"):
        parse_megatron_data_path("1.0 x", {"web": ["a"]})
    with pytest.raises(MixtureInputError, match="pairs"):
        parse_megatron_data_path("0.5 a 0.5", None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"weights": {"web": 0.5, "code": 0.4}}', r"sum to 0\.9"),
        ('{"weights": {"web": NaN, "code": 1.0}}', "domain 'web' is NaN"),
        ('{"weights": {"web": 1.5, "code": -0.5}}', "domain 'code' is negative"),
        ('{"weights": {"web": 0.5, "code": 0, "math": 0.5}}', r"unknown domain\(s\) \['math'\]"),
    ],
)
def test_readers_validate(tmp_path, text, message):
    path = tmp_path / "w.json"
    path.write_text(text)
    with pytest.raises(MixtureInputError, match=rf"w\.json.*{message}"):
        read_mixture(path, ["web", "code"])


def test_csv_reader_validates(tmp_path):
    path = tmp_path / "w.csv"
    path.write_text("domain,weight\nweb,0.5\ncode,0.6\n")
    with pytest.raises(MixtureInputError, match=r"w\.csv: weights sum to 1\.1"):
        read_mixture(path)
    path.write_text("name,w\nweb,1.0\n")
    with pytest.raises(MixtureInputError, match="expected columns 'domain,weight'"):
        read_mixture(path)
