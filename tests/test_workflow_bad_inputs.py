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
import torch
import transformers
import yaml
from conftest import tiny_config
from snakemake.utils import validate
from workflow_helpers import REPO, Workflow

from tikmix.config import check_config, check_schema
from tikmix.config import main as config_main
from tikmix.core.errors import ConfigError
from tikmix.data.tokenizer import train_tokenizer
from tikmix.models.checkpoint import save_checkpoint
from tikmix.models.llama import ModelConfig, TinyLlama
from tikmix.validation import CheckedFiles, check_data_files

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


def _task_too_small_to_split(study: Study) -> list[str]:
    """3 items at the default fraction 0.5: 2 steer and 1 would score (each half needs 2)."""
    study.task_file(_rows(*({"context": f"Q{i}:", "continuation": f" A{i}"} for i in range(3))))
    task = study.first_task
    return [f"tasks.{task}.path", f"task '{task}' has 3 items", "data.steering_fraction 0.5"]


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


def _hf_checkpoint(config_change: dict | None = None, generation: dict | None = None):
    """Point ckpt-b, the study's Hugging Face checkpoint, at a copy with a changed config.json
    (and a generation_config.json)."""

    def change(study: Study) -> list[str]:
        directory = study.files / "hf-ckpt"
        shutil.copytree(study.config["checkpoints"]["ckpt-b"], directory)
        path = directory / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **(config_change or {})}))
        if generation is not None:
            (directory / "generation_config.json").write_text(json.dumps(generation))
        study.config["checkpoints"]["ckpt-b"] = str(directory)
        return [str(directory)]

    return change


def _f8_tensor(study: Study) -> list[str]:
    directory = study.files / "f8-ckpt"
    shutil.copytree(study.config["checkpoints"]["ckpt-b"], directory)
    weights = safetensors.torch.load_file(directory / "model.safetensors")
    weights["model.norm.weight"] = weights["model.norm.weight"].to(torch.float8_e4m3fn)
    safetensors.torch.save_file(weights, directory / "model.safetensors")
    study.config["checkpoints"]["ckpt-b"] = str(directory)
    return ["checkpoints.ckpt-b", str(directory / "model.safetensors"), "F8_E4M3"]


def _tokenizer_without_eos(study: Study) -> list[str]:
    path = study.files / "tokenizer.json"
    document = json.loads(Path(study.config["tokenizer"]["path"]).read_text())
    for token in document["added_tokens"]:
        token["special"] = False
    path.write_text(json.dumps(document))
    study.config["tokenizer"]["path"] = str(path)
    return ["tokenizer.path", str(path), "no end-of-document special token"]


