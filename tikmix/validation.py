"""Start-up checks of what a study's config points to: checkpoints and data files.

They run on every Snakemake invocation (from :func:`tikmix.config.check_config`), so they read
headers and a few rows, never whole files, and import neither torch nor transformers. The full
checks of every row stay in the tokenize jobs; what is checked here is what would otherwise
surface only after the tokenizer is trained or gradient jobs of other checkpoints have run.
"""

from __future__ import annotations

import importlib.util
import json
import re
import struct
from pathlib import Path
from typing import Any

from tikmix.config import ConfigError
from tikmix.core.checkpoint_format import CONFIG_FILE, META_FILE

#: Names of the token-embedding matrix in the built-in model and common Hugging Face families.
_EMBEDDING = re.compile(r"(^|\.)(embed_tokens|wte|word_embeddings|embed_in)\.weight$")
#: The tail of a jsonl file read to find its last row.
_TAIL_BYTES = 1 << 20


def _fail(key: str, message: str) -> None:
    raise ConfigError(f"config key '{key}': {message}")


def safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor name -> dtype, shape, offsets)."""
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) != 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (size,) = struct.unpack("<Q", prefix)
        if size > path.stat().st_size - 8:
            raise ValueError(f"{path}: not a safetensors file (header length {size} too large)")
        try:
            return json.loads(f.read(size))
        except (UnicodeDecodeError, ValueError) as err:
            raise ValueError(f"{path}: unreadable safetensors header ({err})") from None


def causal_lm_model_types() -> set[str] | None:
    """``model_type`` values transformers' AutoModelForCausalLM can load, or None without it.

    Read from the source of ``transformers.models.auto.modeling_auto`` rather than imported:
    importing it takes seconds, and this runs on every Snakemake invocation.
    """
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        return None
    source = Path(spec.submodule_search_locations[0]) / "models/auto/modeling_auto.py"
    text = source.read_text()
    block = re.search(r"MODEL_FOR_CAUSAL_LM_MAPPING_NAMES = OrderedDict\((.*?)\n\)", text, re.S)
    if block is None:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        return set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    return set(re.findall(r'^\s*\(\s*"([^"]+)"', block.group(1), re.M))


def checkpoint_embedding_rows(directory: Path, key: str) -> int:
    """Check a user checkpoint directory's files and return its number of embedding rows."""
    if not directory.is_dir():
        _fail(key, f"no checkpoint directory '{directory}'")
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        _fail(key, f"checkpoint '{directory}' has no {CONFIG_FILE}")
    try:
        config = json.loads(config_path.read_text())
    except ValueError as err:
        _fail(key, f"{config_path} is not valid JSON ({err})")
    if not isinstance(config, dict):
        _fail(key, f"{config_path} is not a JSON object")
    weights = sorted(directory.glob("*.safetensors"))
    if not weights:
        found = sorted(p.name for p in directory.iterdir()) or "nothing"
        _fail(key, f"checkpoint '{directory}' has no safetensors weights (found {found})")
    if "model_type" in config:
        supported = causal_lm_model_types()
        if supported is None:
            _fail(
                key,
                f"'{directory}' is a Hugging Face checkpoint (model_type "
                f"{config['model_type']!r}); loading it needs transformers: pip install 'tikmix[hf]'",
            )
        if config["model_type"] not in supported:
            _fail(
                key,
                f"{config_path}: model_type {config['model_type']!r} is not a causal LM that "
                "this transformers can load (AutoModelForCausalLM)",
            )
    elif not (directory / META_FILE).is_file():
        _fail(
            key,
            f"'{directory}' is neither a Hugging Face checkpoint ({CONFIG_FILE} has no "
            f"'model_type') nor a built-in one (no {META_FILE})",
        )
    rows = None
    for path in weights:
        try:
            header = safetensors_header(path)
        except (OSError, ValueError) as err:
            _fail(key, str(err))
        for name, entry in header.items():
            if _EMBEDDING.search(name) and isinstance(entry, dict) and entry.get("shape"):
                rows = int(entry["shape"][0])
    if rows is None:
        rows = config.get("vocab_size")
    if not isinstance(rows, int):
        _fail(
            key,
            f"cannot tell the embedding rows of '{directory}' (no embedding tensor, no vocab_size)",
        )
    return rows


