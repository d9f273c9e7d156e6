"""tokenize_domain: token streams, the held-out split, caps, streaming and atomic outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tikmix.core.digest import file_sha256
from tikmix.data.domains import TokenStreamWriter, is_heldout, tokenize_domain
from tikmix.data.errors import DataError
from tikmix.data.sources import DomainSource
from tikmix.data.tokenizer import train_tokenizer

META_KEYS = {
    "domain", "dtype", "vocab_size", "seed", "heldout_fraction", "n_documents_train",
    "n_documents_heldout", "n_tokens_train", "n_tokens_heldout", "sources", "tokenizer_sha256",
    "eos_id", "eos_source", "bos_id", "bos_added",
}  # fmt: skip


def make_docs(n):
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "délta", "ε", "zeta", "eta", "theta", "🙂"]
    return [f"doc {i}: " + " ".join(rng.choice(words, size=rng.integers(1, 30))) for i in range(n)]


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_tokenizer(make_docs(200), vocab_size=320, out_path=path)
    return path


@pytest.fixture
def corpus(tmp_path):
    docs = make_docs(300)
    for k in range(3):  # three files, read in glob order
        with open(tmp_path / f"part{k}.jsonl", "w") as f:
            f.writelines(json.dumps({"text": d}) + "\n" for d in docs[k * 100 : (k + 1) * 100])
    return DomainSource("web", str(tmp_path / "part*.jsonl")), docs


def split_docs(stream, tok):
    """Decode a stream back into its documents (every document ends with EOS = 0)."""
    stream = np.asarray(stream)
    assert len(stream) == 0 or stream[-1] == 0
    ends = np.flatnonzero(stream == 0)
    starts = np.concatenate(([0], ends[:-1] + 1))
    return [tok.decode(stream[s:e].tolist()) for s, e in zip(starts, ends, strict=True)]


def test_streams_hold_every_document_once_in_order(corpus, tok_path, tmp_path):
    from tikmix.data.tokenizer import load_tokenizer

    source, docs = corpus
    tok = load_tokenizer(tok_path)
    meta = tokenize_domain(source, tok_path, tmp_path / "out", seed=3, heldout_fraction=0.25)
    train = np.load(tmp_path / "out" / "train.npy", mmap_mode="r")
    heldout = np.load(tmp_path / "out" / "heldout.npy", mmap_mode="r")
    assert train.dtype == np.uint16 and heldout.dtype == np.uint16
    train_docs, heldout_docs = split_docs(train, tok), split_docs(heldout, tok)
    # disjoint, complete, order preserved; split = the hash of (seed, index)
    assert set(train_docs).isdisjoint(heldout_docs)
    assert train_docs == [d for i, d in enumerate(docs) if not is_heldout(3, i, 0.25)]
    assert heldout_docs == [d for i, d in enumerate(docs) if is_heldout(3, i, 0.25)]
    assert 45 <= len(heldout_docs) <= 105  # Binomial(300, 0.25): mean 75, sd 7.5
    # one-shot reference: encode every document, append EOS, concatenate
    ref = [tok.encode(d, add_special_tokens=False).ids + [0] for d in train_docs]
    np.testing.assert_array_equal(train, np.concatenate(ref))
    assert set(meta) == META_KEYS
    assert json.loads((tmp_path / "out" / "meta.json").read_text()) == meta
    assert meta["n_tokens_train"] == len(train) and meta["n_documents_heldout"] == len(heldout_docs)
    assert meta["dtype"] == "uint16" and meta["tokenizer_sha256"] == file_sha256(tok_path)
    assert [s["path"] for s in meta["sources"]] == [
        str(tmp_path / f"part{k}.jsonl") for k in range(3)
    ]
    assert meta["sources"][0]["sha256"] == file_sha256(tmp_path / "part0.jsonl")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "heldout.npy",
        "meta.json",
        "train.npy",
    ]  # fmt: skip  (no temporary files left)


def test_split_depends_on_seed_and_is_reproducible(corpus, tok_path, tmp_path):
    source, _ = corpus
    outs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        tokenize_domain(source, tok_path, tmp_path / name, seed=seed, heldout_fraction=0.2)
        outs[name] = (tmp_path / name / "heldout.npy").read_bytes()
    assert outs["a"] == outs["b"] and outs["a"] != outs["c"]


def test_small_chunks_give_identical_files(corpus, tok_path, tmp_path):
    source, _ = corpus
    kw = dict(seed=0, heldout_fraction=0.1)
    tokenize_domain(source, tok_path, tmp_path / "big", **kw)
    tokenize_domain(source, tok_path, tmp_path / "small", batch_documents=3, chunk_tokens=7, **kw)
    for name in ("train.npy", "heldout.npy"):
        assert (tmp_path / "big" / name).read_bytes() == (tmp_path / "small" / name).read_bytes()


def test_writer_never_writes_more_than_a_chunk(tmp_path):
    rng = np.random.default_rng(0)
    docs = [rng.integers(1, 50, size=n) for n in (0, 3, 40, 1, 17, 9, 100)]
    writer = TokenStreamWriter(tmp_path / "s.npy", np.uint16, eos=0, chunk_tokens=7)
    for doc in docs:
        writer.add_document(doc)
    writer.commit()
    expected = np.concatenate([np.append(d, 0) for d in docs])
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), expected)
    assert 0 < writer.max_write <= 7 and writer.n_documents == len(docs)


def test_heldout_minimum_and_zero_fraction(tmp_path, tok_path):
    (tmp_path / "d.jsonl").write_text(
        "".join(json.dumps({"text": f"x{i}"}) + "\n" for i in range(3))
    )
    source = DomainSource("d", str(tmp_path / "d.jsonl"))
    # with fraction 1e-9 the hash holds nothing out; the last document is moved to held-out
    meta = tokenize_domain(source, tok_path, tmp_path / "o1", heldout_fraction=1e-9)
    assert (meta["n_documents_train"], meta["n_documents_heldout"]) == (2, 1)
    meta = tokenize_domain(source, tok_path, tmp_path / "o2", heldout_fraction=0.0)
    assert (meta["n_documents_train"], meta["n_documents_heldout"]) == (3, 0)
    assert np.load(tmp_path / "o2" / "heldout.npy").shape == (0,)
    # a near-1 fraction holds everything out by hash; the last document goes back to train
    meta = tokenize_domain(source, tok_path, tmp_path / "o3", heldout_fraction=0.999999)
    assert (meta["n_documents_train"], meta["n_documents_heldout"]) == (1, 2)


def test_caps(corpus, tok_path, tmp_path):
    source, _ = corpus
    meta = tokenize_domain(source, tok_path, tmp_path / "a", max_documents=7, heldout_fraction=0.3)
    assert meta["n_documents_train"] + meta["n_documents_heldout"] == 7
    meta = tokenize_domain(source, tok_path, tmp_path / "b", max_tokens=500, heldout_fraction=0.3)
    assert meta["n_tokens_train"] + meta["n_tokens_heldout"] == 500
    assert np.load(tmp_path / "b" / "train.npy")[-1] == 0  # the truncated document keeps its EOS


def test_pretokenized_sources(tmp_path, tok_path):
    stream = np.array([5, 6, 0, 7, 0, 0, 8, 9, 10], dtype=np.int32)  # unterminated last document
    np.save(tmp_path / "a.npy", stream)
    (tmp_path / "b.bin").write_bytes(np.array([11, 12, 0], dtype=np.uint16).tobytes())
    npy = DomainSource("t", str(tmp_path / "a.npy"))
    tokenize_domain(npy, tok_path, tmp_path / "o", heldout_fraction=0.0, chunk_tokens=2)
    np.testing.assert_array_equal(
        np.load(tmp_path / "o" / "train.npy"), [5, 6, 0, 7, 0, 8, 9, 10, 0]
    )
    both = DomainSource("t", (str(tmp_path / "a.npy"), str(tmp_path / "b.bin")), dtype="uint16")
    meta = tokenize_domain(both, tok_path, tmp_path / "o2", heldout_fraction=0.0)
    assert meta["n_documents_train"] == 4 and meta["n_tokens_train"] == 12
    np.save(tmp_path / "big.npy", np.array([1, 2, 0, 320, 0], dtype=np.int64))  # vocab is 320
    big = DomainSource("t", str(tmp_path / "big.npy"))
    with pytest.raises(DataError, match=r"big\.npy: token id 320 at position 3 is outside"):
        tokenize_domain(big, tok_path, tmp_path / "o3")
    assert not (tmp_path / "o3" / "train.npy").exists()


def test_empty_domain_and_failed_run_leave_nothing(tmp_path, tok_path):
    (tmp_path / "e.jsonl").write_text('{"text": ""}\n\n')
    with pytest.raises(DataError, match=r"domain 'e': no documents .* 1 file\(s\)"):
        tokenize_domain(DomainSource("e", str(tmp_path / "e.jsonl")), tok_path, tmp_path / "oe")
    (tmp_path / "f1.jsonl").write_text('{"text": "fine"}\n' * 50)
    (tmp_path / "f2.jsonl").write_text('{"text": "fine"}\n{"text": oops}\n')
    with pytest.raises(DataError, match=r"f2\.jsonl:2: malformed JSON"):
        tokenize_domain(DomainSource("f", str(tmp_path / "f*.jsonl")), tok_path, tmp_path / "of")
    assert list((tmp_path / "of").iterdir()) == []
    with pytest.raises(DataError, match=r"heldout_fraction must be in \[0, 1\)"):
        tokenize_domain(
            DomainSource("f", str(tmp_path / "f1.jsonl")),
            tok_path,
            tmp_path / "x",
            heldout_fraction=1.0,
        )


def test_checkpoint_eos_separates_documents_and_bos_handling_is_recorded(
    corpus, tok_path, tmp_path
):
    """The document separator is the checkpoint's EOS (config.json), not the tokenizer's guess;
    a Hugging Face tokenizer directory stands for its tokenizer.json."""
    import shutil

    from tikmix.data.tokenizer import checkpoint_special_tokens, load_tokenizer

    source, docs = corpus
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"model_type": "llama", "bos_token_id": 1}))
    (ckpt / "generation_config.json").write_text(json.dumps({"eos_token_id": [7, 9]}))
    special = checkpoint_special_tokens(ckpt)
    assert (special["eos"], special["bos"]) == (7, 1)
    assert special["eos_source"].endswith("generation_config.json")
    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    shutil.copy2(tok_path, tok_dir / "tokenizer.json")
    meta = tokenize_domain(
        source, tok_dir, tmp_path / "out", heldout_fraction=0.0, special_tokens=special
    )
    train = np.load(tmp_path / "out" / "train.npy")
    tok = load_tokenizer(tok_path)
    assert train[-1] == 7 and np.count_nonzero(train == 7) >= len(docs)
    first = tok.decode(train[: np.flatnonzero(train == 7)[0]].tolist())
    assert first == docs[0]
    assert meta["eos_id"] == 7 and meta["eos_source"] == special["eos_source"]
    assert meta["bos_id"] == 1 and meta["bos_added"] is False
    assert meta["tokenizer_sha256"] == file_sha256(tok_path)
    plain = tokenize_domain(source, tok_path, tmp_path / "plain", heldout_fraction=0.0)
    assert plain["eos_id"] == 0 and plain["eos_source"] == "tokenizer" and plain["bos_id"] is None


def test_checkpoint_eos_outside_the_vocabulary_fails_naming_the_file(corpus, tok_path, tmp_path):
    from tikmix.data.tokenizer import agreed_special_tokens

    source, _ = corpus
    dirs = {}
    for name, eos in (("a", 5000), ("b", 5001)):
        dirs[name] = tmp_path / name
        dirs[name].mkdir()
        (dirs[name] / "config.json").write_text(json.dumps({"eos_token_id": eos}))
    with pytest.raises(
        DataError, match=r"eos_token_id differs between checkpoints: 5000 .*a/config"
    ):
        agreed_special_tokens(dirs)
    special = agreed_special_tokens({"a": dirs["a"]})
    with pytest.raises(DataError, match=r"a/config.json: eos_token_id 5000 is outside .* 320 ids"):
        tokenize_domain(source, tok_path, tmp_path / "out", special_tokens=special)
    with pytest.raises(DataError, match=r"tokenizer directory .*a has no tokenizer.json"):
        tokenize_domain(source, dirs["a"], tmp_path / "out")
