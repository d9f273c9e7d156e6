"""Tokenizer: train a byte-level BPE on a bounded sample of the domains, or load a given one.

Convention (docs/architecture.md): ``<|endoftext|>`` has id 0 and is both the EOS between documents
and the padding id. A byte-level BPE never loses information, so ``decode(encode(t)) == t`` for any
Unicode string ``t``. A user-supplied ``tokenizer.json`` is accepted when it has an EOS-like special
token; :func:`eos_id` says which id that is (0 for tokenizers trained here).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from tikmix.data.atomic import atomic_output
from tikmix.data.errors import DataError
from tikmix.data.sources import DomainSource, iter_texts, resolve_files, source_kind

EOS_TOKEN = "<|endoftext|>"
# Special tokens that other tokenizer families use as end-of-document markers, in preference order.
EOS_LIKE_TOKENS = (EOS_TOKEN, "<|end_of_text|>", "</s>", "<eos>", "<|eos|>", "[SEP]")


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, out_path: str | Path | None = None
) -> Tokenizer:
    """Train a byte-level BPE with ``<|endoftext|>`` = id 0 and optionally save it (atomically).

    Deterministic for a given text sequence: the trainer counts pairs and breaks ties by
    the pair itself, independently of threading. ``vocab_size`` counts the 256 byte symbols and the
    special token, so it must be at least 257.
    """
    if vocab_size < 257:
        raise DataError(f"vocab_size={vocab_size} is too small for a byte-level BPE (need >= 257)")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    if out_path is not None:
        save_tokenizer(tokenizer, out_path)
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, out_path: str | Path) -> None:
    """Write ``tokenizer.json`` through a temporary file and an atomic rename."""
    with atomic_output(out_path) as tmp:
        tokenizer.save(str(tmp))


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a ``tokenizers`` ``tokenizer.json``; DataError if missing, unreadable or without EOS."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"tokenizer file not found: {path}")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust side raises a bare Exception for any parse error
        raise DataError(f"{path}: not a tokenizers tokenizer.json ({exc})") from None
    try:
        eos_id(tokenizer)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    return tokenizer


def eos_id(tokenizer: Tokenizer) -> int:
    """Id of the end-of-document token: the first of EOS_LIKE_TOKENS registered as special."""
    specials = {
        tok.content: idx for idx, tok in tokenizer.get_added_tokens_decoder().items() if tok.special
    }
    for name in EOS_LIKE_TOKENS:
        if name in specials:
            return specials[name]
    raise DataError(
        f"tokenizer has no end-of-document special token (looked for {list(EOS_LIKE_TOKENS)}; "
        f"special tokens: {sorted(specials)})"
    )


def vocab_size(tokenizer: Tokenizer) -> int:
    """Number of token ids, special tokens included (ids are ``0 .. vocab_size - 1``)."""
    return tokenizer.get_vocab_size(with_added_tokens=True)


def token_dtype(n_vocab: int) -> np.dtype:
    """Storage dtype of token streams: uint16 when every id fits (vocab ≤ 65535), else uint32."""
    return np.dtype(np.uint16 if n_vocab <= 65535 else np.uint32)


def sample_training_text(
    sources: Mapping[str, DomainSource], char_budget: int, piece_chars: int = 4096
) -> Iterator[str]:
    """A bounded, deterministic text sample for tokenizer training, balanced across domains.

    Domains are visited round-robin (in mapping order); each visit takes the next piece of at most
    ``piece_chars`` characters from that domain's document stream (long documents are cut into
    pieces, pieces never span documents). Until a domain runs out, every domain thus contributes
    the same number of characters up to one piece, so a small domain is represented as well as a
    large one. Stops when ``char_budget`` characters have been yielded or every domain is exhausted.
    Token-file domains are skipped (they are already tokenized).
    """
    if char_budget <= 0 or piece_chars <= 0:
        raise DataError("char_budget and piece_chars must be positive")

    def pieces(source: DomainSource) -> Iterator[str]:
        for text in iter_texts(source):
            for i in range(0, len(text), piece_chars):
                yield text[i : i + piece_chars]

    streams = [pieces(src) for src in sources.values() if source_kind(resolve_files(src)) == "text"]
    remaining = char_budget
    while streams and remaining > 0:
        for stream in list(streams):
            piece = next(stream, None)
            if piece is None:
                streams.remove(stream)
                continue
            piece = piece[:remaining]
            remaining -= len(piece)
            yield piece
            if remaining <= 0:
                return
