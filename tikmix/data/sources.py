"""Domain sources: which files make up a domain, and streaming reads of their documents.

A domain is a list of globs. Every file a domain's globs match must be of one kind:

* **text** — ``.jsonl`` / ``.jsonl.gz`` (one JSON object per line) or ``.parquet``; each row is a
  document whose text is in a configurable field (default ``"text"``). Empty texts are skipped.
* **tokens** — pre-tokenized 1-D streams: ``.npy`` (any integer dtype) or raw ``.bin`` files with a
  given dtype (nanoGPT / Megatron style). Documents are the runs between EOS ids; an unterminated
  last run is a document too; empty runs are skipped.

Everything streams: jsonl line by line, parquet in record batches, token files through a memory map
read in chunks. Problems raise :class:`~tikmix.data.errors.DataError` naming the domain, the glob,
or ``path:lineno`` at fault. :func:`check_source_file` reads every row of one file with the same
readers, without tokenizing: the workflow runs it on every input file at start-up
(:mod:`tikmix.validation`), so a bad row in the middle of a corpus fails before any expensive stage;
:func:`validate_sources` runs only the cheap checks (globs, first records, token-file headers).
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tikmix.data.errors import DataError

TEXT_FORMATS = ("jsonl", "jsonl.gz", "parquet")
TOKEN_FORMATS = ("npy", "bin")
_PARQUET_BATCH_ROWS = 1024


@dataclass(frozen=True)
class DomainSource:
    """Where one domain's documents live.

    Attributes:
        name: domain name (used as a directory name and a Snakemake wildcard value).
        paths: globs (``**`` allowed) of data files, all text or all token files.
        text_field: the field holding the document text in jsonl / parquet rows.
        dtype: numpy dtype of raw ``.bin`` token files (e.g. ``"uint16"``); unused otherwise.
    """

    name: str
    paths: tuple[str, ...]
    text_field: str = "text"
    dtype: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise DataError(f"invalid domain name {self.name!r}: need a non-empty name without '/'")
        paths = (self.paths,) if isinstance(self.paths, str) else tuple(self.paths)
        if not paths or not all(isinstance(p, str) and p for p in paths):
            raise DataError(f"domain {self.name!r}: 'paths' must be a non-empty list of globs")
        object.__setattr__(self, "paths", paths)
        if self.dtype is not None:
            try:
                dtype = np.dtype(self.dtype)
            except TypeError as exc:
                raise DataError(f"domain {self.name!r}: unknown dtype {self.dtype!r}") from exc
            if dtype.kind not in "iu":
                raise DataError(
                    f"domain {self.name!r}: dtype {self.dtype!r} is not an integer type"
                )

    @classmethod
    def from_config(cls, name: str, cfg: str | Sequence[str] | Mapping[str, Any]) -> DomainSource:
        """Build from a config entry: a glob, a list of globs, or a mapping with keys
        ``paths`` (glob or list), optional ``text_field`` and ``dtype``. Unknown keys are errors."""
        if isinstance(cfg, (str, list, tuple)):
            return cls(name, cfg)
        if not isinstance(cfg, Mapping):
            raise DataError(f"domain {name!r}: expected a glob, a list of globs or a mapping")
        unknown = set(cfg) - {"paths", "text_field", "dtype"}
        if unknown:
            raise DataError(f"domain {name!r}: unknown source key(s) {sorted(unknown)}")
        if "paths" not in cfg:
            raise DataError(f"domain {name!r}: missing key 'paths'")
        return cls(name, cfg["paths"], cfg.get("text_field", cls.text_field), cfg.get("dtype"))


def file_format(path: str | Path) -> str:
    """The format of a data file from its name: one of TEXT_FORMATS or TOKEN_FORMATS."""
    name = str(path).lower()
    for fmt in ("jsonl.gz", "jsonl", "parquet", "npy", "bin"):
        if name.endswith("." + fmt):
            return fmt
    raise DataError(
        f"{path}: unsupported file type (expected .jsonl, .jsonl.gz, .parquet, .npy or .bin)"
    )


def resolve_files(source: DomainSource) -> list[Path]:
    """Expand the domain's globs (sorted per glob, duplicates dropped, directories ignored).

    Raises DataError for a glob matching no file, an unsupported file type, text and token files
    mixed in one domain, or ``.bin`` files without a dtype.
    """
    files: dict[Path, None] = {}
    for pattern in source.paths:
        matches = [
            Path(p)
            for p in sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
            if os.path.isfile(p)
        ]
        if not matches:
            raise DataError(f"domain {source.name!r}: glob {pattern!r} matches no file")
        files.update(dict.fromkeys(matches))
    kinds = set()
    for path in files:
        try:
            fmt = file_format(path)
        except DataError as exc:
            raise DataError(f"domain {source.name!r}: {exc}") from None
        kinds.add("text" if fmt in TEXT_FORMATS else "tokens")
        if fmt == "bin" and source.dtype is None:
            raise DataError(f"domain {source.name!r}: {path}: .bin token files need 'dtype'")
    if len(kinds) > 1:
        raise DataError(
            f"domain {source.name!r}: mixes text files (jsonl/parquet) with token files (npy/bin)"
        )
    return list(files)


def source_kind(files: Sequence[Path]) -> str:
    """``"text"`` or ``"tokens"`` for a list of files returned by :func:`resolve_files`."""
    return "text" if file_format(files[0]) in TEXT_FORMATS else "tokens"


def iter_jsonl_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(lineno, row)`` for each non-blank line of a ``.jsonl`` or ``.jsonl.gz`` file.

    Lines are decoded strictly as UTF-8. Raises DataError with ``path:lineno`` for invalid UTF-8,
    malformed JSON or a line that is not a JSON object, and names the file for a broken gzip stream.
    """
    opener = gzip.open if str(path).lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(
                        f"{path}:{lineno}: not valid UTF-8 ({exc.reason} at byte {exc.start})"
                    ) from None
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(
                        f"{path}:{lineno}: malformed JSON: {exc.msg} (column {exc.colno})"
                    ) from None
                if not isinstance(row, dict):
                    raise DataError(
                        f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}"
                    )
                yield lineno, row
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a valid gzip file ({exc})") from None


