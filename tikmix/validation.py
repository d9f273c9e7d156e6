"""Start-up checks of what a study's config points to: checkpoints and data files.

They run on every Snakemake invocation (from :func:`tikmix.config.check_config`) and import
neither torch nor transformers. A checkpoint is checked from its ``config.json`` and the headers of
its safetensors files. Every domain and task file is read in full, once: one streaming pass per
file with the readers the tokenize jobs use, so a bad row anywhere fails before the first job. A
file that passed is remembered by its content digest and the settings it was read with
(:class:`CheckedFiles`), so later invocations read nothing until the file changes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import struct
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from tikmix.core.checkpoint_format import CONFIG_FILE, META_FILE
from tikmix.core.errors import ConfigError

#: Names of the token-embedding matrix in the built-in model and common Hugging Face families.
_EMBEDDING = re.compile(r"(^|\.)(embed_tokens|wte|word_embeddings|embed_in)\.weight$")
#: Where the files that passed the full read are remembered (beside the digest cache).
CHECKED_FILES = ".snakemake/tikmix/checked_files.json"
#: Part of every remembered check: raise it when a check becomes stricter, to read files again.
CHECKS_VERSION = 1
#: config.json keys of the positions a checkpoint was trained with (built-in model, HF families).
POSITION_KEYS = ("max_seq_len", "max_position_embeddings", "n_positions", "max_sequence_length")
#: Parameter dtypes gradients can be taken in (config.json ``torch_dtype`` / ``dtype``).
WEIGHT_DTYPES = ("float32", "bfloat16", "float16", "float64")
#: Seconds of start-up reading after which the run says what it read (a large corpus, once).
_REPORT_SECONDS = 5.0


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


def read_checkpoint(directory: Path, key: str) -> tuple[dict[str, Any], int]:
    """Check a user checkpoint directory's files; return its config.json and embedding rows."""
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
    if "quantization_config" in config:
        method = config["quantization_config"].get("quant_method", "?")
        _fail(
            key,
            f"{config_path}: a quantized checkpoint (quantization_config, {method}); its layers "
            "are not nn.Linear and have no gradients to track: give the unquantized weights",
        )
    dtype = config.get("torch_dtype", config.get("dtype"))
    if dtype is not None and dtype not in WEIGHT_DTYPES:
        _fail(
            key,
            f"{config_path}: dtype {dtype!r} is not one gradients are taken in "
            f"({', '.join(WEIGHT_DTYPES)})",
        )
    rows = None
    for path in weights:
        try:
            header = safetensors_header(path)
        except (OSError, ValueError) as err:
            _fail(key, str(err))
        for name, entry in header.items():
            if not isinstance(entry, dict):
                continue  # __metadata__
            if str(entry.get("dtype", "")).startswith("F8"):
                _fail(
                    key,
                    f"{path}: tensor {name} is stored as {entry['dtype']}; gradients are taken "
                    f"in {', '.join(WEIGHT_DTYPES)}",
                )
            if _EMBEDDING.search(name) and entry.get("shape"):
                rows = int(entry["shape"][0])
    if rows is None:
        rows = config.get("vocab_size")
    if not isinstance(rows, int):
        _fail(
            key,
            f"cannot tell the embedding rows of '{directory}' (no embedding tensor, no vocab_size)",
        )
    return config, rows


def study_tokenizer(path: str | Path) -> int:
    """Check the study's tokenizer as the jobs load it (an EOS-like token); return its size."""
    from tikmix.data.errors import DataError
    from tikmix.data.tokenizer import load_tokenizer, vocab_size

    try:
        return vocab_size(load_tokenizer(path))
    except DataError as error:
        _fail("tokenizer.path", str(error))


def check_checkpoints(
    checkpoints: dict[str, str],
    vocab_size: int | None,
    seq_len: int,
    tracked_modules: str,
) -> None:
    """Every user checkpoint is complete and loadable, and fits the study.

    An embedding row per token id of the tokenizer (``vocab_size``, None without one), positions
    for ``seq_len`` tokens, layers the ``tracked_modules`` pattern can track (not the experts of a
    mixture-of-experts model), a weight dtype gradients are taken in, and EOS / BOS ids that exist
    in both the tokenizer and the embedding and agree between checkpoints.
    """
    from tikmix.core.tracked_modules import check_model_family
    from tikmix.data.errors import DataError
    from tikmix.data.tokenizer import agreed_special_tokens, checkpoint_special_tokens

    for name, directory in checkpoints.items():
        key = f"checkpoints.{name}"
        config, rows = read_checkpoint(Path(directory), key)
        config_path = Path(directory) / CONFIG_FILE
        if vocab_size is not None and rows < vocab_size:
            _fail(
                key,
                f"checkpoint '{directory}' has {rows} embedding rows but the tokenizer "
                f"(tokenizer.path) has {vocab_size} tokens: ids >= {rows} have no embedding",
            )
        positions = next((k for k in POSITION_KEYS if isinstance(config.get(k), int)), None)
        if positions is not None and seq_len > config[positions]:
            _fail(
                "data.seq_len",
                f"{seq_len} tokens per sequence, but checkpoint '{name}' has "
                f"{config[positions]} positions ({positions} in {config_path})",
            )
        try:
            check_model_family(config, tracked_modules, str(config_path))
        except ValueError as error:
            _fail(key, str(error))
        try:
            special = checkpoint_special_tokens(directory)
        except ValueError as error:  # generation_config.json that is not JSON
            _fail(key, f"{directory}: {error}")
        for token in ("eos", "bos"):
            token_id = special[token]
            limit = min(rows, vocab_size) if vocab_size is not None else rows
            if token_id is not None and not 0 <= token_id < limit:
                _fail(
                    key,
                    f"{special[token + '_source']}: {token}_token_id {token_id} is outside the "
                    f"embedding ({rows} rows)"
                    + (f" or the tokenizer ({vocab_size} tokens)" if vocab_size else ""),
                )
    try:
        agreed_special_tokens(checkpoints)
    except DataError as error:
        _fail("checkpoints", str(error))


