"""Atomic file outputs: write to a temporary file beside the target, rename on success.

A job that fails half-way therefore never leaves a truncated output that a later stage (or a
Snakemake rerun check) could mistake for a finished one.
"""

from __future__ import annotations

import json
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


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON (trailing newline) through :func:`atomic_output`."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
