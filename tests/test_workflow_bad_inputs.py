"""A study that cannot finish fails at start-up, naming the config key or the file and line.

:data:`BAD_INPUTS` is the table of mistakes a new user makes, each written as a change to a valid
study: the tiny synthetic config with its own tokenizer and one built-in checkpoint, so that the
checkpoint checks apply too. Extend it when a tour finds a new one: a row is a function that
changes the study (and may write files) and returns the strings the error must contain.

The start-up checks run while Snakemake parses the workflow, before it schedules any job (the
Snakefile's ``check_schema`` and ``validate``, then ``check_config`` in common.smk), so a failing
check means that no tokenizer, training or gradient job ran. The table calls them as the
Snakefile does, which takes milliseconds per row; :func:`test_cli_stops_with_one_short_message`
runs a few rows through ``snakemake --dry-run`` to show the wiring and the length of the message.
"""

from __future__ import annotations

import copy
import gzip
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import yaml
from conftest import tiny_config
from snakemake.utils import validate
from workflow_helpers import REPO, Workflow

from tikmix.config import ConfigError, check_config, check_schema
from tikmix.data.tokenizer import train_tokenizer
from tikmix.models.checkpoint import save_checkpoint
from tikmix.models.llama import ModelConfig, TinyLlama

SCHEMA = REPO / "workflow/schemas/config.schema.yaml"
VOCAB = 300


@dataclass
class Study:
    """A valid study's config and a folder for the files a row writes."""

    config: dict
    files: Path

    @property
    def first_domain(self) -> str:
        return sorted(self.config["domains"])[0]

    @property
    def first_task(self) -> str:
        return sorted(self.config["tasks"])[0]

    def domain_file(self, name: str, content: bytes, **spec) -> Path:
        """Point the first domain at a new file holding ``content``."""
        path = self.files / name
        path.write_bytes(content)
        self.config["domains"][self.first_domain] = {"paths": [str(path)], **spec}
        return path

    def task_file(self, content: bytes) -> Path:
        path = self.files / "task.jsonl"
        path.write_bytes(content)
        self.config["tasks"][self.first_task] = {"path": str(path)}
        return path

    def checkpoint(self) -> Path:
        return Path(self.config["checkpoints"]["ckpt-a"])


def start_up(config: dict) -> None:
    """The checks the workflow runs at parse time, in the Snakefile's order."""
    config = copy.deepcopy(config)
    check_schema(config, SCHEMA)
    validate(config, str(SCHEMA), set_default=True)
    checkpoints = list(config["checkpoints"]) or [
        f"stage1-{round(100 * f):03d}" for f in config["stage1"]["checkpoint_fractions"]
    ]
    check_config(config, demo=False, checkpoints=checkpoints)


def _rows(*rows: dict) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


TEXT = {"text": "a document"}
QA = {"context": "Q:", "continuation": " A"}


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def change(study: Study) -> list[str]:
        node = study.config
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
        return []

    return change


def _domain_rows(content: bytes, line: int | None, **spec):
    def change(study: Study) -> list[str]:
        path = study.domain_file("domain.jsonl", content, **spec)
        return [f"domains.{study.first_domain}.paths", f"{path}:{line}" if line else str(path)]

    return change


def _task_rows(content: bytes, line: int):
    def change(study: Study) -> list[str]:
        path = study.task_file(content)
        return [f"tasks.{study.first_task}.path", f"{path}:{line}"]

    return change


def _checkpoint_files(edit: Callable[[Path], None]):
    def change(study: Study) -> list[str]:
        directory = study.files / "broken-ckpt"
        shutil.copytree(study.checkpoint(), directory)
        edit(directory)
        study.config["checkpoints"]["ckpt-a"] = str(directory)
        return ["checkpoints.ckpt-a", str(directory)]

    return change


def _remove(*names: str):
    return lambda directory: [(directory / name).unlink() for name in names]


def _config_json(change: dict | str):
    def edit(directory: Path) -> None:
        path = directory / "config.json"
        if isinstance(change, str):
            path.write_text(change)
        else:
            path.write_text(json.dumps({**json.loads(path.read_text()), **change}))

    return edit


