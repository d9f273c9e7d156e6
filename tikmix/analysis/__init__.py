"""Analyses of the workflow's results, and the verdicts drawn from them.

Each module computes tables from result files and decides what they say (a safe projection
rank, a FLOP cross-check, a method beating another): the report only renders those verdicts.
The helpers here read and write the analyses' files (through :mod:`tikmix.core.atomic`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from tikmix.core.atomic import atomic_output


def write_tables(tables: Iterable[tuple[pd.DataFrame, str | Path, bool]]) -> None:
    """Write each ``(frame, path, index)`` as CSV, atomically (``index`` keeps the row labels)."""
    for frame, path, index in tables:
        with atomic_output(path) as tmp:
            frame.to_csv(tmp, index=index)


def read_json_file(path: str | Path, missing: str, error: type[ValueError] = ValueError) -> Any:
    """The parsed JSON of ``path``.

    Raises:
        FileNotFoundError: ``path`` is not a file (the message is ``missing``, then the path).
        error: ``path`` is not valid JSON (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{missing}: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise error(f"{path} is not valid JSON: {exc}") from exc
