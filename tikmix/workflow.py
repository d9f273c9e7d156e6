"""Glue between Snakemake and the library: code-as-input discovery and script logging.

Snakemake reruns a job when one of its declared inputs changes. A rule's script imports library
modules, so the workflow declares, for each script, the transitive closure of the `tikmix` modules it
imports: editing one module then reruns exactly the rules whose code depends on it.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "tikmix"


def _module_file(root: Path, dotted: str) -> Path | None:
    base = root.joinpath(*dotted.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _imported_modules(path: Path, dotted: str | None) -> set[str]:
    """Dotted names of tikmix modules imported by a file (``dotted`` is its own module name)."""
    stat = path.stat()
    return set(_parsed_imports(str(path.resolve()), stat.st_mtime_ns, stat.st_size, dotted))


@functools.cache
def _parsed_imports(path: str, mtime_ns: int, size: int, dotted: str | None) -> frozenset[str]:
    """:func:`_imported_modules` of one version of a file: the workflow declares the code of
    every rule at parse time and most rules share modules, so each file is parsed once."""
    path = Path(path)
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    package = None
    if dotted is not None:
        package = dotted if path.name == "__init__.py" else dotted.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if package is None:
                    continue
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{anchor}.{node.module}" if node.module else anchor
            else:
                module = node.module or ""
            names.add(module)
            # `from tikmix.data import sampler` imports a submodule, not only a name
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return frozenset(n for n in names if n == PACKAGE or n.startswith(PACKAGE + "."))


def library_dependencies(script: str | Path, root: str | Path) -> list[str]:
    """Library files (relative to ``root``) that ``script`` imports, directly or transitively.

    Parent packages' ``__init__.py`` files are included, since importing a submodule runs them,
    but the re-exports inside them are not followed: they exist for the Python API's convenience and
    do not change what a rule computes, and following them would make every rule of a sub-package
    rerun when any module of it changes.
    """
    root = Path(root)
    seen: dict[str, Path] = {}
    stack = list(_imported_modules(Path(script), None))
    while stack:
        dotted = stack.pop()
        parts = dotted.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if prefix in seen:
                continue
            found = _module_file(root, prefix)
            if found is None:
                continue
            seen[prefix] = found
            if found.name != "__init__.py" or prefix == dotted:
                stack.extend(_imported_modules(found, prefix))
    return sorted(str(p.relative_to(root)) for p in seen.values())


#: The provenance digest every rule gets as a param (common.smk); it is for Snakemake's rerun
#: trigger, not an argument of the library function a script calls.
PROVENANCE_PARAM = "upstream"


def rule_settings(snakemake) -> dict:  # noqa: ANN001 - Snakemake's object
    """A rule's params as keyword arguments, without the provenance digest.

    Every script passes its settings this way. A param named after a settings group
    (:func:`settings_params`) becomes that group's object (:mod:`tikmix.core.settings`).
    """
    settings = {k: v for k, v in snakemake.params.items() if k != PROVENANCE_PARAM}
    for name, group in settings_params().items():
        if name in settings:
            settings[name] = group.from_params(settings[name])
    return settings


def settings_params() -> dict[str, type]:
    """Rule param name -> the settings object it carries (``as_params`` of it, common.smk)."""
    from tikmix.core.gradient_pass import GradientPassSettings
    from tikmix.core.settings import (
        AdditivitySettings,
        AvailabilitySettings,
        DoremiSettings,
        Normalisation,
        RegmixSettings,
        Stage2Settings,
        TikmixCSettings,
        TikmixDSettings,
        TikmixMBox,
        TikmixMGate,
        TikmixMSearch,
    )

    return {
        "gradient_pass": GradientPassSettings,
        "availability": AvailabilitySettings,
        "normalisation": Normalisation,
        "tikmix_d": TikmixDSettings,
        "tikmix_c": TikmixCSettings,
        "search": TikmixMSearch,
        "box": TikmixMBox,
        "gate": TikmixMGate,
        "stage2": Stage2Settings,
        "regmix": RegmixSettings,
        "doremi": DoremiSettings,
        "additivity_settings": AdditivitySettings,
    }


#: A log record attribute: the record goes to the job's log file, not to the console.
LOG_ONLY = "tikmix_log_only"


class _ConsoleFormatter(logging.Formatter):
    """Records without their traceback: the console gets one line per record, the log file all."""

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text
        record.exc_info = record.exc_text = None
        try:
            return super().format(record)
        finally:
            record.exc_info, record.exc_text = saved


def failure_line(error: BaseException) -> str:
    """What a failed job prints to the console: the exception's type and the first line of its
    message, which names the file, line or key at fault (the full traceback is in the log)."""
    message = str(error).strip().splitlines()
    return f"{type(error).__name__}: {message[0]}" if message else type(error).__name__


@contextlib.contextmanager
def script_logging(snakemake) -> Iterator[logging.Logger]:  # noqa: ANN001 - Snakemake's object
    """Send the library's log records to the console and the rule's log file.

    A failing job prints one line to the console, naming what is wrong and the log file, and
    exits with status 1; the traceback goes to the log file only (Python's default handler, the
    logger and Snakemake's ``show-failed-logs`` would each print it again). A rule without a log
    file fails with the plain traceback.
    """
    log_path = Path(snakemake.log[0]) if len(snakemake.log) else None
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(_ConsoleFormatter(fmt))
    handlers: list[logging.Handler] = [console]
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
        # The job's identity lines are for its log; the console has Snakemake's job header.
        console.addFilter(lambda record: not getattr(record, LOG_ONLY, False))
    logging.basicConfig(level=logging.INFO, format=fmt, handlers=handlers, force=True)
    # Torch would otherwise start one thread per core of the node, oversubscribing it when
    # Snakemake runs several jobs side by side.
    import torch

    from tikmix.resources import return_freed_blocks_to_system

    torch.set_num_threads(max(1, int(snakemake.threads)))
    return_freed_blocks_to_system()  # a pass's peak is what it holds, not what malloc kept
    logger = logging.getLogger(f"tikmix.rule.{snakemake.rule}")
    log_only = {"extra": {LOG_ONLY: True}}
    logger.info("rule %s, wildcards %s", snakemake.rule, dict(snakemake.wildcards), **log_only)
    # The digest of the settings and user inputs the job's inputs came from (tikmix.provenance).
    logger.info(
        "provenance: upstream %s", getattr(snakemake.params, PROVENANCE_PARAM, "-"), **log_only
    )
    # Where the job ran: on a cluster this ties a log to its scheduler record and its GPU.
    logger.info(
        "job environment: SLURM_JOB_ID=%s CUDA_VISIBLE_DEVICES=%s threads=%d",
        os.environ.get("SLURM_JOB_ID", "-"),
        os.environ.get("CUDA_VISIBLE_DEVICES", "-"),
        snakemake.threads,
        **log_only,
    )
    try:
        yield logger
    except Exception as error:
        if log_path is None:
            logger.exception("rule %s failed", snakemake.rule)
            raise
        logger.error(
            "rule %s failed: %s (traceback in %s)",
            snakemake.rule,
            failure_line(error),
            log_path,
            exc_info=True,
        )
        raise SystemExit(1) from None
