"""Settings have one home: the schema's defaults are the settings objects' defaults, and
config/README.md documents every key of the schema."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from tikmix.cli import build_parser
from tikmix.core.gradient_pass import GradientPassSettings
from tikmix.core.settings import (
    Normalisation,
    Settings,
    TikmixDSettings,
    TikmixMBox,
    TikmixMGate,
    TikmixMSearch,
)
from tikmix.workflow import rule_settings, settings_params

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
GROUPS_WITH_DEFAULTS = (Normalisation, TikmixDSettings, TikmixMSearch, TikmixMBox, TikmixMGate)


def _section(schema: dict, keys: tuple[str, ...]) -> dict:
    for key in keys:
        schema = schema["properties"][key]
    return schema["properties"]


@pytest.mark.parametrize("group", GROUPS_WITH_DEFAULTS, ids=lambda g: g.__name__)
def test_schema_defaults_are_the_settings_defaults(group: type[Settings]) -> None:
    section = _section(SCHEMA, group.CONFIG_SECTION)
    for item in dataclasses.fields(group):
        where = ".".join((*group.CONFIG_SECTION, item.name))
        assert item.name in section, f"{where} is not in the schema"
        assert section[item.name]["default"] == item.default, where
    # and a config built from the schema's defaults gives the default settings object
    config = {}
    target = config
    for key in group.CONFIG_SECTION:
        target = target.setdefault(key, {})
    target.update({f.name: section[f.name]["default"] for f in dataclasses.fields(group)})
    assert group.from_config(config) == group()


def _schema_keys(schema: dict, prefix: str = "") -> set[str]:
    """Every leaf key of the schema, dotted; a user-named mapping (domains, tasks) adds its
    entries' keys under its own name."""
    keys = set()
    children = dict(schema.get("properties", {}))
    entries = schema.get("additionalProperties")
    if isinstance(entries, dict):
        children.update(entries.get("properties", {}))
    for name, child in children.items():
        path = f"{prefix}.{name}" if prefix else name
        nested = child.get("properties") or isinstance(child.get("additionalProperties"), dict)
        keys |= _schema_keys(child, path) if nested else {path}
    return keys


def _readme_keys(text: str) -> set[str]:
    """Keys in the first column of config/README.md's tables, with the section's prefix;
    ``a.b``, ``.c`` (a sibling of the previous key), ``a.{b, c}`` and ``a.*`` forms."""
    keys, section = set(), ""
    for line in text.splitlines():
        if line.startswith("## "):
            heading = re.match(r"## `([^`]+)`", line)
            section = heading.group(1) if heading else ""
        elif line.startswith("| `"):
            previous = None
            for token in re.findall(r"`([^`]+)`", line.split(" | ")[0]):
                if token.startswith(".") and previous:
                    token = previous.rpartition(".")[0] + token
                braces = re.fullmatch(r"(.*)\{(.*)\}", token)
                names = (
                    [braces.group(1) + n.strip() for n in braces.group(2).split(",")]
                    if braces
                    else [token]
                )
                for name in names:
                    name = name.removesuffix(".*")
                    keys.add(f"{section}.{name}" if section else name)
                previous = names[-1]
    return keys


def test_config_readme_documents_every_schema_key() -> None:
    documented = _readme_keys((REPO / "config" / "README.md").read_text())
    # a group documented as a whole (``regmix.model``) documents its keys
    missing = sorted(
        key
        for key in _schema_keys(SCHEMA)
        if not any(key == d or key.startswith(d + ".") for d in documented)
    )
    assert not missing, f"config/README.md does not document {missing}"


def test_command_line_defaults_are_the_settings_defaults() -> None:
    """``tikmix mix-d`` / ``mix-m`` take their options' defaults from the settings objects."""
    parser = build_parser()
    mix_d = parser.parse_args(["mix-d", "--influence", "B.csv", "--prior", "uniform", "--out", "o"])
    mix_m = parser.parse_args(
        ["mix-m", *"--table t --response r --influence B --prior uniform --start s".split()]
        + ["--out", "o"]
    )
    for args, groups in ((mix_d, (Normalisation,)), (mix_m, (Normalisation, TikmixMSearch))):
        for group in groups:
            for item in dataclasses.fields(group):
                assert getattr(args, item.name) == item.default, item.name
    assert (mix_d.alpha, mix_d.beta, mix_d.gamma) == (1.0, 1.0, 1.0)
    assert tuple(mix_m.box) == (TikmixMBox.low, TikmixMBox.high) == (0.5, 2.0)
    assert mix_m.min_spearman == TikmixMGate.min_spearman == 0.5
    changed = parser.parse_args(
        ["mix-m", *"--table t --response r --influence B --prior uniform --start s".split()]
        + ["--out", "o", "--topk", "7", "--kappa-max", "99", "--normaliser", "abs_max"]
    )
    assert (changed.top_k, changed.kappa_max, changed.normaliser) == (7, 99.0, "abs_max")


def test_rule_settings_turns_params_back_into_settings_objects() -> None:
    gradient_pass = GradientPassSettings("x", None, "fp32", 4, 8, 0, "cpu")
    params = {
        "upstream": "digest",
        "normalisation": Normalisation(eps=0.5).as_params(),
        "tikmix_d": TikmixDSettings(gamma=0.1).as_params(),
        "search": TikmixMSearch(iters=3).as_params(),
        "gradient_pass": gradient_pass.as_params(),
        "seed": 7,
    }

    class Snakemake:
        class Params(dict):
            pass

        def __init__(self) -> None:
            self.params = self.Params(params)

    settings = rule_settings(Snakemake())
    assert settings == {
        "normalisation": Normalisation(eps=0.5),
        "tikmix_d": TikmixDSettings(gamma=0.1),
        "search": TikmixMSearch(iters=3),
        "gradient_pass": gradient_pass,
        "seed": 7,
    }
    assert set(settings_params()) == {"normalisation", "tikmix_d", "search", "gradient_pass"}
