"""Prior mixtures and weight validation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from tikmix.core.mixture import MixtureInputError, read_mixture, validate_weights
from tikmix.mixing.priors import build_prior, natural_prior, prior_kind, uniform_prior

DOMAINS = ["web", "code", "books"]
TOKENS = {"web": 600.0, "code": 300.0, "books": 100.0}


def test_natural_prior_is_proportional_to_tokens():
    w = natural_prior(TOKENS, domains=DOMAINS)
    assert w.index.tolist() == DOMAINS
    np.testing.assert_allclose(w.to_numpy(), [0.6, 0.3, 0.1])


def test_temperature_tempers_towards_uniform():
    w = natural_prior(TOKENS, temperature=2.0)
    root = np.sqrt([600.0, 300.0, 100.0])
    np.testing.assert_allclose(w.to_numpy(), root / root.sum())
    flat = natural_prior(TOKENS, temperature=1e6)
    np.testing.assert_allclose(flat.to_numpy(), 1 / 3, atol=1e-5)
    # Huge counts with a sharp temperature must not overflow.
    sharp = natural_prior({"a": 1e12, "b": 5e11}, temperature=0.01)
    assert sharp["a"] == pytest.approx(1.0) and np.isfinite(sharp).all()


def test_uniform_prior():
    np.testing.assert_allclose(uniform_prior(DOMAINS).to_numpy(), 1 / 3)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_read_prior_from_file_and_from_a_mixture_document(tmp_path, suffix):
    weights = {"books": 0.25, "web": 0.5, "code": 0.25}
    path = tmp_path / f"prior{suffix}"
    path.write_text(json.dumps(weights) if suffix == ".json" else yaml.safe_dump(weights))
    w = read_mixture(path, DOMAINS)
    assert w.to_dict() == {"web": 0.5, "code": 0.25, "books": 0.25}
    document = tmp_path / "stage.json"
    document.write_text(json.dumps({"method": "tikmix_d", "weights": weights}))
    assert read_mixture(document, DOMAINS).to_dict() == w.to_dict()


def test_one_prior_grammar(tmp_path):
    assert build_prior("uniform", DOMAINS).to_dict() == uniform_prior(DOMAINS).to_dict()
    np.testing.assert_allclose(build_prior("natural", DOMAINS, TOKENS), [0.6, 0.3, 0.1])
    tempered = build_prior("natural:2", DOMAINS, TOKENS)
    np.testing.assert_allclose(tempered, natural_prior(TOKENS, 2.0))
    with pytest.raises(MixtureInputError, match="temperature is not a number"):
        build_prior("natural:warm", DOMAINS, TOKENS)
    with pytest.raises(MixtureInputError, match="needs the token count"):
        build_prior("natural", DOMAINS)
    path = tmp_path / "prior.json"
    path.write_text(json.dumps({"web": 0.5, "code": 0.25, "books": 0.25}))
    assert build_prior(str(path), DOMAINS).to_dict() == {"web": 0.5, "code": 0.25, "books": 0.25}
    assert [prior_kind(s) for s in ("natural", "natural:0.5", "uniform", str(path))] == [
        "natural",
        "natural",
        "uniform",
        "file",
    ]


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"web": 0.5, "code": 0.5}, r"no weight for domain\(s\) \['books'\]"),
        ({"web": 0.5, "code": 0.25, "books": 0.25, "math": 0.0}, r"unknown domain\(s\) \['math'\]"),
        ({"web": 1.25, "code": -0.25, "books": 0.0}, "domain 'code' is negative"),
        ({"web": 0.5, "code": 0.25, "books": 0.2}, r"sum to 0\.95, not 1"),
        ({"web": float("nan"), "code": 0.5, "books": 0.5}, "domain 'web' is NaN"),
        ({"web": "half", "code": 0.5, "books": 0.5}, "domain 'web' is not a number"),
    ],
)
def test_validation_names_the_problem(weights, message):
    with pytest.raises(MixtureInputError, match=message):
        validate_weights(weights, DOMAINS, source="prior.json")


def test_validation_tolerance_and_order():
    w = validate_weights(pd.Series({"books": 0.2, "web": 0.5, "code": 0.3 + 5e-7}), DOMAINS)
    assert w.index.tolist() == DOMAINS
    with pytest.raises(MixtureInputError, match="sum to"):
        validate_weights({"books": 0.2, "web": 0.5, "code": 0.3 + 2e-6}, DOMAINS)


def test_bad_prior_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_mixture(tmp_path / "missing.json", DOMAINS)
    bad = tmp_path / "bad.json"
    bad.write_text('{"web": NaN, "code": 0.5, "books": 0.5}')
    with pytest.raises(MixtureInputError, match=r"bad\.json: weight of domain 'web' is NaN"):
        read_mixture(bad, DOMAINS)
    with pytest.raises(MixtureInputError, match=r"no token count for domain\(s\) \['books'\]"):
        natural_prior({"web": 1.0, "code": 2.0}, domains=DOMAINS)
    with pytest.raises(MixtureInputError, match="temperature must be > 0"):
        natural_prior(TOKENS, temperature=0.0)
