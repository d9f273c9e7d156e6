"""The data stages of the workflow, one function per rule (scripts only pass arguments).

Like :mod:`tikmix.influence.stages` and :mod:`tikmix.mixing.stages`: each function takes the
rule's settings and paths as keyword arguments, writes its outputs and logs what it did.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tikmix.data import domains as domain_data
from tikmix.data import tokenizer
from tikmix.data.config import domain_sources

log = logging.getLogger(__name__)


def train_tokenizer(
    *, domains: Mapping[str, Mapping[str, Any]], vocab_size: int, sample_chars: int, out: str | Path
) -> None:
    """Rule train_tokenizer: a byte-level BPE trained on a balanced sample of every domain
    (``domains`` is the config's ``domains`` mapping)."""
    text = tokenizer.sample_training_text(domain_sources(domains), sample_chars)
    trained = tokenizer.train_tokenizer(text, vocab_size, out)
    log.info("byte-level BPE with %d tokens -> %s", tokenizer.vocab_size(trained), out)


def use_tokenizer(*, tokenizer_path: str | Path, out: str | Path) -> None:
    """Rule use_tokenizer: the user's tokenizer (a ``tokenizer.json`` or a Hugging Face
    directory holding one), checked and copied into the results."""
    loaded = tokenizer.load_tokenizer(tokenizer_path)
    tokenizer.save_tokenizer(loaded, out)
    log.info("using %s (%d tokens)", tokenizer_path, tokenizer.vocab_size(loaded))


def tokenize_domain(
    *,
    domain: str,
    spec: Mapping[str, Any],
    tokenizer_path: str | Path,
    meta: str | Path,
    seed: int,
    heldout_fraction: float,
    max_tokens: int | None,
    special_tokens: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Rule tokenize_domain: the domain's token streams and ``meta.json`` (written beside
    ``meta``) from its config entry ``spec``."""
    summary = domain_data.tokenize_domain(
        domain_sources({domain: spec})[domain],
        tokenizer_path,
        Path(meta).parent,
        seed=seed,
        heldout_fraction=heldout_fraction,
        max_tokens=max_tokens,
        special_tokens=special_tokens,
    )
    log.info(
        "%s: %d train / %d held-out tokens",
        domain,
        summary["n_tokens_train"],
        summary["n_tokens_heldout"],
    )
    return summary
