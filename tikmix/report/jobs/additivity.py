"""Rule ``additivity``: the appendix-D check, its tables, record and scatters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from tikmix.analysis.additivity import run_additivity_check, write_additivity
from tikmix.core.gradient_pass import GradientPassSettings
from tikmix.core.settings import AdditivitySettings
from tikmix.report.figures import additivity_figures


def additivity_job(
    *,
    checkpoint: str | Path,
    influence: str | Path,
    reference: str | Path,
    preconditioned: str | Path,
    points: str | Path,
    summary: str | Path,
    mixtures_table: str | Path,
    record: str | Path,
    ckpt: str,
    domain_dirs: Mapping[str, str | Path],
    tasks: Sequence[str],
    figure_stems: Sequence[str | Path],
    gradient_pass: GradientPassSettings,
    additivity_settings: AdditivitySettings,
) -> None:
    """Rule ``additivity``: the check at checkpoint ``ckpt`` around ``reference`` (TiKMiX-D's
    mixture), its tables and record, and a scatter per task; the perturbed mixtures are
    written to ``mixtures_table``. The gradient passes' settings come from ``gradient_pass``.
    """
    check, passes = additivity_settings, gradient_pass
    # The options of tikmix.analysis.additivity.additivity_check, in the record's order.
    options = {
        "n_mixtures": check.mixtures,
        "low": check.low,
        "high": check.high,
        "tokens": check.tokens,
        "seq_len": passes.seq_len,
        "batch_size": passes.batch_size,
        "seed": passes.seed,
        "outlier_threshold": check.outlier_threshold,
        "noise_mixtures": check.noise.mixtures,
        "noise_replicates": check.noise.replicates,
        "projection": passes.projection,
        "precision": passes.precision,
    }
    result = run_additivity_check(
        checkpoint=checkpoint,
        domain_dirs=domain_dirs,
        influence_csv=influence,
        reference_mixture=reference,
        preconditioned=preconditioned,
        tracked_modules=gradient_pass.tracked_modules,
        device=gradient_pass.device,
        **options,
    )
    write_additivity(
        result,
        points=points,
        summary=summary,
        mixtures=mixtures_table,
        record=record,
        settings=options,
    )
    additivity_figures(
        result.points,
        result.summary,
        dict(zip(tasks, figure_stems, strict=True)),
        checkpoint=ckpt,
    )
