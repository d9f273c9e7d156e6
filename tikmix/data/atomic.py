"""Atomic file outputs: write to a temporary file beside the target, rename on success.

A job that fails half-way therefore never leaves a truncated output that a later stage (or a
Snakemake rerun check) could mistake for a finished one.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_output(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield an unused temporary path in ``path``'s directory; on success rename it onto ``path``.

    The caller creates the file (so it gets the usual permissions). ``suffix`` serves writers that
    insist on an extension (``np.save`` appends ``.npy`` otherwise). The parent directory is
    created; on any exception the temporary file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    with atomic_output(path) as tmp:
        tmp.write_text(dumps_json(obj, indent=2) + "\n")
