"""The study's recommended mixture for the next stage, decided by training (docs/recommendation.md).

A proxy that checks itself is no check: TiKMiX-M's gate and confirmation re-score its own
response, and on the demo they passed while stage 2 measured its mixture as worse than doing
nothing. So the recommendation is decided by short training runs, not by a proxy:

* Each candidate mixture (by default ``continue``, natural, TiKMiX-D, TiKMiX-M) is trained from
  the evaluation checkpoint for a pilot budget (``recommendation.pilot: {tokens, seeds}``), with
  the same seeds for every candidate, and scored on the **steering** half of every task (the
  evaluation half, which Table 1 scores, is never seen by the decision).
* Each candidate is compared with ``continue`` (the mixture stage 1 trained on: doing nothing) by
  its paired mean difference of the average task loss over the pilot seeds.
* The candidate with the lowest mean difference among those whose one-sided upper bound is
  below 0 is recommended. The bound's level is ``1 − 0.05 / k`` for k candidates that differ from
  ``continue`` (Bonferroni: the best of k noisy candidates looks better than it is).
* Otherwise ``continue`` is recommended, with the words :data:`NO_HEADROOM` and the pilot's
  minimum detectable effect.

Without pilots (``recommendation.pilot: null``) the recommendation is TiKMiX-M's own decision,
labelled proxy-only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import pandas as pd

from tikmix.analysis import read_json_file, write_tables
from tikmix.analysis.evaluation import (
    CONFIDENCE,
    SAME_MIXTURE,
    paired_comparisons,
    same_weights,
    surrogate_verdict,
)
from tikmix.core.atomic import restore_nan, write_json_atomic
from tikmix.core.mixture import read_mixture

#: The do-nothing mixture every candidate must beat.
REFERENCE = "continue"
#: What the recommendation says when no candidate beats ``continue`` beyond the pilot's noise.
NO_HEADROOM = "no detectable headroom at this budget"
#: ``basis`` of a recommendation decided by pilot training, or by TiKMiX-M's proxy alone.
PILOT, PROXY = "pilot", "proxy"
#: Columns of the pilot comparison table (one row per candidate other than ``continue``).
COMPARISON_COLUMNS = (
    "method",
    "n_seeds",
    "mean_difference",
    "se",
    "upper_bound",
    "verdict",
)


class RecommendationError(ValueError):
    """The pilot records cannot decide: a candidate without records, or no ``continue``."""


@dataclass(frozen=True)
class Recommendation:
    """The mixture a study recommends for the next stage, and on what evidence.

    Attributes:
        method: the recommended candidate (``continue`` when nothing beats it).
        weights: its mixture, domain -> weight.
        basis: :data:`PILOT` (decided by training) or :data:`PROXY` (TiKMiX-M's own decision,
            no training).
        reason: one sentence, the numbers included.
        candidates: the candidates considered.
        comparisons: per candidate other than ``continue`` (:data:`COMPARISON_COLUMNS`): paired
            mean difference of the average task loss against ``continue`` (negative = lower
            loss, better), its SE, the one-sided upper bound at ``confidence`` and the verdict
            (``better``, ``worse``, ``tie`` or :data:`tikmix.analysis.evaluation.SAME_MIXTURE`).
            Empty without pilots.
        confidence: the one-sided level of each bound, Bonferroni-corrected over the compared
            candidates.
        sigma: pooled SD of the pilot's paired differences (nats; NaN without pilots).
        mde: minimum detectable effect of the pilot at ``confidence`` and 80% power (nats).
        pilot_tokens, pilot_seeds: the pilot budget (None and [] without pilots).
    """

    method: str
    weights: dict[str, float]
    basis: str
    reason: str
    candidates: list[str]
    comparisons: list[dict] = field(default_factory=list)
    confidence: float = math.nan
    sigma: float = math.nan
    mde: float = math.nan
    pilot_tokens: int | None = None
    pilot_seeds: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def headroom(self) -> bool:
        """Training found a candidate that beats ``continue`` beyond the pilot's noise."""
        return self.basis == PILOT and self.method != REFERENCE


