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
    from tikmix.core.settings import Normalisation, TikmixDSettings, TikmixMSearch

    return {
        "gradient_pass": GradientPassSettings,
        "normalisation": Normalisation,
        "tikmix_d": TikmixDSettings,
        "search": TikmixMSearch,
    }


@contextlib.contextmanager
def script_logging(snakemake) -> Iterator[logging.Logger]:  # noqa: ANN001 - Snakemake's object
    """Send the library's log records and any traceback of a rule script to the rule's log file."""
    log_path = Path(snakemake.log[0]) if len(snakemake.log) else None
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    # Torch would otherwise start one thread per core of the node, oversubscribing it when
    # Snakemake runs several jobs side by side.
    import torch

    torch.set_num_threads(max(1, int(snakemake.threads)))
    logger = logging.getLogger(f"tikmix.rule.{snakemake.rule}")
    logger.info("rule %s, wildcards %s", snakemake.rule, dict(snakemake.wildcards))
    # The digest of the settings and user inputs the job's inputs came from (tikmix.provenance).
    logger.info("provenance: upstream %s", getattr(snakemake.params, PROVENANCE_PARAM, "-"))
    # Where the job ran: on a cluster this ties a log to its scheduler record and its GPU.
    logger.info(
        "job environment: SLURM_JOB_ID=%s CUDA_VISIBLE_DEVICES=%s threads=%d",
        os.environ.get("SLURM_JOB_ID", "-"),
        os.environ.get("CUDA_VISIBLE_DEVICES", "-"),
        snakemake.threads,
    )
    try:
        yield logger
    except Exception:
        logger.exception("rule %s failed", snakemake.rule)
        raise
