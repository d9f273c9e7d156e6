"""Rule ``additivity``: the appendix-D check, its tables, record and scatters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from tikmix.analysis.additivity import run_additivity_check, write_additivity
from tikmix.core.gradient_pass import GradientPassSettings
from tikmix.report.figures import additivity_figures

#: The settings of :func:`tikmix.analysis.additivity.additivity_check` the rule gives, in the
#: order of the record's ``settings``.
SETTINGS = (
    "n_mixtures",
    "low",
    "high",
    "tokens",
    "seq_len",
    "batch_size",
    "seed",
    "outlier_threshold",
    "noise_mixtures",
    "noise_replicates",
    "projection",
    "precision",
)


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
    mixtures: int,
    noise: Mapping[str, int],
    **settings,
) -> None:
    """Rule ``additivity``: the check at checkpoint ``ckpt`` around ``reference`` (TiKMiX-D's
    mixture), its tables and record, and a scatter per task.

    ``mixtures`` is the number of perturbed mixtures (``mixtures_table`` the file they are
    written to), ``noise`` the replicates' ``{mixtures, replicates}``; ``settings`` are the
    rest of :data:`SETTINGS` (``low, high, tokens, outlier_threshold``), all required; the
    gradient passes' settings come from ``gradient_pass``.
    """
    given = {
        "n_mixtures": mixtures,
        "noise_mixtures": noise["mixtures"],
        "noise_replicates": noise["replicates"],
        "seq_len": gradient_pass.seq_len,
        "batch_size": gradient_pass.batch_size,
        "seed": gradient_pass.seed,
        "projection": gradient_pass.projection,
        "precision": gradient_pass.precision,
        **settings,
    }
    unknown = sorted(set(given) - set(SETTINGS))
    if unknown:
        raise TypeError(f"additivity_job: unknown setting(s) {unknown}")
    options = {key: given[key] for key in SETTINGS}
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
