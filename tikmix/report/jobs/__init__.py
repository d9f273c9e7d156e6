"""The library side of the rule scripts of the checks and the report: one module per rule.

Each module's ``*_job`` function runs its rule's analysis (:mod:`tikmix.analysis`), writes the
result files and draws the figures (:mod:`tikmix.report.figures`). Its keyword arguments are
the rule's inputs and outputs (by name) and the rule's params (``rule_settings(snakemake)``, by
their names in the ``.smk`` file), so a script only parses ``snakemake`` and calls it. One
module per rule, because the workflow declares the modules a script imports (transitively) as
the rule's code: a change to one check's code reruns that check only. (The report's own job is
:func:`tikmix.report.markdown.report_job`.)
"""
