"""Atomic outputs: write to a temporary sibling of the target, rename it into place on success.

A job that fails half-way therefore never leaves a truncated output that a later stage (or a
Snakemake rerun check) could mistake for a finished one. Every writer of results goes through
:func:`atomic_output` (files) or :func:`atomic_directory` (Zarr stores, checkpoints).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _temporary_sibling(path: Path, suffix: str = "") -> Path:
    """An unused hidden name beside ``path``: ``.<name>.tmp-<pid>-<random><suffix>``."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}{suffix}")


def _remove_leftovers(path: Path) -> None:
    """Temporary siblings of ``path`` left by killed writers (never trusted: never renamed)."""
    for leftover in path.parent.glob(f".{path.name}.tmp-*"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


@contextmanager
def atomic_output(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield an unused temporary path in ``path``'s directory; on success rename it onto ``path``.

    The caller creates the file (so it gets the usual permissions). ``suffix`` serves writers that
    insist on an extension (``np.save`` appends ``.npy`` otherwise). The parent directory is
    created; on any exception the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory path beside ``path``; on success it replaces ``path``.

    The caller creates the directory (Zarr's ``mode="w"``, ``mkdir``). An existing ``path`` is
    replaced only once the new one is complete (moved aside, the new one renamed in, the old
    one removed). On any exception the temporary directory is removed and ``path`` is left as
    it was. A writer killed outright (SIGKILL, a node lost) cannot clean up: its temporary
    directory is removed when the same output is next written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(path)
    tmp = _temporary_sibling(path)
    try:
        yield tmp
        if path.exists():
            old = _temporary_sibling(path, ".old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        _remove_settled(tmp)
        raise
    _remove_leftovers(path)


def _remove_settled(directory: Path, quiet: float = 0.2, limit: float = 2.0) -> None:
    """Remove ``directory`` until it stays absent for ``quiet`` seconds (at most ``limit``).

    A writer that failed on one chunk may still have sibling writes in flight (Zarr writes
    chunks from a thread pool): they recreate the directory after a single removal.
    """
    deadline = time.monotonic() + limit
    while True:
        shutil.rmtree(directory, ignore_errors=True)
        settled = time.monotonic() + quiet
        while not directory.exists() and time.monotonic() < settled:
            time.sleep(0.02)
        if not directory.exists() or time.monotonic() > deadline:
            return


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through :func:`atomic_output`."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def finite_json(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by null, for strict JSON parsers.

    In a mapping, a replaced value ``key`` gets a sibling ``key_null_reason`` saying what it was
    (a correlation of a constant response is NaN, for instance), unless that key is taken.
    """
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            out[key] = finite_json(value)
            if isinstance(value, float) and not math.isfinite(value):
                reason = f"{key}_null_reason"
                if reason not in obj:
                    out[reason] = f"not a finite number ({value}): undefined for these inputs"
        return out
    if isinstance(obj, list | tuple):
        return [finite_json(value) for value in obj]
    return obj


def restore_nan(obj: Any) -> Any:
    """The inverse of :func:`finite_json` for readers that compute with the values: a null whose
    mapping holds a ``key_null_reason`` becomes NaN again."""
    if isinstance(obj, dict):
        return {
            key: math.nan if value is None and f"{key}_null_reason" in obj else restore_nan(value)
            for key, value in obj.items()
        }
    if isinstance(obj, list):
        return [restore_nan(value) for value in obj]
    return obj


def dumps_json(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that never writes the bare ``NaN``/``Infinity`` strict parsers reject."""
    return json.dumps(finite_json(obj), allow_nan=False, **kwargs)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON (trailing newline) through :func:`atomic_output`.

    Non-finite floats are written as null with a reason (:func:`finite_json`).
    """
    write_text_atomic(path, dumps_json(obj, indent=2) + "\n")