def _small_vocabulary_checkpoint(study: Study) -> list[str]:
    directory = study.files / "small-vocab"
    model = TinyLlama(ModelConfig(vocab_size=VOCAB - 40, d_model=16, n_layers=1, n_heads=2))
    save_checkpoint(directory, model, step=0, tokens_seen=0, mixture={}, tokenizer="t", seed=0)
    study.config["checkpoints"]["ckpt-a"] = str(directory)
    return ["checkpoints.ckpt-a", f"{VOCAB - 40} embedding rows", f"{VOCAB} tokens"]


def _no_checkpoint_directory(study: Study) -> list[str]:
    study.config["checkpoints"]["ckpt-a"] = str(study.files / "missing")
    return ["checkpoints.ckpt-a", "missing"]


def _prior_file_missing(study: Study) -> list[str]:
    study.config["stage1"]["prior"] = str(study.files / "weights.yaml")
    return ["stage1.prior", "weights.yaml"]


def _prior_file(extra: dict):
    """A prior weights file: every domain at an equal weight, then ``extra``."""

    def change(study: Study) -> list[str]:
        path = study.files / "weights.yaml"
        weights = {d: 1 / len(study.config["domains"]) for d in study.config["domains"]}
        path.write_text(yaml.safe_dump({**weights, **extra}))
        study.config["stage1"]["prior"] = str(path)
        return ["stage1.prior", str(path)]

    return change


def _tokenizer_file(study: Study) -> list[str]:
    path = study.files / "tokenizer.json"
    path.write_text('{"version": "1.0", "model": ')
    study.config["tokenizer"]["path"] = str(path)
    return ["tokenizer.path", str(path)]


def _gzip_rows(study: Study) -> list[str]:
    path = study.domain_file("domain.jsonl.gz", gzip.compress(b"not json\n" + _rows(TEXT)))
    return [f"domains.{study.first_domain}.paths", f"{path}:1"]


def _odd_bin(study: Study) -> list[str]:
    path = study.domain_file("tokens.bin", b"\x01\x00\x02", dtype="uint16")
    return [f"domains.{study.first_domain}.paths", str(path), "not a multiple"]


def _empty_npy(study: Study) -> list[str]:
    path = study.files / "tokens.npy"
    np.save(path, np.zeros(0, dtype=np.uint16))
    study.config["domains"][study.first_domain] = {"paths": [str(path)]}
    return [f"domains.{study.first_domain}.paths", str(path), "empty"]


