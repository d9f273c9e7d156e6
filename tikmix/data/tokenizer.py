"""Tokenizer: train a byte-level BPE on a bounded sample of the domains, or load a given one.

Convention (docs/architecture.md): ``<|endoftext|>`` has id 0 and is both the EOS between documents
and the padding id. A byte-level BPE never loses information, so ``decode(encode(t)) == t`` for any
Unicode string ``t``. A user-supplied ``tokenizer.json`` is accepted when it has an EOS-like special
token; :func:`eos_id` says which id that is (0 for tokenizers trained here).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from tikmix.core.atomic import atomic_output
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


def tokenizer_file(path: str | Path) -> Path:
    """The ``tokenizer.json`` of ``path``: the file itself, or the one inside a Hugging Face
    tokenizer (or model) directory. DataError naming the directory when it has none."""
    path = Path(path)
    if path.is_dir():
        inside = path / "tokenizer.json"
        if not inside.is_file():
            found = sorted(p.name for p in path.iterdir())[:12]
            raise DataError(
                f"tokenizer directory {path} has no tokenizer.json (found {found}); tikmix reads "
                "the fast-tokenizer file: save it with tokenizer.save_pretrained(...)"
            )
        return inside
    return path


def _first_id(value: object) -> int | None:
    """A token id from a config value: an int, the first of a list, or None."""
    if isinstance(value, list):
        value = value[0] if value else None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def checkpoint_special_tokens(checkpoint_dir: str | Path) -> dict[str, object]:
    """EOS and BOS ids a Hugging Face checkpoint was trained with, and where each was read.

    ``config.json`` first, then ``generation_config.json`` (a list of EOS ids gives its first).
    A checkpoint without either file (a tikmix checkpoint) gives None for both.
    """
    found: dict[str, object] = {"eos": None, "bos": None, "eos_source": None, "bos_source": None}
    for name in ("config.json", "generation_config.json"):
        path = Path(checkpoint_dir) / name
        if not path.is_file():
            continue
        values = json.loads(path.read_text())
        for key in ("eos", "bos"):
            token = _first_id(values.get(f"{key}_token_id"))
            if found[key] is None and token is not None:
                found[key], found[f"{key}_source"] = token, str(path)
    return found


def agreed_special_tokens(checkpoints: Mapping[str, str | Path]) -> dict[str, object]:
    """:func:`checkpoint_special_tokens` shared by every checkpoint of a study (name -> dir).

    All None without checkpoints. DataError naming both files when two checkpoints disagree.
    """
    agreed = {"eos": None, "bos": None, "eos_source": None, "bos_source": None}
    for directory in checkpoints.values():
        tokens = checkpoint_special_tokens(directory)
        for key in ("eos", "bos"):
            if tokens[key] is None:
                continue
            if agreed[key] is not None and agreed[key] != tokens[key]:
                raise DataError(
                    f"{key}_token_id differs between checkpoints: {agreed[key]} in "
                    f"{agreed[key + '_source']}, {tokens[key]} in {tokens[key + '_source']}"
                )
            agreed[key], agreed[f"{key}_source"] = tokens[key], tokens[f"{key}_source"]
    return agreed


def document_separator(tokenizer: Tokenizer, model_eos: int | None, source: str = "") -> int:
    """The id written between documents: the model's EOS when known, else the tokenizer's.

    DataError naming ``source`` when the model's EOS is outside the tokenizer's vocabulary.
    """
    if model_eos is None:
        return eos_id(tokenizer)
    n_vocab = vocab_size(tokenizer)
    if not 0 <= model_eos < n_vocab:
        raise DataError(
            f"{source or 'checkpoint'}: eos_token_id {model_eos} is outside the tokenizer's "
            f"vocabulary of {n_vocab} ids: is tokenizer.path the checkpoint's tokenizer?"
        )
    return model_eos


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a ``tokenizers`` ``tokenizer.json`` (or a Hugging Face tokenizer directory holding
    one); DataError if missing, unreadable or without EOS."""
    path = tokenizer_file(path)
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
