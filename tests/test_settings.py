"""Settings have one home: the schema's defaults are the settings objects' defaults, and
config/README.md documents every key of the schema."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from tikmix.cli import build_parser
from tikmix.config import object_schema
from tikmix.core.gradient_pass import GradientPassSettings
from tikmix.core.settings import (
    AdditivitySettings,
    AvailabilitySettings,
    DirichletSettings,
    DoremiSettings,
    Normalisation,
    ProxyModel,
    RegmixSettings,
    Settings,
    Stage2Settings,
    TikmixCSettings,
    TikmixDSettings,
    TikmixMBox,
    TikmixMGate,
    TikmixMSearch,
)
from tikmix.data.sources import DomainSource
from tikmix.workflow import rule_settings, settings_params

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
GROUPS_WITH_DEFAULTS = (
    Normalisation,
    TikmixDSettings,
    AvailabilitySettings,
    TikmixCSettings,
    TikmixMSearch,
    TikmixMBox,
    TikmixMGate,
    Stage2Settings,
    RegmixSettings,
    DoremiSettings,
    AdditivitySettings,
)


def _section(schema: dict, keys: tuple[str, ...]) -> dict:
    for key in keys:
        schema = schema["properties"][key]
    return schema["properties"]


def _check_defaults(group: type[Settings], section: dict, where: tuple[str, ...]) -> dict:
    """Assert the group's defaults are ``section``'s (a nested group's, its sub-section's);
    returns the section's defaults as a config mapping."""
    defaults = {}
    for item in dataclasses.fields(group):
        key = ".".join((*where, item.name))
        assert item.name in section, f"{key} is not in the schema"
        if isinstance(item.default, Settings):
            nested = section[item.name]["properties"]
            defaults[item.name] = _check_defaults(type(item.default), nested, (*where, item.name))
        else:
            assert section[item.name]["default"] == item.default, key
            defaults[item.name] = section[item.name]["default"]
    return defaults


@pytest.mark.parametrize("group", GROUPS_WITH_DEFAULTS, ids=lambda g: g.__name__)
def test_schema_defaults_are_the_settings_defaults(group: type[Settings]) -> None:
    defaults = _check_defaults(group, _section(SCHEMA, group.CONFIG_SECTION), group.CONFIG_SECTION)
    # and a config built from the schema's defaults gives the default settings object
    config = {}
    target = config
    for key in group.CONFIG_SECTION:
        target = target.setdefault(key, {})
    target.update(defaults)
    assert group.from_config(config) == group()


def test_nested_groups_come_back_from_config_and_params() -> None:
    """A nested group (RegMix's generator and proxy shape) is read from its sub-section, and a
    rule param (plain mappings all the way down) gives the same object back."""
    config = {"baselines": {"regmix": {"top_k": 7, "dirichlet": {"max_usage": None}}}}
    regmix = RegmixSettings.from_config(config)
    assert regmix == RegmixSettings(top_k=7, dirichlet=DirichletSettings(max_usage=None))
    assert regmix.model == ProxyModel()
    params = regmix.as_params()
    assert params["dirichlet"]["max_usage"] is None and isinstance(params["model"], dict)
    assert RegmixSettings.from_params(params) == regmix


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
        child = object_schema(child)
        nested = child.get("properties") or isinstance(child.get("additionalProperties"), dict)
        keys |= _schema_keys(child, path) if nested else {path}
    return keys


def _readme_key_names(token: str, previous: str | None) -> list[str]:
    """The keys one README token names: ``.c`` is a sibling of ``previous``, ``a.{b, c}`` two."""
    if token.startswith(".") and previous:
        token = previous.rpartition(".")[0] + token
    braces = re.fullmatch(r"(.*)\{(.*)\}", token)
    if not braces:
        return [token]
    return [braces.group(1) + name.strip() for name in braces.group(2).split(",")]


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
                names = _readme_key_names(token, previous)
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


def _readme_defaults(text: str) -> list[tuple[str, object]]:
    """(dotted key, default) of config/README.md's rows that give defaults in brackets:
    ``a`` [x]; ``a`` [x], ``b`` [y]; ``a``, ``.b`` [x, y]; and ``a.{b, c}`` [x, y]."""
    pairs, section = [], ""
    for line in text.splitlines():
        if line.startswith("## "):
            heading = re.match(r"## `([^`]+)`", line)
            section = heading.group(1) if heading else ""
        elif line.startswith("| `"):
            pending: list[str] = []
            previous = ""
            cell = line.split(" | ")[0]
            for key, default in re.findall(r"`([^`]+)`|\[((?:[^\[\]]|\[[^\]]*\])*)\]", cell):
                if key:
                    names = _readme_key_names(key, previous)
                    pending += names
                    previous = names[-1]
                    continue
                values = yaml.safe_load(f"[{default}]")
                if len(pending) == 1:
                    values = [values[0] if len(values) == 1 else values]
                for name, value in zip(pending, values, strict=True):
                    pairs.append((f"{section}.{name}" if section else name, value))
                pending = []
    return pairs


def _schema_default(dotted: str) -> object:
    node = SCHEMA
    for key in dotted.split("."):
        properties = node.get("properties", {})
        node = object_schema(
            properties[key]
            if key in properties
            else node["additionalProperties"]["properties"][key]
        )
    return node["default"]


def test_config_readme_defaults_are_the_schema_defaults() -> None:
    """The defaults config/README.md gives in brackets are the schema's (and so the settings
    objects'): the README documents them, it is not another home of theirs."""
    pairs = _readme_defaults((REPO / "config" / "README.md").read_text())
    assert len(pairs) > 50
    for key, documented in pairs:
        default = _schema_default(key)
        if isinstance(documented, str) and isinstance(default, float):
            documented = float(documented)  # YAML reads 1e-8 as a string
        assert documented == default, f"config/README.md: {key} [{documented}], schema {default}"


def test_a_domain_sources_text_field_default_is_the_schemas() -> None:
    entry = SCHEMA["properties"]["domains"]["additionalProperties"]["properties"]
    assert DomainSource.text_field == entry["text_field"]["default"]
    assert DomainSource.from_config("d", {"paths": ["x"]}).text_field == DomainSource.text_field


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
    # One default for the caps: the command line's is the workflow's mixing.max_epochs.
    assert mix_d.max_epochs == AvailabilitySettings.max_epochs == SCHEMA["properties"]["mixing"][
        "properties"
    ]["max_epochs"]["default"] == 4
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
        "box": TikmixMBox(low=0.25).as_params(),
        "doremi": DoremiSettings(eta=0.5).as_params(),
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
        "box": TikmixMBox(low=0.25),
        "doremi": DoremiSettings(eta=0.5),
        "gradient_pass": gradient_pass,
        "seed": 7,
    }
    assert set(settings_params()) == {
        "availability",
        "normalisation",
        "tikmix_d",
        "tikmix_c",
        "search",
        "box",
        "gate",
        "stage2",
        "regmix",
        "doremi",
        "additivity_settings",
        "gradient_pass",
    }
