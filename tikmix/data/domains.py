"""Tokenize one domain into ``train.npy`` / ``heldout.npy`` token streams and ``meta.json``.

Streams are 1-D arrays (uint16 when the vocabulary fits, else uint32) of documents, each followed
by the EOS id. Each document goes to held-out or train by a hash of ``(seed, document index)``
(:func:`is_heldout`), so the split is deterministic, independent of batch and chunk sizes, and a
document's assignment does not change when documents are added after it. Everything streams: texts
are encoded ``batch_documents`` at a time and tokens are appended to raw temporary files
``chunk_tokens`` at a time, then copied chunk-wise into ``.npy`` files that replace the outputs by
atomic renames (``meta.json`` last), so a failed run leaves no partial outputs behind.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from tikmix.core.atomic import atomic_output, write_json_atomic
from tikmix.core.digest import file_sha256
from tikmix.data.errors import DataError
from tikmix.data.sources import (
    DomainSource,
    iter_texts,
    iter_token_documents,
    open_token_file,
    resolve_files,
    source_kind,
)
from tikmix.data.tokenizer import (
    document_separator,
    load_tokenizer,
    token_dtype,
    tokenizer_file,
    vocab_size,
)


def is_heldout(seed: int, index: int, fraction: float) -> bool:
    """Whether document ``index`` is held out: a uniform hash of ``(seed, index)`` below ``fraction``."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2.0**64 < fraction


class TokenStreamWriter:
    """Append documents to a 1-D ``.npy`` token stream without holding it in memory.

    Documents (each followed by ``eos``) are buffered up to ``chunk_tokens`` tokens, then appended
    to a raw temporary file; :meth:`commit` copies the raw file chunk-wise into a temporary ``.npy``
    (``np.lib.format.open_memmap``) and renames it onto ``path``. :meth:`abort` removes temporaries.
    """

    def __init__(self, path: Path, dtype: np.dtype, eos: int, chunk_tokens: int) -> None:
        if chunk_tokens < 1:
            raise DataError(f"chunk_tokens must be positive, got {chunk_tokens}")
        self.path, self.dtype, self.chunk_tokens = Path(path), np.dtype(dtype), chunk_tokens
        self._eos = np.array([eos], dtype=self.dtype)
        fd, raw = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".raw"
        )
        self._raw_path = Path(raw)
        self._raw = os.fdopen(fd, "wb")
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self.n_tokens = 0
        self.n_documents = 0
        self.max_write = 0  # largest number of tokens written at once (the memory bound)

    def add_document(self, tokens: np.ndarray) -> None:
        """Append one document and its EOS."""
        for start in range(0, len(tokens), self.chunk_tokens):
            piece = np.asarray(tokens[start : start + self.chunk_tokens]).astype(self.dtype)
            self._push(piece)
        self._push(self._eos)
        self.n_documents += 1

    def _push(self, piece: np.ndarray) -> None:
        if self._buffered + len(piece) > self.chunk_tokens:
            self._flush()
        self._buffer.append(piece)
        self._buffered += len(piece)
        self.n_tokens += len(piece)

    def _flush(self) -> None:
        if self._buffer:
            np.concatenate(self._buffer).tofile(self._raw)
            self.max_write = max(self.max_write, self._buffered)
            self._buffer, self._buffered = [], 0

    def commit(self) -> None:
        """Write the ``.npy`` next to ``path`` and atomically rename it into place."""
        self._flush()
        self._raw.close()
        try:
            with atomic_output(self.path, suffix=".npy") as tmp:
                if self.n_tokens == 0:
                    np.save(tmp, np.empty(0, dtype=self.dtype))
                    return
                out = np.lib.format.open_memmap(
                    tmp, mode="w+", dtype=self.dtype, shape=(self.n_tokens,)
                )
                raw = np.memmap(self._raw_path, dtype=self.dtype, mode="r", shape=(self.n_tokens,))
                for start in range(0, self.n_tokens, self.chunk_tokens):
                    out[start : start + self.chunk_tokens] = raw[start : start + self.chunk_tokens]
                out.flush()
                del out, raw
        finally:
            self._raw_path.unlink(missing_ok=True)

    def abort(self) -> None:
        """Discard everything written so far."""
        self._raw.close()
        self._raw_path.unlink(missing_ok=True)


def _text_documents(
    source: DomainSource, files: list[Path], tokenizer, batch_documents: int
) -> Iterator[np.ndarray]:
    texts = iter_texts(source, files)
    while batch := list(islice(texts, batch_documents)):
        for enc in tokenizer.encode_batch(batch, add_special_tokens=False):
            if enc.ids:
                yield np.asarray(enc.ids, dtype=np.int64)


def _token_documents(
    source: DomainSource, files: list[Path], eos: int, n_vocab: int, chunk_tokens: int
) -> Iterator[np.ndarray]:
    for path in files:
        tokens = open_token_file(path, source.dtype)
        for start, stop in iter_token_documents(path, tokens, eos, n_vocab, chunk_tokens):
            yield tokens[start:stop]  # a view into the memory map; the writer copies it chunk-wise