def _jsonl_texts(path: Path, field: str) -> Iterator[str]:
    for lineno, row in iter_jsonl_rows(path):
        if field not in row:
            raise DataError(f"{path}:{lineno}: row has no field {field!r} (fields: {sorted(row)})")
        text = row[field]
        if not isinstance(text, str):
            raise DataError(
                f"{path}:{lineno}: field {field!r} must be a string, got {type(text).__name__}"
            )
        yield text


def _open_parquet(path: Path, field: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable parquet file ({exc})") from None
    schema = pf.schema_arrow
    if field not in schema.names:
        raise DataError(f"{path}: no column {field!r} (columns: {schema.names})")
    col_type = schema.field(field).type
    if not (pa.types.is_string(col_type) or pa.types.is_large_string(col_type)):
        raise DataError(f"{path}: column {field!r} has type {col_type}, expected a string column")
    return pf


def _parquet_texts(path: Path, field: str) -> Iterator[str]:
    import pyarrow as pa

    pf = _open_parquet(path, field)
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=[field]):
            for text in batch.column(0).to_pylist():
                if text is None:
                    raise DataError(f"{path}: row {row}: field {field!r} is null")
                yield text
                row += 1
    except pa.ArrowException as exc:
        raise DataError(f"{path}: row {row}: cannot read column {field!r} ({exc})") from None


def iter_file_texts(path: str | Path, text_field: str = DomainSource.text_field) -> Iterator[str]:
    """Stream the non-empty document texts of one jsonl / jsonl.gz / parquet file."""
    path = Path(path)
    reader = _parquet_texts if file_format(path) == "parquet" else _jsonl_texts
    for text in reader(path, text_field):
        if text:
            yield text


def iter_texts(source: DomainSource, files: Sequence[Path] | None = None) -> Iterator[str]:
    """Stream the non-empty document texts of a text domain, file by file in glob order."""
    files = resolve_files(source) if files is None else files
    if source_kind(files) != "text":
        raise DataError(f"domain {source.name!r}: holds token files, not text")
    for path in files:
        yield from iter_file_texts(path, source.text_field)


