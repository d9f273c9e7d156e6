"""Digests of settings and user inputs, computed when the workflow is parsed.

Snakemake reruns a job whose ``params`` changed, but only while the job's outputs carry the old
record: a rerun job killed after Snakemake deleted its outputs takes the record with it, and the
downstream outputs that still exist look up to date. The workflow therefore gives every rule an
``upstream`` parameter, the digest of all settings and user inputs its inputs were computed from
(common.smk), so a change fires the params trigger at every level of the chain.

User inputs (domain and task files, a tokenizer, a prior file, checkpoint directories) enter
those digests by content. Hashing a large file on every Snakemake invocation would make a no-op
rerun slow, so a file's digest is cached under ``.snakemake/`` keyed by its size, modification
time and inode: it is recomputed once after any write, which changes at least one of them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from tikmix.core.atomic import write_text_atomic

DIGEST_CACHE = ".snakemake/tikmix/file_digests.json"
_CHUNK = 1 << 22


def settings_digest(*parts: Any) -> str:
    """A short, stable digest of JSON-able settings (dict key order does not matter)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class FileDigests:
    """Content digests of files, cached by (size, mtime_ns, inode) in a JSON file."""

    def __init__(self, cache: str | Path | None = DIGEST_CACHE):
        self.cache = Path(cache) if cache is not None else None
        self._entries: dict[str, list] = {}
        self._dirty = False
        if self.cache is not None and self.cache.is_file():
            try:
                self._entries = json.loads(self.cache.read_text())
            except (OSError, ValueError):
                self._entries = {}

    def file(self, path: str | Path) -> str:
        """sha256 of the file's bytes (recomputed only when its size, mtime or inode changed)."""
        path = Path(path)
        stat = path.stat()
        key = os.path.abspath(path)
        stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
        entry = self._entries.get(key)
        if entry is not None and entry[:3] == stamp:
            return entry[3]
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        self._entries[key] = [*stamp, digest.hexdigest()]
        self._dirty = True
        return digest.hexdigest()

    def files(self, paths: list[str | Path]) -> dict[str, str]:
        return {str(path): self.file(path) for path in paths}

    def directory(self, path: str | Path) -> dict[str, str]:
        """Every regular file under a directory (a checkpoint) by relative name -> content digest.

        Hidden files (Snakemake's ``.snakemake_timestamp``) are left out: they carry no content.
        """
        root = Path(path)
        found = {}
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if not name.startswith("."):
                    file = Path(dirpath) / name
                    found[str(file.relative_to(root))] = self.file(file)
        return found

    def save(self) -> None:
        """Write the cache atomically (concurrent writers lose entries, never corrupt it)."""
        if self.cache is None or not self._dirty:
            return
        try:
            write_text_atomic(self.cache, json.dumps(self._entries))
            self._dirty = False
        except OSError:
            pass  # a cache only: a read-only working directory recomputes next time