def _middle_rows(n: int, bad: bytes, good: dict = TEXT) -> bytes:
    """``n`` good rows with ``bad`` as line ``n // 2``."""
    rows = [json.dumps(good).encode() + b"\n" for _ in range(n)]
    rows[n // 2 - 1] = bad + b"\n"
    return b"".join(rows)


def _gzip_middle_row(study: Study) -> list[str]:
    path = study.domain_file(
        "domain.jsonl.gz", gzip.compress(_middle_rows(10, b'{"body": "no text"}'))
    )
    return [f"domains.{study.first_domain}.paths", f"{path}:5", "no field 'text'"]


def _parquet_null_row(study: Study) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = study.files / "domain.parquet"
    pq.write_table(pa.table({"text": ["a", "b", None, "d"]}), path)
    study.config["domains"][study.first_domain] = {"paths": [str(path)]}
    return [f"domains.{study.first_domain}.paths", str(path), "row 2", "null"]


def _token_id_outside_vocabulary(study: Study) -> list[str]:
    path = study.files / "tokens.npy"
    ids = np.arange(1000, dtype=np.uint16) % VOCAB
    ids[700] = VOCAB + 5
    np.save(path, ids)
    study.config["domains"][study.first_domain] = {"paths": [str(path)]}
    return [f"domains.{study.first_domain}.paths", str(path), f"token id {VOCAB + 5}", "700"]


def _case_colliding_domains(study: Study) -> list[str]:
    first = study.first_domain
    path = study.files / "other.jsonl"
    path.write_bytes(_rows(TEXT))
    study.config["domains"][first.capitalize()] = {"paths": [str(path)]}
    return [f"config key 'domains.{first}'", f"'{first.capitalize()}' and '{first}'", "case"]


def _case_colliding_tasks(study: Study) -> list[str]:
    first = study.first_task
    study.config["tasks"][first.upper()] = dict(study.config["tasks"][first])
    return [f"config key 'tasks.{first}'", f"'{first.upper()}' and '{first}'", "case"]


def _one_file_two_domains(study: Study) -> list[str]:
    first, second = sorted(study.config["domains"])[:2]
    path = study.config["domains"][first]["paths"][0]
    study.config["domains"][second] = {"paths": [path]}
    return [f"config key 'domains.{second}.paths'", path, f"domain '{first}'"]


def _misspelt_prior_domain(study: Study) -> list[str]:
    path = study.files / "weights.yaml"
    domains = sorted(study.config["domains"])
    weights = {d: 1 / len(domains) for d in domains}
    weights[domains[0] + "z"] = weights.pop(domains[0])
    path.write_text(yaml.safe_dump(weights))
    study.config["stage1"]["prior"] = str(path)
    return ["stage1.prior", str(path), f"did you mean '{domains[0]}'"]


def _eos_disagreement(study: Study) -> list[str]:
    directory = study.files / "hf-ckpt-2"
    shutil.copytree(study.config["checkpoints"]["ckpt-b"], directory)
    path = directory / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "eos_token_id": 1}))
    study.config["checkpoints"]["ckpt-c"] = str(directory)
    return ["config key 'checkpoints'", "eos_token_id differs", str(path)]


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
    ("task too small to split into steering and evaluation", _task_too_small_to_split, []),
    # Rows in the middle of a file: every row is read at start-up, not only the first and last.
    (
        "malformed row in the middle",
        _domain_rows(_middle_rows(100, b'{"text": oops'), 50),
        ["malformed JSON"],
    ),
    (
        "row without the text field in the middle",
        _domain_rows(_middle_rows(60, b'{"body": "x"}'), 30),
        ["no field 'text'"],
    ),
    ("jsonl.gz row 5 without the text field", _gzip_middle_row, []),
    ("parquet row with a null text", _parquet_null_row, []),
    (
        "task row with context but no continuation",
        _task_rows(_middle_rows(16, json.dumps({"context": "Q:"}).encode(), QA), 8),
        ["no 'continuation'"],
    ),
    (
        "task answer out of range in the middle",
        _task_rows(
            _middle_rows(
                22,
                json.dumps({"context": "Q", "choices": ["a", "b"], "answer": 5}).encode(),
                {"context": "Q", "choices": ["a", "b"], "answer": 1},
            ),
            11,
        ),
        ["out of range"],
    ),
    ("token id outside the vocabulary", _token_id_outside_vocabulary, []),
    # Names and files that collide.
    ("domain names differing only in case", _case_colliding_domains, []),
    ("task names differing only in case", _case_colliding_tasks, []),
    ("one file under two domains", _one_file_two_domains, []),
    ("prior naming a misspelt domain", _misspelt_prior_domain, []),
    # A checkpoint's config.json against the study.
    (
        "seq_len beyond the built-in checkpoint's positions",
        _set("data", "seq_len", 1024),
        ["config key 'data.seq_len'", "1024", "256 positions", "max_seq_len", "ckpt-a"],
    ),
    (
        "seq_len beyond max_position_embeddings",
        _hf_checkpoint({"max_position_embeddings": 16}),
        ["config key 'data.seq_len'", "16 positions", "max_position_embeddings", "config.json"],
    ),
    (
        "mixture-of-experts checkpoint with the default tracked modules",
        _hf_checkpoint({"model_type": "mixtral", "num_local_experts": 4}),
        [
            "config key 'checkpoints.ckpt-b'",
            "mixtral",
            "mixture-of-experts",
            "influence.tracked_modules",
        ],
    ),
    (
        "checkpoint dtype gradients cannot be taken in",
        _hf_checkpoint({"dtype": "float8_e4m3fn"}),
        ["config key 'checkpoints.ckpt-b'", "float8_e4m3fn", "config.json"],
    ),
    (
        "quantized checkpoint",
        _hf_checkpoint({"quantization_config": {"quant_method": "gptq"}}),
        ["config key 'checkpoints.ckpt-b'", "quantized", "gptq"],
    ),
    ("float8 weights", _f8_tensor, []),
    (
        "EOS id outside the tokenizer",
        _hf_checkpoint({"eos_token_id": VOCAB + 3}),
        ["config key 'checkpoints.ckpt-b'", f"eos_token_id {VOCAB + 3}", "config.json"],
    ),
    (
        "BOS id outside the embedding",
        _hf_checkpoint({"bos_token_id": None}, generation={"bos_token_id": 10_000}),
        ["bos_token_id 10000", "generation_config.json", f"{VOCAB} rows"],
    ),
    ("tokenizer without an EOS token", _tokenizer_without_eos, []),
    ("checkpoints disagreeing on EOS", _eos_disagreement, []),
]


@pytest.fixture(scope="module")
def valid_study(synthetic_corpus, tmp_path_factory) -> Study:
    """The tiny study with its own tokenizer, a built-in and a Hugging Face checkpoint that fit it."""
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
    hf_checkpoint = root / "ckpt-b"
    transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=64,
            bos_token_id=0,
            eos_token_id=0,
        )
    ).save_pretrained(hf_checkpoint)
    config = tiny_config(synthetic_corpus)
    config["tokenizer"]["path"] = str(tokenizer)
    config["checkpoints"] = {"ckpt-a": str(checkpoint), "ckpt-b": str(hf_checkpoint)}
    return Study(config, root)


