"""Checkpoint directories: round trips (built-in and Hugging Face), atomicity, errors, hashes."""

import json
import sys

import pytest
import safetensors.torch
import torch

from tikmix.models import checkpoint as ckpt
from tikmix.models.checkpoint import (
    CheckpointError,
    check_compatible,
    checkpoint_hash,
    load_checkpoint,
    load_optimizer_state,
    save_checkpoint,
)
from tikmix.models.hf import load_hf_model
from tikmix.models.llama import ModelConfig, TinyLlama

MIXTURE = {"news": 0.25, "code": 0.75}
IDS = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(0))


def builtin(tie: bool = True) -> TinyLlama:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=50, d_model=16, n_layers=2, n_heads=2, tie_embeddings=tie)
    return TinyLlama(config)


def save(directory, model, **kwargs):
    values = dict(step=7, tokens_seen=700, mixture=MIXTURE, tokenizer="sha256:abc", seed=3)
    return save_checkpoint(directory, model, **{**values, **kwargs})


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=50,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=32,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    directory = tmp_path_factory.mktemp("hf") / "tiny-llama"
    model.save_pretrained(directory)
    with torch.no_grad():
        logits = model.eval()(IDS).logits
    return directory, logits


@pytest.mark.parametrize("tie", [True, False])
def test_builtin_round_trip_identical_logits(tmp_path, tie):
    model = builtin(tie)
    directory = save(tmp_path / "ckpt", model, extra={"stage": 1})
    assert sorted(p.name for p in directory.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tikmix.json",
    ]
    loaded, info = load_checkpoint(directory)
    assert torch.equal(loaded(IDS), model(IDS))
    assert (loaded.lm_head.weight is loaded.embed_tokens.weight) is tie
    assert not loaded.training
    assert (info.format, info.step, info.tokens_seen, info.seed) == ("builtin", 7, 700, 3)
    assert (info.mixture, info.tokenizer, info.extra) == (MIXTURE, "sha256:abc", {"stage": 1})
    assert info.vocab_size == 50 and not info.has_optimizer_state
    assert ModelConfig.from_dict(info.config) == model.config
    stored = safetensors.torch.load_file(directory / "model.safetensors")
    assert ("lm_head.weight" in stored) is not tie


def test_load_with_dtype(tmp_path):
    model = builtin()
    loaded, _ = load_checkpoint(save(tmp_path / "c", model), dtype=torch.float64)
    assert loaded.embed_tokens.weight.dtype == torch.float64
    assert loaded.lm_head.weight is loaded.embed_tokens.weight
    torch.testing.assert_close(loaded(IDS).float(), model(IDS), rtol=1e-5, atol=1e-6)


def test_optimizer_state_round_trip(tmp_path):
    model = builtin()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(IDS).sum().backward()
    optimizer.step()
    directory = save(tmp_path / "c", model, optimizer=optimizer)
    state = load_optimizer_state(directory)
    assert load_checkpoint(directory)[1].has_optimizer_state
    for saved, original in zip(
        state["state"].values(), optimizer.state_dict()["state"].values(), strict=True
    ):
        assert torch.equal(saved["exp_avg_sq"], original["exp_avg_sq"])
    assert load_optimizer_state(save(tmp_path / "d", model)) is None


def fail(*args, **kwargs):
    raise OSError("disk full")


def test_failed_save_leaves_no_directory(tmp_path, monkeypatch):
    model = builtin()
    optimizer = torch.optim.AdamW(model.parameters())
    monkeypatch.setattr(ckpt.torch, "save", fail)  # weights and tikmix.json are written by then
    with pytest.raises(OSError, match="disk full"):
        save(tmp_path / "ckpt", model, optimizer=optimizer)
    assert list(tmp_path.iterdir()) == []


def test_existing_directory_is_kept_unless_overwrite(tmp_path, monkeypatch):
    first, second = builtin(), builtin(tie=False)
    directory = save(tmp_path / "ckpt", first)
    with pytest.raises(FileExistsError, match="ckpt"):
        save(directory, second)
    monkeypatch.setattr(ckpt, "_write_json", fail)
    with pytest.raises(OSError, match="disk full"):
        save(directory, second, overwrite=True)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(directory)[0](IDS), first(IDS))  # old one intact
    save(directory, second, overwrite=True, step=9)
    loaded, info = load_checkpoint(directory)
    assert info.step == 9 and torch.equal(loaded(IDS), second(IDS))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_hf_directory_loads_with_identical_logits(hf_dir):
    directory, logits = hf_dir
    with torch.no_grad():
        assert torch.equal(load_hf_model(directory)(IDS).logits, logits)
        model, info = load_checkpoint(directory)
        assert torch.equal(model(IDS).logits, logits)
    assert (info.format, info.vocab_size, info.step, info.mixture) == ("hf", 50, None, None)
    assert info.config["model_type"] == "llama"


