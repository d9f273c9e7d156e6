"""Availability caps: how much of each domain the next stage may read, counting stage 1.

Repeating data helps less than fresh data; Muennighoff et al. (2023, "Scaling Data-Constrained
Language Models") find up to about 4 epochs nearly as good as unique data, and RegMix bounds its
mixtures by a maximum usage of each domain for the same reason. With ``U_d`` the unique training
tokens of domain ``d``, ``E_d`` the tokens of ``d`` the checkpoint has already seen (its stage-1
exposure) and ``T`` the tokens of the next stage, a mixture ``w`` is within the caps when::

    E_d + w_d · T <= max_epochs · U_d,   i.e.   w_d <= cap_d = max(0, max_epochs · U_d − E_d) / T

and its planned cumulative epochs are ``(E_d + w_d · T) / U_d``. ``E_d`` comes from the stage-1
checkpoint's record (tokens seen × the mixture it was trained on), from the user's ``prior`` ×
``stage1_tokens``, or is unknown: the caps then count the next stage only, and say so.

One :class:`Availability` per checkpoint is written by the ``availability`` rule
(``results/mixtures/{ckpt}/availability.json``); every optimising method reads its caps, and every
mixture document records its planned epochs (:meth:`Availability.record`). Methods whose result
is not a solution of a capped problem (DoReMi's average, RegMix's top-k average) are brought
within the caps by :func:`project_onto_capped_simplex`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tikmix.core.atomic import write_json_atomic
from tikmix.core.checkpoint_format import META_FILE
from tikmix.core.mixture import MixtureInputError, validate_weights

#: Tolerance on ``w_d <= cap_d`` of a returned mixture.
CAP_TOLERANCE = 1e-8

#: ``stage1_exposure`` when it is not known: the caps count the next stage only.
UNKNOWN = "unknown"


class InfeasibleCapsError(ValueError):
    """The caps sum to less than 1: no mixture fits within them."""


def project_onto_capped_simplex(v: np.ndarray, caps: np.ndarray, *, tol: float = 1e-13):
    """Euclidean projection of ``v`` onto ``{w : Σw = 1, 0 <= w <= caps}``.

    The KKT conditions give ``w = clip(v − τ, 0, caps)`` for the one ``τ`` at which the sum is 1
    (the sum is continuous and non-increasing in ``τ``), found by bisection. Raises
    :class:`InfeasibleCapsError` when ``Σ min(caps, 1) < 1``.
    """
    v = np.asarray(v, dtype=float)
    upper = np.minimum(np.asarray(caps, dtype=float), 1.0)
    if v.shape != upper.shape or v.ndim != 1:
        raise MixtureInputError(f"projection: shapes {v.shape} and {upper.shape} differ")
    if np.isnan(v).any() or np.isnan(upper).any() or (upper < 0).any():
        raise MixtureInputError("projection: NaN values or negative caps")
    if upper.sum() < 1 - tol:
        raise InfeasibleCapsError(f"caps sum to {upper.sum():.6g} < 1: no mixture fits")
    low, high = float(np.min(v - upper)), float(np.max(v))  # sums Σcaps >= 1 and 0
    for _ in range(200):
        tau = 0.5 * (low + high)
        if np.clip(v - tau, 0, upper).sum() > 1:
            low = tau
        else:
            high = tau
        if high - low <= tol:
            break
    w = np.clip(v - 0.5 * (low + high), 0, upper)
    # The bisection leaves a residual of order tol: put it on the coordinates strictly inside
    # their bounds (they move one for one with τ), so the sum is 1 to rounding.
    free = (w > 0) & (w < upper)
    if free.any():
        w[free] += (1 - w.sum()) / free.sum()
        w = np.clip(w, 0, upper)
    return w


@dataclass(frozen=True)
class Availability:
    """The availability of each domain for the next stage of one checkpoint.

    Attributes:
        unique_tokens: ``U_d``, the unique training tokens of each domain.
        exposure: ``E_d``, the tokens of each domain seen before the next stage, or ``None``
            when unknown (the caps then count the next stage only).
        exposure_source: where ``E_d`` comes from (:data:`UNKNOWN` when it is not known).
        stage_tokens: ``T``, the tokens of the next stage.
        max_epochs: the allowed cumulative passes over a domain, or ``None`` for no caps.
    """

    unique_tokens: pd.Series
    exposure: pd.Series | None
    exposure_source: str
    stage_tokens: int
    max_epochs: float | None

    def __post_init__(self) -> None:
        if not self.stage_tokens or self.stage_tokens <= 0:
            raise MixtureInputError(
                f"availability: stage tokens must be > 0, got {self.stage_tokens}"
            )
        if self.max_epochs is not None and not self.max_epochs > 0:
            raise MixtureInputError(f"availability: max_epochs must be > 0, got {self.max_epochs}")
        unique = self.unique_tokens
        if unique.isna().any() or (unique <= 0).any():
            bad = unique.index[unique.isna() | (unique <= 0)].tolist()
            raise MixtureInputError(f"availability: no unique tokens for domain(s) {bad}")
        exposure = self.exposure
        if exposure is not None and (
            list(exposure.index) != list(unique.index)
            or exposure.isna().any()
            or (exposure < 0).any()
        ):
            raise MixtureInputError(
                f"availability: stage-1 exposure {exposure.to_dict()} must be >= 0 tokens for "
                f"each of the domains {list(unique.index)}"
            )

    @property
    def counted_exposure(self) -> pd.Series:
        """``E_d`` where known, else 0 (the next stage only)."""
        if self.exposure is None:
            return pd.Series(0.0, index=self.unique_tokens.index)
        return self.exposure

    @property
    def caps(self) -> pd.Series | None:
        """``cap_d = max(0, max_epochs · U_d − E_d) / T`` (may exceed 1), or None without caps."""
        if self.max_epochs is None:
            return None
        room = self.max_epochs * self.unique_tokens - self.counted_exposure
        return (room.clip(lower=0) / self.stage_tokens).rename("cap")

    def check_feasible(self) -> None:
        """Raise :class:`InfeasibleCapsError` (one line) when the caps cannot hold a mixture."""
        caps = self.caps
        if caps is None or caps.clip(upper=1).sum() >= 1:
            return
        listed = ", ".join(f"{d}={c:.4g}" for d, c in caps.items())
        raise InfeasibleCapsError(
            f"availability caps sum to {caps.sum():.4g} < 1, no mixture fits within them "
            f"({listed}; stage-1 exposure: {self.exposure_source}); raise mixing.max_epochs, "
            "lower mixing.stage_tokens (default stage2.tokens) or add data to these domains"
        )

    def planned_epochs(self, weights: pd.Series) -> pd.Series:
        """``(E_d + w_d · T) / U_d``: the cumulative passes over each domain after the stage."""
        w = pd.Series(weights, dtype=float).reindex(self.unique_tokens.index)
        return (self.counted_exposure + w * self.stage_tokens) / self.unique_tokens

    def check_within(self, weights: pd.Series, method: str) -> None:
        """Raise when ``weights`` exceeds a cap (a method that ignored them)."""
        caps = self.caps
        if caps is None:
            return
        over = pd.Series(weights, dtype=float).reindex(caps.index) - caps
        if (over > CAP_TOLERANCE).any():
            bad = {d: round(float(v), 6) for d, v in over[over > CAP_TOLERANCE].items()}
            raise MixtureInputError(f"{method}: mixture exceeds the availability caps by {bad}")

    def project(self, weights: pd.Series) -> pd.Series:
        """The mixture within the caps nearest ``weights`` (Euclidean); unchanged without caps."""
        w = validate_weights(weights, list(self.unique_tokens.index), source="mixture")
        if self.caps is None:
            return w
        projected = project_onto_capped_simplex(w.to_numpy(), self.caps.to_numpy())
        return pd.Series(projected, index=w.index, name=w.name)

    def record(self, weights: pd.Series) -> dict[str, Any]:
        """What a mixture document records: planned epochs and the caps they were held to."""
        return {
            "planned_epochs": _floats(self.planned_epochs(weights)),
            "availability": {
                "max_epochs": self.max_epochs,
                "stage_tokens": int(self.stage_tokens),
                "stage1_exposure": self.exposure_source,
                "caps": None if self.caps is None else _floats(self.caps),
            },
        }

    def to_dict(self) -> dict[str, Any]:
        """The ``availability.json`` document (per domain: U_d, E_d, cap; and T, max_epochs)."""
        caps = self.caps
        exposure = self.exposure
        return {
            "max_epochs": self.max_epochs,
            "stage_tokens": int(self.stage_tokens),
            "stage1_exposure": self.exposure_source,
            "domains": {
                d: {
                    "unique_tokens": int(u),
                    "exposure": None if exposure is None else float(exposure[d]),
                    "cap": None if caps is None else float(caps[d]),
                }
                for d, u in self.unique_tokens.items()
            },
        }

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> Availability:
        domains = document["domains"]
        unique = pd.Series({d: float(v["unique_tokens"]) for d, v in domains.items()})
        known = document["stage1_exposure"] != UNKNOWN
        exposure = (
            pd.Series({d: float(v["exposure"]) for d, v in domains.items()}) if known else None
        )
        return cls(
            unique,
            exposure,
            document["stage1_exposure"],
            int(document["stage_tokens"]),
            document["max_epochs"],
        )

    @classmethod
    def read(cls, path: str | Path) -> Availability:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def write(self, path: str | Path) -> None:
        write_json_atomic(path, self.to_dict())


def _floats(series: pd.Series) -> dict[str, float]:
    return {str(d): float(v) for d, v in series.items()}


def checkpoint_exposure(checkpoint: str | Path, domains: list[str]) -> pd.Series:
    """``E_d`` of a built-in stage-1 checkpoint: its recorded ``tokens_seen`` × the mixture it
    was trained on (the stage-1 sampler draws each domain in proportion to its weight)."""
    path = Path(checkpoint) / META_FILE
    record = json.loads(path.read_text())
    if record.get("tokens_seen") is None or not isinstance(record.get("mixture"), dict):
        raise MixtureInputError(f"{path}: no tokens_seen and mixture to count stage-1 exposure")
    mixture = validate_weights(record["mixture"], domains, source=f"{path} mixture")
    return mixture * float(record["tokens_seen"])


def study_availability(
    *,
    unique_tokens: Mapping[str, int],
    stage_tokens: int,
    max_epochs: float | None,
    checkpoint: str | Path | None = None,
    prior: pd.Series | None = None,
    stage1_tokens: int | None = None,
) -> Availability:
    """A checkpoint's :class:`Availability`, its exposure from the first known source: the
    built-in ``checkpoint``'s record, else ``prior`` × ``stage1_tokens``, else unknown."""
    unique = pd.Series(unique_tokens, dtype=float)
    domains = list(unique.index)
    if checkpoint is not None:
        exposure = checkpoint_exposure(checkpoint, domains)
        source = f"stage-1 record {Path(checkpoint) / META_FILE}"
    elif prior is not None and stage1_tokens is not None:
        exposure = validate_weights(prior, domains, source="prior") * float(stage1_tokens)
        source = f"prior x stage1_tokens ({int(stage1_tokens)})"
    else:
        exposure, source = None, UNKNOWN
    return Availability(unique, exposure, source, int(stage_tokens), max_epochs)