#: (id, change, strings the error names). The change returns strings that depend on its files.
BAD_INPUTS = [
    # Unknown keys: one line with the closest valid key.
    ("unknown top-level key", _set("seeed", 1), ["'seeed'", "did you mean 'seed'"]),
    (
        "unknown nested key",
        _set("mixing", "tikmix_m", "candidate", 30),
        ["'mixing.tikmix_m.candidate'", "did you mean 'mixing.tikmix_m.candidates'"],
    ),
    (
        "unknown key of a domain",
        lambda s: _set("domains", s.first_domain, "text_feild", "body")(s),
        ["text_feild", "did you mean", "text_field"],
    ),
    # Schema: types and minima that match what the code needs.
    ("wrong type", _set("influence", "domain_tokens", "many"), ["'influence.domain_tokens'"]),
    (
        "TiKMiX-M candidates below the surrogate's 20",
        _set("mixing", "tikmix_m", "candidates", 12),
        ["'mixing.tikmix_m.candidates'", "20"],
    ),
    (
        "additivity mixtures below 4",
        _set("checks", "additivity", "mixtures", 3),
        ["'checks.additivity.mixtures'", "4"],
    ),
    ("unknown device", _set("device", "tpu"), ["'device'", "tpu"]),
    # Cross-field rules.
    (
        "RegMix top_k above n_simulations",
        _set("baselines", "regmix", "top_k", 5000),
        ["'baselines.regmix.top_k'", "n_simulations"],
    ),
    (
        "misspelled improvement reference",
        _set("stage2", "improvement_reference", "tikmx_d"),
        ["'stage2.improvement_reference'", "tikmx_d"],
    ),
    (
        "unknown stage-2 method",
        _set("stage2", "methods", ["natural", "tikmix_x"]),
        ["'stage2.methods[1]'", "tikmix_x", "did you mean 'tikmix_m'"],
    ),
    (
        "stage-2 checkpoint not among the checkpoints",
        _set("stage2", "checkpoint", "stage1-999"),
        ["'stage2.checkpoint'", "stage1-999", "ckpt-a"],
    ),
    (
        "search top_k above samples",
        _set("mixing", "tikmix_m", "search", {"samples": 16, "top_k": 32}),
        ["'mixing.tikmix_m.search.top_k'"],
    ),
    (
        "checkpoint fractions not increasing",
        _set("stage1", "checkpoint_fractions", [1.0, 0.5]),
        ["'stage1.checkpoint_fractions'"],
    ),
    # Files the config names.
    ("prior file missing", _prior_file_missing, []),
    (
        "prior file names an unknown domain",
        _prior_file({"not_a_domain": 0.0}),
        ["not_a_domain"],
    ),
    ("prior file with a negative weight", _prior_file({"domain0": -0.5}), []),
    ("tokenizer file malformed", _tokenizer_file, ["not a tokenizers tokenizer.json"]),
    (
        "tokenizer file missing",
        _set("tokenizer", "path", "/nonexistent/tokenizer.json"),
        ["'tokenizer.path'", "/nonexistent/tokenizer.json"],
    ),
    (
        "task file missing",
        lambda s: _set("tasks", s.first_task, {"path": "/nonexistent/t.jsonl"})(s),
        ["/nonexistent/t.jsonl", ".path'"],
    ),
    (
        "domain glob matches nothing",
        lambda s: _set("domains", s.first_domain, {"paths": ["/nonexistent/*.jsonl"]})(s),
        ["/nonexistent/*.jsonl", ".paths'"],
    ),
    # Checkpoints: present, loadable, and an embedding row for every token id.
    ("checkpoint directory missing", _no_checkpoint_directory, []),
    ("checkpoint without config.json", _checkpoint_files(_remove("config.json")), ["config.json"]),
    (
        "checkpoint without weights",
        _checkpoint_files(_remove("model.safetensors")),
        ["no safetensors weights"],
    ),
    (
        "checkpoint config.json not JSON",
        _checkpoint_files(_config_json("{not json")),
        ["config.json", "not valid JSON"],
    ),
    (
        "unsupported model_type",
        _checkpoint_files(_config_json({"model_type": "no_such_architecture"})),
        ["no_such_architecture"],
    ),
    (
        "built-in checkpoint without tikmix.json",
        _checkpoint_files(_remove("tikmix.json")),
        ["tikmix.json"],
    ),
    (
        "weights file that is not safetensors",
        _checkpoint_files(lambda d: (d / "model.safetensors").write_bytes(b"\xff" * 64)),
        ["model.safetensors", "not a safetensors file"],
    ),
    ("tokenizer larger than the embedding", _small_vocabulary_checkpoint, []),
    # Data files: first and last rows parse and carry the field.
    ("malformed first row", _domain_rows(b"{oops\n" + _rows(TEXT, TEXT), 1), ["malformed JSON"]),
    (
        "truncated last row",
        _domain_rows(_rows(TEXT, TEXT, TEXT) + b'{"text": "cut', 4),
        ["malformed JSON"],
    ),
    (
        "last row without the text field",
        _domain_rows(_rows(TEXT, TEXT, {"body": "x"}) + b"\n\n", 3),
        ["no field 'text'"],
    ),
    (
        "text field named in the config is absent",
        _domain_rows(_rows(TEXT, TEXT), 1, text_field="body"),
        ["no field 'body'"],
    ),
    (
        "invalid UTF-8 in the last row",
        _domain_rows(_rows(TEXT, TEXT) + b'{"text": "caf\xe9"}\n', 3),
        ["not valid UTF-8"],
    ),
    ("text field not a string", _domain_rows(_rows(TEXT, {"text": 3}), 2), ["must be a string"]),
    ("empty data file", _domain_rows(b"", None), ["no rows"]),
    ("malformed gzip row", _gzip_rows, ["malformed JSON"]),
    (".bin size not a multiple of its dtype", _odd_bin, []),
    ("empty token file", _empty_npy, []),
    ("task last row of unknown shape", _task_rows(_rows(QA, QA, {"question": "?"}), 3), ["shape"]),
    ("task rows of two shapes", _task_rows(_rows(QA, TEXT), 2), ["one shape"]),
    (
        "task answer out of range in the last row",
        _task_rows(_rows(QA, {"context": "Q", "choices": ["a", "b"], "answer": 2}), 2),
        ["out of range"],
    ),
]