def check_names(kind: str, names: list[str]) -> None:
    """Names of one kind (domains, tasks, checkpoints) that differ only in case are refused:
    they name result folders, which collide on a case-insensitive file system."""
    seen: dict[str, str] = {}
    for name in sorted(names):
        other = seen.setdefault(name.casefold(), name)
        if other != name:
            _fail(
                f"{kind}.{name}",
                f"'{other}' and '{name}' differ only in case; their result folders would "
                "collide on a case-insensitive file system (macOS, Windows): rename one",
            )


class CheckedFiles:
    """Input files that passed the full read, by content digest and the settings read with.

    ``cache=None`` remembers nothing (every :meth:`check` reads its file). Otherwise the digests
    come from :class:`tikmix.provenance.FileDigests` (cached by size, mtime and inode, so an
    unchanged file is not even hashed again) and the passed checks are kept in ``cache``.
    """

    def __init__(self, cache: str | Path | None = CHECKED_FILES) -> None:
        from tikmix.provenance import FileDigests

        self.cache = Path(cache) if cache is not None else None
        self.digests = FileDigests() if self.cache is not None else None
        self._passed: set[str] = set()
        self._dirty = False
        self.read_files = self.read_bytes = 0
        if self.cache is not None and self.cache.is_file():
            try:
                self._passed = set(json.loads(self.cache.read_text()))
            except (OSError, ValueError):
                self._passed = set()

    def check(self, path: Path, settings: str, read: Callable[[], object]) -> None:
        """Run ``read`` (raising on the first bad row) unless this version of ``path`` passed."""
        key = None
        if self.digests is not None:
            key = f"{CHECKS_VERSION} {settings} {self.digests.file(path)}"
            if key in self._passed:
                return
        read()
        self.read_files += 1
        self.read_bytes += path.stat().st_size
        if key is not None:
            self._passed.add(key)
            self._dirty = True

    def save(self) -> None:
        """Write what passed (atomically; a cache only, so an unwritable one is skipped)."""
        from tikmix.core.atomic import write_text_atomic

        if self.digests is not None:
            self.digests.save()
        if self.cache is None or not self._dirty:
            return
        try:
            write_text_atomic(self.cache, json.dumps(sorted(self._passed)))
            self._dirty = False
        except OSError:
            pass


def check_data_files(
    domains: dict[str, dict],
    tasks: dict[str, dict],
    vocab_size: int | None = None,
    checked: CheckedFiles | None = None,
    steering_fraction: float | None = None,
) -> None:
    """Every domain and task file, every row: one streaming pass per file, before any job.

    Domains first get the cheap checks of their globs (files of one kind; a file under one domain
    only). Then each file is read with :func:`tikmix.data.sources.check_source_file` (with
    ``vocab_size``, the ids of token files are checked against the tokenizer) or
    :func:`tikmix.data.task_split.read_task_split` (its rows, and with ``steering_fraction``
    (``data.steering_fraction``) both halves big enough). ``checked`` skips the files that
    passed before.
    """
    from tikmix.data.errors import DataError
    from tikmix.data.sources import DomainSource, check_source_file, resolve_files, source_kind
    from tikmix.data.task_split import read_task_split
    from tikmix.data.tasks import read_task

    checked = checked if checked is not None else CheckedFiles(cache=None)
    started = time.monotonic()
    try:
        owners: dict[str, str] = {}
        sources = {}
        for name, spec in domains.items():
            key = f"domains.{name}.paths"
            try:
                source = DomainSource(
                    name, tuple(spec["paths"]), spec.get("text_field", "text"), spec.get("dtype")
                )
                files = resolve_files(source)
            except DataError as err:
                _fail(key, str(err))
            for path in files:
                other = owners.setdefault(os.path.realpath(path), name)
                if other != name:
                    _fail(
                        key,
                        f"{path} is also a file of domain '{other}': a file belongs to one domain",
                    )
            sources[name] = (source, files)
        for name, (source, files) in sources.items():
            if source_kind(files) == "text":
                settings = f"text field={source.text_field}"
            else:
                settings = f"tokens dtype={source.dtype} vocabulary={vocab_size}"
            for path in files:
                try:
                    checked.check(
                        path,
                        settings,
                        lambda path=path, source=source: check_source_file(
                            path, source.text_field, source.dtype, vocab_size
                        ),
                    )
                except DataError as err:
                    _fail(f"domains.{name}.paths", str(err))
        for name, spec in tasks.items():
            path = Path(spec["path"])
            if steering_fraction is None:
                settings, read = "task", partial(read_task, path)
            else:
                settings = f"task steering_fraction={steering_fraction}"
                read = partial(read_task_split, name, path, steering_fraction)
            try:
                checked.check(path, settings, read)
            except DataError as err:
                _fail(f"tasks.{name}.path", str(err))
    finally:
        checked.save()
    seconds = time.monotonic() - started
    if seconds > _REPORT_SECONDS:
        print(
            f"tikmix: read every row of {checked.read_files} input files "
            f"({checked.read_bytes / 1e6:.0f} MB) in {seconds:.0f} s; they are not read again "
            "until they change",
            file=sys.stderr,
        )