def tokenizer_vocab_size(path: str | Path) -> int:
    """Token ids of a tokenizer.json, special tokens included (as tikmix.data.tokenizer counts)."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises a bare Exception for a malformed file
        _fail("tokenizer.path", f"{path} is not a tokenizers tokenizer.json ({error})")
    return tokenizer.get_vocab_size(with_added_tokens=True)


def check_checkpoints(checkpoints: dict[str, str], vocab_size: int | None) -> None:
    """Every user checkpoint is complete, loadable, and has an embedding row per token id."""
    for name, directory in checkpoints.items():
        key = f"checkpoints.{name}"
        rows = checkpoint_embedding_rows(Path(directory), key)
        if vocab_size is not None and rows < vocab_size:
            _fail(
                key,
                f"checkpoint '{directory}' has {rows} embedding rows but the tokenizer "
                f"(tokenizer.path) has {vocab_size} tokens: ids >= {rows} have no embedding",
            )


def _line_count(path: Path) -> int:
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 22), b""))


def last_jsonl_row(path: Path) -> tuple[int, dict[str, Any]] | None:
    """``(lineno, row)`` of the last non-blank line of an uncompressed jsonl file, or None.

    Only the file's tail is read; the lines are counted (a fast byte scan) only to name the line
    of a bad row.
    """
    from tikmix.data.errors import DataError

    size = path.stat().st_size
    with path.open("rb") as f:
        f.seek(max(0, size - _TAIL_BYTES))
        tail = f.read()
    lines = tail.rstrip(b"\r\n \t").split(b"\n")
    raw = lines[-1] if lines else b""
    if not raw.strip() or (len(lines) == 1 and size > _TAIL_BYTES):
        return None  # blank file, or a last line longer than the tail: left to the full check
    trailing = tail[len(tail.rstrip(b"\r\n \t")) :].count(b"\n")

    def where() -> str:
        return f"{path}:{_line_count(path) + 1 - trailing}"

    try:
        row = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{where()}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{where()}: malformed JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(row, dict):
        raise DataError(f"{where()}: expected a JSON object, got {type(row).__name__}")
    return _line_count(path) + 1 - trailing, row


def _check_text_file(path: Path, field: str) -> None:
    """The first and last rows of a jsonl file parse and carry the text field."""
    from tikmix.data.errors import DataError
    from tikmix.data.sources import iter_jsonl_rows

    first = next(iter_jsonl_rows(path), None)
    if first is None:
        raise DataError(f"{path}: no rows")
    rows = [first]
    if not str(path).lower().endswith(".gz"):
        last = last_jsonl_row(path)
        rows += [last] if last else []
    for lineno, row in rows:
        if field not in row:
            raise DataError(f"{path}:{lineno}: row has no field {field!r} (fields: {sorted(row)})")
        if not isinstance(row[field], str):
            raise DataError(
                f"{path}:{lineno}: field {field!r} must be a string, got {type(row[field]).__name__}"
            )


def check_data_files(domains: dict[str, dict], tasks: dict[str, dict]) -> None:
    """A fast structural check of every domain and task file (first and last rows, headers)."""
    from tikmix.data.errors import DataError
    from tikmix.data.sources import (
        DomainSource,
        _open_parquet,
        file_format,
        open_token_file,
        resolve_files,
    )
    from tikmix.data.tasks import _parse_row

    for name, spec in domains.items():
        key = f"domains.{name}.paths"
        try:
            source = DomainSource(
                name, tuple(spec["paths"]), spec.get("text_field", "text"), spec.get("dtype")
            )
            for path in resolve_files(source):
                fmt = file_format(path)
                if fmt == "parquet":
                    _open_parquet(path, source.text_field)
                elif fmt in ("jsonl", "jsonl.gz"):
                    _check_text_file(path, source.text_field)
                else:
                    tokens = open_token_file(path, source.dtype)
                    if len(tokens) == 0:
                        raise DataError(f"{path}: empty token file")
        except DataError as err:
            _fail(key, str(err))
    for name, spec in tasks.items():
        key = f"tasks.{name}.path"
        path = Path(spec["path"])
        try:
            from tikmix.data.sources import iter_jsonl_rows

            first = next(iter_jsonl_rows(path), None)
            if first is None:
                raise DataError(f"{path}: task file has no rows")
            rows = [first]
            if not str(path).lower().endswith(".gz"):
                last = last_jsonl_row(path)
                rows += [last] if last else []
            kinds = [_parse_row(row, f"{path}:{lineno}", lineno).kind for lineno, row in rows]
            if len(set(kinds)) > 1:
                raise DataError(
                    f"{path}:{rows[-1][0]}: a {kinds[-1]} row, but line {rows[0][0]} is a "
                    f"{kinds[0]} row; a task file holds rows of one shape"
                )
        except DataError as err:
            _fail(key, str(err))