def test_hf_model_saved_as_checkpoint(tmp_path, hf_dir):
    model, _ = load_checkpoint(hf_dir[0])
    directory = save(tmp_path / "c", model)
    loaded, info = load_checkpoint(directory)
    assert (info.format, info.step, info.mixture) == ("hf", 7, MIXTURE)
    with torch.no_grad():
        assert torch.equal(loaded(IDS).logits, hf_dir[1])
    with pytest.raises(ValueError, match="model_config must be None"):
        save(tmp_path / "d", model, model_config=builtin().config)


def test_hf_errors(tmp_path, hf_dir, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_hf_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="no safetensors weights.*pytorch_model.bin"):
        load_checkpoint(tmp_path)
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    with pytest.raises(ImportError, match="tikmix\\[hf\\]"):
        load_hf_model(hf_dir[0])


def test_missing_and_inconsistent_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    directory = save(tmp_path / "c", builtin())
    (directory / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        load_checkpoint(directory)
    directory = save(tmp_path / "d", builtin())
    (directory / "tikmix.json").unlink()
    with pytest.raises(FileNotFoundError, match="neither a Hugging Face checkpoint"):
        load_checkpoint(directory)
    directory = save(tmp_path / "e", builtin())
    (directory / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        load_checkpoint(directory)
    directory = save(tmp_path / "f", builtin())
    (directory / "config.json").write_text(json.dumps({"vocab_size": 50, "width": 3}))
    with pytest.raises(CheckpointError, match="unknown ModelConfig keys \\['width'\\]"):
        load_checkpoint(directory)


@pytest.mark.parametrize("saved_tie", [True, False])
def test_tied_untied_mismatch(tmp_path, saved_tie):
    directory = save(tmp_path / "c", builtin(saved_tie))
    config = json.loads((directory / "config.json").read_text())
    config["tie_embeddings"] = not saved_tie
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=f"tie_embeddings={str(not saved_tie).lower()}"):
        load_checkpoint(directory)


def test_shape_mismatch(tmp_path):
    directory = save(tmp_path / "c", builtin())
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "d_ff": 40}))
    with pytest.raises(CheckpointError, match="size mismatch"):
        load_checkpoint(directory)


def test_vocab_compatibility(tmp_path):
    _, info = load_checkpoint(save(tmp_path / "c", builtin()))
    check_compatible(info, 50)
    check_compatible(info, 30)
    with pytest.raises(CheckpointError, match="50 embedding rows but the tokenizer has 51"):
        check_compatible(info, 51)


def test_checkpoint_hash_tracks_weights_only(tmp_path, hf_dir):
    model = builtin()
    a = save(tmp_path / "a", model)
    b = save(tmp_path / "b", model, step=99, mixture={"x": 1.0})
    assert checkpoint_hash(a) == checkpoint_hash(b)
    assert len(checkpoint_hash(a)) == 64
    with torch.no_grad():
        model.norm.weight[0] += 1
    assert checkpoint_hash(save(tmp_path / "c", model)) != checkpoint_hash(a)
    assert len(checkpoint_hash(hf_dir[0])) == 64
    with pytest.raises(FileNotFoundError, match="no safetensors"):
        checkpoint_hash(tmp_path / "missing")


def test_start_up_check_reads_the_embedding_rows_the_loader_finds(tmp_path, hf_dir):
    """tikmix.validation reads safetensors headers (no torch, no transformers import) at start-up;
    its embedding rows must be those of the loaded model, for both formats."""
    from tikmix.validation import read_checkpoint

    for directory in (hf_dir[0], save(tmp_path / "ckpt", builtin(tie=False))):
        _, info = load_checkpoint(directory)
        assert read_checkpoint(directory, "checkpoints.x")[1] == info.vocab_size == 50
