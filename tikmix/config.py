"""Checks of a workflow config that a JSON schema cannot express, run at start-up.

The schema (workflow/schemas/config.schema.yaml) checks types and names; this module checks that what
the config points to exists, so a typo fails in seconds, naming the key, before any job runs.
"""

from __future__ import annotations

import difflib
import glob
import sys
from pathlib import Path
from typing import Any

from tikmix import validation
from tikmix.core.conventions import MIXTURE_METHODS
from tikmix.core.errors import ConfigError
from tikmix.core.settings import TikmixCSettings

#: Mixtures a stage-2 method can name: results/mixtures/{ckpt}/{method}.json has a rule for each.
STAGE2_METHODS = MIXTURE_METHODS
#: Rows the TiKMiX-M surrogate needs: tikmix.mixing.surrogate.fit_surrogate's 5 folds x 4 rows.
MIN_SURROGATE_ROWS = 20
#: Mixtures the additivity check needs (tikmix.analysis.additivity: studentized residuals).
MIN_ADDITIVITY_MIXTURES = 4


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"config key '{key}': {message}")


def object_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The mapping branch of a nullable group (``anyOf: [null, object]``, as
    ``recommendation.pilot``); any other schema as it is."""
    for branch in schema.get("anyOf", ()):
        if branch.get("type") == "object":
            return branch
    return schema


def _schema_errors(config: Any, schema: dict[str, Any], path: str) -> None:
    """Raise one line for the first key the schema does not know (with the closest valid key)."""
    schema = object_schema(schema)
    if not isinstance(config, dict) or schema.get("type") not in ("object", None):
        return
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, value in config.items():
        where = f"{path}.{key}" if path else str(key)
        if key in properties:
            _schema_errors(value, properties[key], where)
        elif extra is False:
            close = difflib.get_close_matches(str(key), list(properties), n=1, cutoff=0.5)
            hint = f"; did you mean '{path + '.' if path else ''}{close[0]}'?" if close else ""
            known = ", ".join(sorted(properties))
            raise ConfigError(f"unknown config key '{where}'{hint} (valid here: {known})")
        elif isinstance(extra, dict):
            _schema_errors(value, extra, where)


def check_schema(config: dict[str, Any], schema_path: str | Path) -> None:
    """Raise ConfigError in one line for an unknown key or a value the schema rejects.

    Snakemake's own ``validate`` prints the whole schema (about a thousand lines) for an unknown
    key; this runs first and names the key, the closest valid one, and what is wrong.
    """
    import jsonschema
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text())
    _schema_errors(config, schema, "")
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        where = ".".join(str(part) for part in error.absolute_path) or "(top level)"
        raise ConfigError(f"config key '{where}': {error.message}")


def check_settings(config: dict[str, Any], checkpoints: list[str]) -> None:
    """Settings the schema accepts but the code cannot finish with (cross-field rules, minima).

    ``checkpoints`` are the names the workflow computes influence at (the user's or stage 1's).
    """
    tikmix_m = config["mixing"]["tikmix_m"]
    _require(
        tikmix_m["candidates"] >= MIN_SURROGATE_ROWS,
        "mixing.tikmix_m.candidates",
        f"TiKMiX-M's surrogate needs at least {MIN_SURROGATE_ROWS} measured mixtures "
        f"(5-fold cross-validation), got {tikmix_m['candidates']}",
    )
    _require(tikmix_m["low"] < tikmix_m["high"], "mixing.tikmix_m.low", "must be below high")
    search = tikmix_m["search"]
    _require(
        search["top_k"] <= search["samples"],
        "mixing.tikmix_m.search.top_k",
        f"must be <= search.samples ({search['samples']}), got {search['top_k']}",
    )
    _require(
        search["kappa_min"] <= search["kappa_max"],
        "mixing.tikmix_m.search.kappa_min",
        f"must be <= kappa_max ({search['kappa_max']}), got {search['kappa_min']}",
    )
    tikmix_c = config["mixing"]["tikmix_c"]
    _require(
        tikmix_c["kl_min"] <= tikmix_c["kl_max"],
        "mixing.tikmix_c.kl_min",
        f"must be <= kl_max ({tikmix_c['kl_max']}), got {tikmix_c['kl_min']}",
    )
    rollouts = tikmix_c["n_levels"] * tikmix_c["per_level"]
    _require(
        rollouts >= TikmixCSettings.MIN_ROLLOUTS,
        "mixing.tikmix_c.per_level",
        f"tikmix_c's fit needs at least {TikmixCSettings.MIN_ROLLOUTS} rollouts "
        f"(n_levels x per_level), got {rollouts}",
    )
    additivity = config["checks"]["additivity"]
    _require(
        additivity["mixtures"] >= MIN_ADDITIVITY_MIXTURES,
        "checks.additivity.mixtures",
        f"the additivity check needs at least {MIN_ADDITIVITY_MIXTURES} mixtures, "
        f"got {additivity['mixtures']}",
    )
    _require(additivity["low"] < additivity["high"], "checks.additivity.low", "must be below high")
    regmix = config["baselines"]["regmix"]
    _require(
        regmix["top_k"] <= regmix["n_simulations"],
        "baselines.regmix.top_k",
        f"must be <= baselines.regmix.n_simulations ({regmix['n_simulations']}), "
        f"got {regmix['top_k']}",
    )
    dirichlet = regmix["dirichlet"]
    _require(
        dirichlet["min_strength"] <= dirichlet["max_strength"],
        "baselines.regmix.dirichlet.min_strength",
        f"must be <= max_strength ({dirichlet['max_strength']})",
    )
    stage2 = config["stage2"]
    methods = list(stage2["methods"])
    for i, method in enumerate(methods):
        close = difflib.get_close_matches(method, STAGE2_METHODS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        _require(
            method in STAGE2_METHODS,
            f"stage2.methods[{i}]",
            f"unknown method '{method}' (known: {', '.join(STAGE2_METHODS)}){hint}",
        )
    reference = stage2["improvement_reference"]
    _require(
        reference == "checkpoint" or reference in methods,
        "stage2.improvement_reference",
        f"'{reference}' is neither 'checkpoint' nor one of stage2.methods {methods}",
    )
    recommendation = config["recommendation"]
    candidates = list(recommendation["candidates"])
    _require(
        "continue" in candidates,
        "recommendation.candidates",
        f"must include 'continue' (the mixture every candidate must beat), got {candidates}",
    )
    for i, method in enumerate(candidates):
        _require(
            method in STAGE2_METHODS,
            f"recommendation.candidates[{i}]",
            f"unknown method '{method}' (known: {', '.join(STAGE2_METHODS)})",
        )
    pilot = recommendation["pilot"]
    rollout_seed = config["mixing"]["tikmix_c"]["rollout_seed"]
    _require(
        rollout_seed not in set(stage2["seeds"]) | set((pilot or {}).get("seeds", ())),
        "mixing.tikmix_c.rollout_seed",
        f"{rollout_seed} is also a stage-2 or pilot seed: tikmix_c's fit would share its runs' "
        "randomness with the runs that check it",
    )
    if pilot is None:
        _require(
            "tikmix_m" in candidates,
            "recommendation.pilot",
            "null (a proxy-only recommendation) needs tikmix_m among the candidates: it is "
            "TiKMiX-M's own decision",
        )
    else:
        shared = sorted(set(pilot["seeds"]) & set(stage2["seeds"]))
        _require(
            not shared,
            "recommendation.pilot.seeds",
            f"{shared} are also stage2.seeds: the decision would share its runs' randomness "
            "with the evaluation that checks it",
        )
    if stage2["checkpoint"] is not None:
        _require(
            stage2["checkpoint"] in checkpoints,
            "stage2.checkpoint",
            f"'{stage2['checkpoint']}' is not one of the checkpoints {checkpoints}",
        )


def check_config(
    config: dict[str, Any],
    demo: bool = False,
    checkpoints: list[str] | None = None,
    check_data: bool = True,
    checked_files: validation.CheckedFiles | None = None,
) -> None:
    """Raise ConfigError for paths that do not exist and settings that contradict each other.

    With ``demo`` the domain and task files are produced by ``fetch_demo_data`` and are not checked.
    Otherwise every row of every data and task file is read (once per version of a file when
    ``checked_files`` remembers them) and every user checkpoint is checked against the tokenizer
    and the settings (:mod:`tikmix.validation`); ``checkpoints`` are the names influence is
    computed at (see :func:`check_settings`). ``check_data=False`` skips the rows of the data files
    (a cluster job re-parsing the workflow: they were checked at start-up).
    """
    for kind in ("domains", "tasks", "checkpoints"):
        validation.check_names(kind, list(config[kind]))
    if not demo:
        for domain, spec in config["domains"].items():
            for pattern in spec["paths"]:
                _require(
                    bool(glob.glob(pattern, recursive=True)),
                    f"domains.{domain}.paths",
                    f"no file matches '{pattern}' (domain '{domain}')",
                )
        for task, spec in config["tasks"].items():
            _require(
                Path(spec["path"]).is_file(), f"tasks.{task}.path", f"no file '{spec['path']}'"
            )
    tokenizer = config["tokenizer"]["path"]
    if tokenizer is not None:
        _require(
            Path(tokenizer).is_file() or (Path(tokenizer) / "tokenizer.json").is_file(),
            "tokenizer.path",
            f"no tokenizer file '{tokenizer}' (nor a directory holding tokenizer.json)",
        )
    if config["checkpoints"]:
        _require(
            tokenizer is not None,
            "tokenizer.path",
            "your own checkpoints need the tokenizer they were trained with",
        )
    fractions = config["stage1"]["checkpoint_fractions"]
    _require(
        fractions == sorted(set(fractions)),
        "stage1.checkpoint_fractions",
        f"must be strictly increasing, got {fractions}",
    )
    from tikmix.mixing.priors import prior_kind

    stage1_prior = config["stage1"]["prior"]
    # The mixture files stage 1 trained on: stage1.prior's, and your own checkpoints' `prior`.
    prior_files = {"stage1.prior": stage1_prior} if prior_kind(stage1_prior) == "file" else {}
    if config.get("prior") is not None:
        prior_files["prior"] = config["prior"]
    for key, prior in prior_files.items():
        _require(Path(prior).is_file(), key, f"no such weights file '{prior}'")
        from tikmix.core.mixture import read_mixture

        try:  # the jobs' own reading: domains, weights >= 0, summing to 1
            read_mixture(prior, sorted(config["domains"]))
        except ValueError as error:
            raise ConfigError(f"config key '{key}': {error}") from None
    check_settings(config, list(checkpoints or config["checkpoints"]))
    vocab = validation.study_tokenizer(tokenizer) if tokenizer is not None else None
    validation.check_checkpoints(
        config["checkpoints"],
        vocab,
        config["data"]["seq_len"],
        config["influence"]["tracked_modules"],
    )
    if not demo and check_data:
        validation.check_data_files(
            config["domains"],
            config["tasks"],
            vocab,
            checked_files,
            config["data"]["steering_fraction"],
        )


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A study's config file, or ConfigError naming the file (and the line of a YAML error)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no config file '{path}'")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML ({problem})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a config file maps keys to values, got {type(config).__name__}")
    return config


def main(argv: list[str] | None = None) -> int:
    """``python -m tikmix.config my.yaml``: the workflow's start-up checks of a study file.

    Snakemake reads ``--configfile`` itself before any code of the workflow runs, and for a
    missing file (a traceback) or a YAML syntax error (no file, no line) its message names
    neither; this names both, then runs the checks the Snakefile runs, one line each.
    """
    import argparse

    from snakemake.utils import validate

    parser = argparse.ArgumentParser(prog="python -m tikmix.config", description=main.__doc__)
    parser.add_argument("configfile")
    args = parser.parse_args(argv)
    schema = Path(__file__).resolve().parents[1] / "workflow/schemas/config.schema.yaml"
    try:
        config = read_config_file(args.configfile)
        check_schema(config, schema)
        validate(config, str(schema), set_default=True)
        fractions = config["stage1"]["checkpoint_fractions"]
        stage1 = [f"stage1-{round(100 * fraction):03d}" for fraction in fractions]
        check_config(
            config,
            demo=config["demo"]["fetch"],
            checkpoints=list(config["checkpoints"]) or stage1,
            checked_files=validation.CheckedFiles(),
        )
    except ConfigError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"{args.configfile}: the start-up checks pass")
    return 0


if __name__ == "__main__":
    sys.exit(main())
