"""Rule ``mixture_figures``: the mixtures' weights and predicted benefits."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tikmix.mixing.weights import read_influence_matrix
from tikmix.report.figures import mixture_figures

Paths = Sequence[str | Path]


def mixture_figures_job(
    *,
    influence: str | Path,
    mixtures: Paths,
    ckpt: str,
    methods: Sequence[str],
    weights_stem: str | Path,
    benefit_stem: str | Path,
) -> None:
    """Rule ``mixture_figures``: :func:`mixture_figures` of checkpoint ``ckpt``'s mixtures
    (``mixtures`` in the order of ``methods``)."""
    mixture_figures(
        read_influence_matrix(influence),
        dict(zip(methods, mixtures, strict=True)),
        weights_stem=weights_stem,
        benefit_stem=benefit_stem,
        checkpoint=ckpt,
    )