def tokenize_domain(
    source: DomainSource,
    tokenizer_path: str | Path,
    out_dir: str | Path,
    *,
    seed: int = 0,
    heldout_fraction: float = 0.05,
    max_documents: int | None = None,
    max_tokens: int | None = None,
    batch_documents: int = 256,
    chunk_tokens: int = 1 << 20,
    special_tokens: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Tokenize a domain into ``out_dir/{train,heldout}.npy`` and ``out_dir/meta.json``.

    Args:
        source: the domain's files (text or pre-tokenized; token files skip the tokenizer, but
            every id is checked against the tokenizer's vocabulary).
        tokenizer_path: ``tokenizer.json`` (its EOS id terminates documents; its sha256 is recorded).
        out_dir: created if missing.
        seed, heldout_fraction: document ``i`` is held out when :func:`is_heldout` says so. When
            ``heldout_fraction > 0`` and there are at least two documents, at least one document is
            held out and at least one is kept for training: the last document is moved to the empty
            side if the hash left one side empty.
        max_documents: read at most this many documents (train and held-out together).
        max_tokens: cap on the tokens written (train and held-out, EOS included); the document that
            crosses the cap is truncated so that exactly ``max_tokens`` tokens are written.
        batch_documents: texts encoded per ``encode_batch`` call.
        chunk_tokens: tokens buffered before a write to disk (bounds memory with batch_documents).
        special_tokens: the checkpoint's EOS/BOS (:func:`tikmix.data.tokenizer.checkpoint_special_tokens`);
            its EOS, when given, separates documents instead of the tokenizer's.

    Returns:
        The meta dict written to ``meta.json`` (keys as in docs/architecture.md).

    Raises:
        DataError: bad sources (see :mod:`tikmix.data.sources`), an out-of-vocabulary id in a token
            file, bad arguments, or an empty domain (no document with at least one token).
    """
    if not 0.0 <= heldout_fraction < 1.0:
        raise DataError(
            f"domain {source.name!r}: heldout_fraction must be in [0, 1), got {heldout_fraction}"
        )
    for cap_name, cap in (("max_documents", max_documents), ("max_tokens", max_tokens)):
        if cap is not None and cap < (2 if cap_name == "max_tokens" else 1):
            raise DataError(f"domain {source.name!r}: {cap_name}={cap} leaves no document")
    tokenizer = load_tokenizer(tokenizer_path)
    special = dict(special_tokens or {})
    eos = document_separator(tokenizer, special.get("eos"), str(special.get("eos_source")))
    n_vocab = vocab_size(tokenizer)
    dtype = token_dtype(n_vocab)
    files = resolve_files(source)
    if source_kind(files) == "text":
        documents = _text_documents(source, files, tokenizer, batch_documents)
    else:
        documents = _token_documents(source, files, eos, n_vocab, chunk_tokens)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    train = TokenStreamWriter(out_dir / "train.npy", dtype, eos, chunk_tokens)
    heldout = TokenStreamWriter(out_dir / "heldout.npy", dtype, eos, chunk_tokens)
    try:
        # The latest document is kept back until the next one arrives, so that the end-of-stream
        # rule (no side left empty) can still choose its destination.
        pending: tuple[np.ndarray, bool] | None = None
        n_docs = n_written = 0
        for doc in documents:
            if max_tokens is not None:
                room = max_tokens - n_written - 1
                if room <= 0:
                    break
                doc = doc[:room]
            if pending is not None:
                (heldout if pending[1] else train).add_document(pending[0])
            pending = (doc, is_heldout(seed, n_docs, heldout_fraction))
            n_docs += 1
            n_written += len(doc) + 1
            if max_documents is not None and n_docs >= max_documents:
                break
        if pending is None:
            raise DataError(
                f"domain {source.name!r}: no documents (with at least one token) in "
                f"{len(files)} file(s) matching {list(source.paths)}"
            )
        doc, to_heldout = pending
        if heldout_fraction > 0 and n_docs >= 2:
            if heldout.n_documents == 0:
                to_heldout = True
            elif train.n_documents == 0:
                to_heldout = False
        (heldout if to_heldout else train).add_document(doc)
        train.commit()
        heldout.commit()
    except BaseException:
        train.abort()
        heldout.abort()
        raise

    meta = {
        "domain": source.name,
        "dtype": dtype.name,
        "vocab_size": n_vocab,
        "seed": seed,
        "heldout_fraction": heldout_fraction,
        "n_documents_train": train.n_documents,
        "n_documents_heldout": heldout.n_documents,
        "n_tokens_train": train.n_tokens,
        "n_tokens_heldout": heldout.n_tokens,
        "sources": [
            {"path": str(p), "sha256": file_sha256(p), "bytes": p.stat().st_size} for p in files
        ],
        "tokenizer_sha256": file_sha256(tokenizer_file(tokenizer_path)),
        # Documents are packed into windows, separated by eos_id only: no BOS is inserted, so a
        # window starts mid-document as in pre-training with packing.
        "eos_id": int(eos),
        "eos_source": special.get("eos_source") or "tokenizer",
        "bos_id": special.get("bos"),
        "bos_added": False,
    }
    write_json_atomic(out_dir / "meta.json", meta)
    return meta