@pytest.fixture
def study(valid_study, tmp_path) -> Study:
    return Study(copy.deepcopy(valid_study.config), tmp_path)


def test_the_valid_study_passes(valid_study):
    """The baseline of every row: without the change, start-up succeeds."""
    start_up(valid_study.config)
    assert safetensors.torch.load_file(valid_study.checkpoint() / "model.safetensors")


def test_the_table_has_at_least_30_mistakes():
    assert len(BAD_INPUTS) >= 30
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


#: Rows raised in the Snakefile (the schema) and in common.smk (checkpoints, names, rows).
CLI_ROWS = [
    "unknown nested key",
    "tokenizer larger than the embedding",
    "mixture-of-experts checkpoint with the default tracked modules",
    "domain names differing only in case",
    "malformed row in the middle",
    "task too small to split into steering and evaluation",
]


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


def test_a_file_that_passed_is_not_read_again_until_it_changes(tmp_path, monkeypatch):
    """The full read runs once per version of a file: remembered by content digest."""
    monkeypatch.chdir(tmp_path)  # the caches live under .snakemake/ of the working directory
    path = tmp_path / "domain.jsonl"
    path.write_bytes(_rows(TEXT, TEXT, TEXT))
    domains = {"web": {"paths": [str(path)]}}
    first = CheckedFiles()
    check_data_files(domains, {}, checked=first)
    again = CheckedFiles()
    check_data_files(domains, {}, checked=again)
    assert (first.read_files, again.read_files) == (1, 0)
    other_field = CheckedFiles()  # the same file read for another field is another check
    with pytest.raises(ConfigError, match="no field 'body'"):
        check_data_files(
            {"web": {"paths": [str(path)], "text_field": "body"}}, {}, checked=other_field
        )
    path.write_bytes(_rows(TEXT, TEXT) + b"{oops\n" + _rows(TEXT))
    with pytest.raises(ConfigError, match=f"{path}:3: malformed JSON"):
        check_data_files(domains, {}, checked=CheckedFiles())


@pytest.mark.workflow
def test_a_failing_job_prints_one_line_naming_the_row_and_its_log(study, tmp_path):
    """A mistake only a job can find (a task text of one token, found by the tokenizer) fails
    that job with one line naming the file, line and log; the traceback is in the log only. What
    the console shows after the job's header (the job's line, then Snakemake's report) is at
    most 20 lines."""
    task = study.first_task
    path = study.files / "task.jsonl"
    path.write_bytes(_rows(TEXT, {"text": "b document"}, {"text": "a"}, {"text": "c document"}))
    study.config["tasks"][task] = {"path": str(path)}
    flow = Workflow(tmp_path / "work")
    flow.write_config(study.config)
    result = flow.snakemake(f"results/data/tasks/{task}/steering.npz", check=False)
    lines = (result.stdout + result.stderr).splitlines()
    print("\n".join(lines))
    assert result.returncode != 0
    header = next(i for i, line in enumerate(lines) if line.endswith("rule tokenize_task:"))
    body = header + 1
    while body < len(lines) and lines[body].startswith("    "):
        body += 1
    after_header = lines[body:]
    assert len(after_header) <= 20, "\n".join(after_header)
    log = f"logs/tokenize_task/{task}.log"
    named = [line for line in lines if f"{path}:3:" in line]
    assert len(named) == 1 and f"traceback in {log}" in named[0], named
    assert not any("Traceback" in line for line in lines)
    assert "Traceback" in (flow.workdir / log).read_text()
    assert not list((flow.workdir / f"results/data/tasks/{task}").glob("*"))


def test_a_config_file_that_is_not_yaml_or_missing_is_named_in_one_line(tmp_path, capsys):
    """Snakemake reads --configfile before the workflow runs (a missing file gives a traceback,
    a YAML error names no line); ``python -m tikmix.config FILE`` names the file and line."""
    broken = tmp_path / "study.yaml"
    broken.write_text("seed: 0\ndomains:\n  web: {paths: [a]\n  code: x\n")
    missing = tmp_path / "missing.yaml"
    assert config_main([str(broken)]) == 1
    assert config_main([str(missing)]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        f"{broken}:4:3: not valid YAML (expected ',' or '}}', but got '<scalar>')",
        f"no config file '{missing}'",
    ]


def test_the_config_checker_runs_the_start_up_checks(valid_study, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(valid_study.config))
    assert config_main([str(path)]) == 0
    study = Study(copy.deepcopy(valid_study.config), tmp_path)
    expected = _case_colliding_domains(study)
    path.write_text(yaml.safe_dump(study.config))
    assert config_main([str(path)]) == 1
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and all(text in message for text in expected), message
