"""Tables of measured mixture responses: TiKMiX-M's training and confirmation designs.

A response table has one row per mixture (index ``mixture``): the domain weights, one
``benefit:<task>`` column per task (:data:`BENEFIT_PREFIX`; written by
:mod:`tikmix.influence.stages`), ``tokens``, ``flops`` and ``response`` (``curvature``,
``direct`` or ``lookahead``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from tikmix.core.conventions import row_scales
from tikmix.core.settings import Normalisation

#: The prefix of a response table's per-task columns.
BENEFIT_PREFIX = "benefit:"


def read_measurements(parts: Sequence[str | Path]) -> pd.DataFrame:
    """Concatenate measurement parts (rows: mixtures; weight, benefit:<task>, tokens, flops)."""
    frames = [pd.read_csv(p, index_col="mixture") for p in parts]
    table = pd.concat(frames).sort_index()
    if table.empty:
        raise ValueError(f"no measured mixtures in {list(map(str, parts))}")
    return table


def response_totals(
    table: pd.DataFrame, B: pd.DataFrame, normalisation: Normalisation
) -> tuple[pd.Series, str]:
    """Each measured mixture's total response and the response's kind.

    Benefit responses (``curvature``, ``direct``) are normalised like eq. 6 and summed over tasks
    (``Σ P̂``); ``lookahead`` ones are already relative loss decreases, comparable across tasks.
    """
    tasks = [c[len(BENEFIT_PREFIX) :] for c in table.columns if c.startswith(BENEFIT_PREFIX)]
    missing = sorted(set(B.index) - set(tasks))
    if missing:
        raise ValueError(f"measurements lack task(s) {missing} of the influence matrix")
    responses = set(table.get("response", pd.Series(["direct"])))
    if len(responses) != 1:
        raise ValueError(f"measurements mix responses {sorted(responses)}")
    response = responses.pop()
    scale = (
        pd.Series(row_scales(B.to_numpy(), normalisation), index=B.index)
        if response != "lookahead"
        else pd.Series(1.0, index=B.index)
    )
    return sum(table[BENEFIT_PREFIX + t] / scale[t] for t in B.index), response


def curvature_departure(table: pd.DataFrame, B: pd.DataFrame) -> dict[str, dict[str, float]]:
    """How far curvature responses depart from the linear prediction ``B·w``, per task.

    ``pearson_r`` over the measured mixtures and ``relative_rms``: the root-mean-square of
    (curvature − linear) over the spread (standard deviation) of the linear prediction. Both are
    free of sampling noise, so they are the honest additivity measure of the curvature response.
    """
    linear = table[list(B.columns)].to_numpy() @ B.to_numpy().T
    departure = {}
    for i, task in enumerate(B.index):
        curvature = table[BENEFIT_PREFIX + task].to_numpy()
        spread = float(linear[:, i].std())
        departure[str(task)] = {
            "pearson_r": float(np.corrcoef(linear[:, i], curvature)[0, 1]),
            "relative_rms": float(np.sqrt(np.mean((curvature - linear[:, i]) ** 2)) / spread)
            if spread > 0
            else None,
        }
    return departure
