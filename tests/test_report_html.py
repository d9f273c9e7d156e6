"""`snakemake --report`: the self-contained HTML report embeds every figure of the run."""

from __future__ import annotations

import base64

import pytest


@pytest.fixture(scope="module")
def html_report(completed_workflow, tmp_path_factory):
    """The tiny workflow's report as a single HTML file (Snakemake 9: ``.html`` embeds every
    registered file as a data URI; ``.zip`` would store them beside the page instead)."""
    path = tmp_path_factory.mktemp("html_report") / "report.html"
    completed_workflow.snakemake("--report", str(path))
    return path.read_text(encoding="utf-8")


def test_html_report_embeds_every_figure(completed_workflow, html_report):
    figures = sorted((completed_workflow.workdir / "results" / "report" / "figures").glob("*.png"))
    names = {p.name for p in figures}
    # The figures of every stage, figure 4 (stage 2) among them.
    assert {"benefit_vs_improvement.png", "compute.png", "benefit_trajectories.png"} <= names
    assert any(n.startswith("influence_") for n in names)
    assert any(n.startswith("additivity_") for n in names)
    missing = [p.name for p in figures if p.name not in html_report]
    assert not missing, f"figures not registered with report(): {missing}"
    # Named and embedded: each PNG's bytes are in the page as a data URI.
    not_embedded = [
        p.name for p in figures if base64.b64encode(p.read_bytes()).decode() not in html_report
    ]
    assert not not_embedded, f"figures named but not embedded: {not_embedded}"


def test_html_report_has_the_tables_of_every_stage(html_report):
    for name in (
        "influence.csv",
        "additivity_summary.csv",
        "ranking.csv",
        "compute.csv",
        "compute_components.csv",
        "table.csv",
        "summary.csv",
        "figure4.csv",
        "report.md",
    ):
        assert name in html_report, f"{name} is not in the HTML report"
