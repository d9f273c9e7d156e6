"""Data layer: domain sources, tokenizer, token streams, validation tasks and the mixture sampler.

Everything the workflow's data rules need is re-exported here; see each module for details:
:mod:`~tikmix.data.sources` (reading domain files), :mod:`~tikmix.data.tokenizer`,
:mod:`~tikmix.data.domains` (``tokenize_domain``), :mod:`~tikmix.data.tasks` (``tokenize_task``),
:mod:`~tikmix.data.sampler` (``sample_mixture``), :mod:`~tikmix.data.synthetic` (a corpus with
planted structure for tests) and :mod:`~tikmix.data.demo` (the demo's real data).
"""

from tikmix.data.domains import is_heldout, tokenize_domain
from tikmix.data.errors import DataError
from tikmix.data.sampler import (
    MixturePlan,
    MixtureSample,
    iter_batches,
    largest_remainder,
    load_streams,
    plan_mixture,
    sample_mixture,
)
from tikmix.data.sources import DomainSource, validate_sources
from tikmix.data.synthetic import SyntheticCorpus, make_synthetic_corpus
from tikmix.data.tasks import read_task, tokenize_task
from tikmix.data.tokenizer import (
    eos_id,
    load_tokenizer,
    sample_training_text,
    save_tokenizer,
    token_dtype,
    train_tokenizer,
    vocab_size,
)

__all__ = [
    "DataError",
    "DomainSource",
    "MixturePlan",
    "MixtureSample",
    "SyntheticCorpus",
    "eos_id",
    "is_heldout",
    "iter_batches",
    "largest_remainder",
    "load_streams",
    "load_tokenizer",
    "make_synthetic_corpus",
    "plan_mixture",
    "read_task",
    "sample_mixture",
    "sample_training_text",
    "save_tokenizer",
    "token_dtype",
    "tokenize_domain",
    "tokenize_task",
    "train_tokenizer",
    "validate_sources",
    "vocab_size",
]
