"""sha256 of files: the one place that reads files' bytes into a digest.

Source and tokenizer records, the demo's pinned archives, checkpoint hashes, the CLI's input
records and the workflow's provenance cache (:mod:`tikmix.provenance`) all hash through here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

CHUNK_BYTES = 1 << 20


def _feed(digest, path: str | Path, chunk_bytes: int) -> None:
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            digest.update(block)


def file_sha256(path: str | Path, chunk_bytes: int = CHUNK_BYTES) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    _feed(digest, path, chunk_bytes)
    return digest.hexdigest()


def named_files_sha256(paths: Iterable[Path], chunk_bytes: int = CHUNK_BYTES) -> str:
    """One hex sha256 over several files, in the order given: each file's name, a NUL byte, then
    its bytes (renaming a file or moving bytes between files changes it)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        _feed(digest, path, chunk_bytes)
    return digest.hexdigest()