def recommend_from_pilots(
    records: Iterable[Mapping],
    mixtures: Mapping[str, Mapping[str, float]],
    *,
    confidence: float = CONFIDENCE,
) -> Recommendation:
    """The candidate that beats ``continue`` in the pilot runs, or ``continue``.

    Args:
        records: pilot records (:func:`tikmix.models.stage2.run_stage2_seeds`, scored on the
            steering half), for ``continue`` and every candidate whose mixture differs from it.
        mixtures: every candidate's mixture, ``continue``'s included. A candidate whose mixture
            is ``continue``'s needs no records: it is :data:`SAME_MIXTURE`.
        confidence: the family-wise one-sided level; each bound uses ``1 − (1 − confidence)/k``.

    Raises:
        RecommendationError: no ``continue`` mixture or records, or a candidate that differs
            from ``continue`` without records.
    """
    records = list(records)
    if REFERENCE not in mixtures:
        raise RecommendationError(f"the candidates have no {REFERENCE!r} mixture")
    reference_weights = dict(mixtures[REFERENCE])
    piloted = {record["method"] for record in records}
    same = [m for m, w in mixtures.items() if m != REFERENCE and same_weights(w, reference_weights)]
    compared = [m for m in mixtures if m != REFERENCE and m not in same]
    missing = sorted({REFERENCE, *compared} - piloted)
    if missing:
        raise RecommendationError(f"no pilot records for {missing}")
    if not compared:
        return Recommendation(
            method=REFERENCE,
            weights=reference_weights,
            basis=PILOT,
            reason=f"{NO_HEADROOM}: every candidate's mixture is {REFERENCE}'s",
            candidates=list(mixtures),
            comparisons=[_same_row(m) for m in same],
            pilot_tokens=max((int(r["tokens"]) for r in records), default=None),
            pilot_seeds=sorted({int(r["seed"]) for r in records if r["method"] == REFERENCE}),
        )
    k = max(len(compared), 1)
    level = 1.0 - (1.0 - confidence) / k
    table, stats = paired_comparisons(
        [r for r in records if r["method"] in {REFERENCE, *compared}],
        [REFERENCE, *compared],
        baselines=(REFERENCE,),
        confidence=level,
    )
    rows = [
        {
            "method": method,
            "n_seeds": int(table.at[method, "n_seeds"]),
            "mean_difference": float(table.at[method, "mean_difference"]),
            "se": float(table.at[method, "se"]),
            "upper_bound": float(table.at[method, "upper_95"]),
            "verdict": str(table.at[method, "verdict"]),
        }
        for method in compared
    ]
    rows += [_same_row(m) for m in same]
    seeds = sorted({int(r["seed"]) for r in records if r["method"] == REFERENCE})
    tokens = {int(r["tokens"]) for r in records}
    better = [row for row in rows if row["verdict"] == "better"]
    common = {
        "candidates": list(mixtures),
        "comparisons": rows,
        "confidence": level,
        "sigma": float(stats["sigma"]),
        "mde": float(stats["mde"]),
        "pilot_tokens": max(tokens) if tokens else None,
        "pilot_seeds": seeds,
    }
    at_level = f"one-sided {100 * level:.1f}% bound, Bonferroni over {k} candidate(s)"
    if better:
        best = min(better, key=lambda row: row["mean_difference"])
        reason = (
            f"{best['method']} beat {REFERENCE} in the pilot by {-best['mean_difference']:.4f} "
            f"± {best['se']:.4f} nats (paired over {best['n_seeds']} seeds; upper bound "
            f"{best['upper_bound']:+.4f} < 0, {at_level})"
        )
        return Recommendation(
            method=best["method"],
            weights=dict(mixtures[best["method"]]),
            basis=PILOT,
            reason=reason,
            **common,
        )
    reason = (
        f"{NO_HEADROOM}: no candidate beat {REFERENCE} in the pilot ({at_level}); "
        f"the pilot detects {stats['mde']:.4f} nats with 80% power"
    )
    return Recommendation(
        method=REFERENCE, weights=reference_weights, basis=PILOT, reason=reason, **common
    )


def _same_row(method: str) -> dict:
    """The comparison row of a candidate whose mixture is ``continue``'s."""
    return {
        "method": method,
        "n_seeds": 0,
        "mean_difference": 0.0,
        "se": math.nan,
        "upper_bound": math.nan,
        "verdict": SAME_MIXTURE,
    }


def recommend_from_proxy(
    tikmix_m_document: Mapping, mixtures: Mapping[str, Mapping[str, float]]
) -> Recommendation:
    """TiKMiX-M's own decision (its gate and confirmation, on its own proxy), labelled
    proxy-only: nothing was trained."""
    verdict = surrogate_verdict(tikmix_m_document["solver"])
    return Recommendation(
        method=verdict.recommended,
        weights=dict(mixtures[verdict.recommended]),
        basis=PROXY,
        reason=f"proxy-only (no pilot training; recommendation.pilot is null): {verdict.reason}",
        candidates=list(mixtures),
    )


def comparisons_frame(recommendation: Recommendation) -> pd.DataFrame:
    """The pilot comparisons as a table (:data:`COMPARISON_COLUMNS`)."""
    return pd.DataFrame(recommendation.comparisons, columns=list(COMPARISON_COLUMNS))


def read_recommendation(path: str | Path) -> Recommendation:
    document = restore_nan(read_json_file(path, "recommendation not found", RecommendationError))
    names = {item.name for item in fields(Recommendation)}
    return Recommendation(**{key: value for key, value in document.items() if key in names})


def recommendation_job(
    *,
    mixtures: Mapping[str, str | Path],
    records: Sequence[str | Path],
    tikmix_m: str | Path | None,
    out: str | Path,
    table: str | Path,
) -> Recommendation:
    """The ``recommendation`` rule: decide from the pilot records (or, with none, from
    TiKMiX-M's document) and write the document and the comparison table."""
    weights = {method: read_mixture(path).to_dict() for method, path in mixtures.items()}
    if records:
        pilot_records = [read_json_file(path, "pilot record not found") for path in records]
        recommendation = recommend_from_pilots(pilot_records, weights)
    elif tikmix_m is not None:
        recommendation = recommend_from_proxy(
            read_json_file(tikmix_m, "TiKMiX-M document not found"), weights
        )
    else:
        raise RecommendationError("neither pilot records nor a TiKMiX-M document to decide from")
    write_json_atomic(out, recommendation.to_dict())
    write_tables([(comparisons_frame(recommendation), table, False)])
    return recommendation