def open_token_file(path: str | Path, dtype: str | None = None) -> np.ndarray:
    """Memory-map a pre-tokenized 1-D token file (``.npy``, or ``.bin`` with ``dtype``)."""
    path = Path(path)
    if file_format(path) == "npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DataError(f"{path}: not a readable .npy file ({exc})") from None
    else:
        if dtype is None:
            raise DataError(f"{path}: .bin token files need a dtype")
        dt = np.dtype(dtype)
        size = path.stat().st_size
        if size % dt.itemsize:
            raise DataError(
                f"{path}: size {size} bytes is not a multiple of {dt} ({dt.itemsize} bytes)"
            )
        arr = np.memmap(path, dtype=dt, mode="r") if size else np.empty(0, dtype=dt)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise DataError(f"{path}: expected a 1-D integer token array, got {arr.dtype} {arr.shape}")
    return arr


def _check_token_ids(path: str | Path, chunk: np.ndarray, base: int, vocab_size: int) -> None:
    """DataError naming the first id of ``chunk`` (at ``base`` in the file) outside the vocabulary."""
    bad = np.flatnonzero((chunk >= vocab_size) | (chunk < 0)) if chunk.size else []
    if len(bad):
        pos = base + int(bad[0])
        raise DataError(
            f"{path}: token id {int(chunk[bad[0]])} at position {pos} is outside the "
            f"tokenizer's vocabulary [0, {vocab_size})"
        )


def iter_token_documents(
    path: str | Path,
    tokens: np.ndarray,
    eos_id: int,
    vocab_size: int,
    chunk_tokens: int = 1 << 20,
) -> Iterator[tuple[int, int]]:
    """Yield ``(start, stop)`` spans of the documents in a token stream, EOS excluded.

    The stream is scanned ``chunk_tokens`` at a time; every id is checked to lie in
    ``[0, vocab_size)``. Empty runs (consecutive EOS) are skipped; a final run without EOS counts.
    """
    start = 0
    for base in range(0, len(tokens), chunk_tokens):
        chunk = np.asarray(tokens[base : base + chunk_tokens])
        _check_token_ids(path, chunk, base, vocab_size)
        for eos in np.flatnonzero(chunk == eos_id) + base:
            if eos > start:
                yield start, int(eos)
            start = int(eos) + 1
    if len(tokens) > start:
        yield start, len(tokens)


def check_source_file(
    path: str | Path,
    text_field: str = DomainSource.text_field,
    dtype: str | None = None,
    vocab_size: int | None = None,
    chunk_tokens: int = 1 << 22,
) -> int:
    """Read every row of one domain file as the tokenize job will, and return how many there are.

    Text files: every row parses and carries ``text_field`` as a string (the readers of
    :func:`iter_file_texts`, so the first bad row is named by ``path:lineno``, or by its row for
    parquet). Token files: a 1-D integer array and, with ``vocab_size``, every id in
    ``[0, vocab_size)``. DataError for a bad row or a file without rows.
    """
    path = Path(path)
    fmt = file_format(path)
    if fmt in TEXT_FORMATS:
        reader = _parquet_texts if fmt == "parquet" else _jsonl_texts
        rows = sum(1 for _ in reader(path, text_field))
        if rows == 0:
            raise DataError(f"{path}: no rows")
        return rows
    tokens = open_token_file(path, dtype)
    if len(tokens) == 0:
        raise DataError(f"{path}: empty token file")
    if vocab_size is not None:
        for base in range(0, len(tokens), chunk_tokens):
            _check_token_ids(path, np.asarray(tokens[base : base + chunk_tokens]), base, vocab_size)
    return len(tokens)


def validate_sources(sources: Mapping[str, DomainSource]) -> dict[str, list[Path]]:
    """Cheap up-front checks of every domain; returns the resolved files per domain.

    Checks that each glob matches files of one supported kind, that the first record of every
    jsonl file parses and has the text field, that every parquet file has a string text column,
    and that every token file has a readable 1-D integer header. Reading whole files is left to
    :func:`tikmix.data.domains.tokenize_domain` (which also reports an empty domain).
    """
    resolved = {}
    for name, source in sources.items():
        if source.name != name:
            raise DataError(f"domain {name!r}: source is named {source.name!r}")
        files = resolve_files(source)
        for path in files:
            fmt = file_format(path)
            if fmt == "parquet":
                _open_parquet(path, source.text_field)
            elif fmt in TEXT_FORMATS:
                next(_jsonl_texts(path, source.text_field), None)
            else:
                open_token_file(path, source.dtype)
        resolved[name] = files
    return resolved