@pytest.fixture(scope="module")
def valid_study(synthetic_corpus, tmp_path_factory) -> Study:
    """The tiny study with its own tokenizer and a built-in checkpoint that fits it."""
    root = tmp_path_factory.mktemp("valid_study")
    tokenizer = root / "tokenizer.json"
    texts = [
        json.loads(line)["text"]
        for line in next(iter(synthetic_corpus.domain_files.values())).read_text().splitlines()
    ]
    train_tokenizer(texts, VOCAB, tokenizer)
    model = TinyLlama(ModelConfig(vocab_size=VOCAB, d_model=16, n_layers=1, n_heads=2))
    checkpoint = root / "ckpt-a"
    save_checkpoint(checkpoint, model, step=0, tokens_seen=0, mixture={}, tokenizer="t", seed=0)
    config = tiny_config(synthetic_corpus)
    config["tokenizer"]["path"] = str(tokenizer)
    config["checkpoints"] = {"ckpt-a": str(checkpoint)}
    return Study(config, root)


@pytest.fixture
def study(valid_study, tmp_path) -> Study:
    return Study(copy.deepcopy(valid_study.config), tmp_path)


def test_the_valid_study_passes(valid_study):
    """The baseline of every row: without the change, start-up succeeds."""
    start_up(valid_study.config)
    assert safetensors.torch.load_file(valid_study.checkpoint() / "model.safetensors")


def test_the_table_has_at_least_25_mistakes():
    assert len(BAD_INPUTS) >= 25
    assert len({name for name, *_ in BAD_INPUTS}) == len(BAD_INPUTS)


@pytest.mark.parametrize(
    "change, expected", [pytest.param(c, e, id=name) for name, c, e in BAD_INPUTS]
)
def test_bad_input_fails_at_start_up_naming_key_and_file(study, change, expected):
    expected = [*expected, *change(study)]
    with pytest.raises(ConfigError) as failure:
        start_up(study.config)
    message = str(failure.value)
    print(message)
    assert "\n" not in message, "one line"
    assert message.startswith(("config key '", "unknown config key '")), message
    for text in expected:
        assert text in message, f"{text!r} not in: {message}"


#: One row raised in the Snakefile (the schema) and one in common.smk (files).
CLI_ROWS = ["unknown nested key", "tokenizer larger than the embedding"]


@pytest.mark.workflow
@pytest.mark.parametrize("name", CLI_ROWS)
def test_cli_stops_with_one_short_message(study, tmp_path, name):
    """The dry-run fails while parsing (no job is planned), and the error is one line between
    Snakemake's header and the Snakefile line it was raised at, not the schema."""
    change, expected = next((c, e) for n, c, e in BAD_INPUTS if n == name)
    expected = [*expected, *change(study)]
    flow = Workflow(tmp_path / "work")
    flow.write_config(study.config)
    result = flow.snakemake("--dry-run", check=False)
    output = (result.stdout + result.stderr).strip()
    print(output)
    assert result.returncode != 0
    assert "Job stats" not in output and "rule " not in output
    assert all(text in output for text in expected), output
    lines = [line for line in output.splitlines() if not line.startswith("Using workflow")]
    assert len(lines) <= 3, output
