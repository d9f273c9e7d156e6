"""Domain sources: globbing, streaming reads, and errors that name the file, line and domain."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tikmix.data.errors import DataError
from tikmix.data.sources import (
    DomainSource,
    iter_texts,
    iter_token_documents,
    open_token_file,
    resolve_files,
    validate_sources,
)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_streams_jsonl_gz_and_parquet_in_glob_order(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "one"}, {"text": ""}, {"text": "two"}])
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as f:
        f.write('{"body": "three", "text": "x"}\n\n')
    pq.write_table(pa.table({"text": [f"p{i}" for i in range(2500)]}), tmp_path / "c.parquet")
    src = DomainSource("d", (str(tmp_path / "*.jsonl*"), str(tmp_path / "*.parquet")))
    texts = list(iter_texts(src))
    # empty texts are skipped; parquet spans several 1024-row batches, in order
    assert texts == ["one", "two", "x"] + [f"p{i}" for i in range(2500)]
    other_field = DomainSource("d", str(tmp_path / "b.jsonl.gz"), text_field="body")
    assert list(iter_texts(other_field)) == ["three"]


def test_glob_matching_nothing_names_domain_and_glob(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "x"}])
    src = DomainSource("news", (str(tmp_path / "a.jsonl"), str(tmp_path / "missing*.jsonl")))
    with pytest.raises(
        DataError, match=r"domain 'news': glob '.*missing\*\.jsonl' matches no file"
    ):
        resolve_files(src)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b'{"text": "ok"}\n{"text": "broken"\n', r"bad\.jsonl:2: malformed JSON"),
        (b'{"text": "ok"}\n\n{"txt": "no field"}\n', r"bad\.jsonl:3: row has no field 'text'"),
        (b'{"text": 5}\n', r"bad\.jsonl:1: field 'text' must be a string"),
        (b'["a list"]\n', r"bad\.jsonl:1: expected a JSON object"),
        (b'{"text": "ok"}\n{"text": "caf\xe9"}\n', r"bad\.jsonl:2: not valid UTF-8"),
    ],
)
def test_bad_jsonl_rows_name_path_and_line(tmp_path, content, pattern):
    (tmp_path / "bad.jsonl").write_bytes(content)
    with pytest.raises(DataError, match=pattern):
        list(iter_texts(DomainSource("d", str(tmp_path / "bad.jsonl"))))


def test_broken_gzip_and_parquet_errors_name_the_file(tmp_path):
    (tmp_path / "x.jsonl.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=r"x\.jsonl\.gz: not a valid gzip file"):
        list(iter_texts(DomainSource("d", str(tmp_path / "x.jsonl.gz"))))
    pq.write_table(pa.table({"content": ["a"]}), tmp_path / "p.parquet")
    with pytest.raises(DataError, match=r"p\.parquet: no column 'text'"):
        list(iter_texts(DomainSource("d", str(tmp_path / "p.parquet"))))
    pq.write_table(pa.table({"text": ["a", None]}), tmp_path / "n.parquet")
    with pytest.raises(DataError, match=r"n\.parquet: row 1: field 'text' is null"):
        list(iter_texts(DomainSource("d", str(tmp_path / "n.parquet"))))
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "i.parquet")
    with pytest.raises(DataError, match=r"i\.parquet: column 'text' has type int64"):
        list(iter_texts(DomainSource("d", str(tmp_path / "i.parquet"))))


def test_domain_kind_and_dtype_rules(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "x"}])
    np.save(tmp_path / "t.npy", np.arange(5, dtype=np.uint16))
    (tmp_path / "t.bin").write_bytes(np.arange(5, dtype=np.uint16).tobytes())
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="domain 'm': mixes text files"):
        resolve_files(DomainSource("m", (str(tmp_path / "a.jsonl"), str(tmp_path / "t.npy"))))
    with pytest.raises(DataError, match=r"domain 'b': .*t\.bin: \.bin token files need 'dtype'"):
        resolve_files(DomainSource("b", str(tmp_path / "t.bin")))
    with pytest.raises(DataError, match=r"domain 'u': .*notes\.txt: unsupported file type"):
        resolve_files(DomainSource("u", str(tmp_path / "notes.txt")))
    np.testing.assert_array_equal(open_token_file(tmp_path / "t.bin", "uint16"), np.arange(5))
    with pytest.raises(DataError, match=r"t\.bin: size 10 bytes is not a multiple of uint32"):
        open_token_file(tmp_path / "t.bin", "uint32")
    np.save(tmp_path / "f.npy", np.zeros(3, dtype=np.float32))
    with pytest.raises(DataError, match=r"f\.npy: expected a 1-D integer token array"):
        open_token_file(tmp_path / "f.npy")
    with pytest.raises(DataError, match="dtype 'float32' is not an integer type"):
        DomainSource("d", "x.bin", dtype="float32")


def test_from_config_forms_and_unknown_keys():
    assert DomainSource.from_config("a", "x/*.jsonl").paths == ("x/*.jsonl",)
    cfg = {"paths": ["a.bin"], "dtype": "uint16", "text_field": "body"}
    assert DomainSource.from_config("a", cfg) == DomainSource("a", ("a.bin",), "body", "uint16")
    with pytest.raises(DataError, match=r"domain 'a': unknown source key\(s\) \['glob'\]"):
        DomainSource.from_config("a", {"paths": "x", "glob": "y"})
    with pytest.raises(DataError, match="invalid domain name"):
        DomainSource("a/b", "x")


def test_token_documents_split_on_eos_across_chunks(tmp_path):
    tokens = np.array([0, 5, 6, 0, 0, 7, 8, 9, 0, 3], dtype=np.uint16)
    expected = [(1, 3), (5, 8), (9, 10)]  # empty runs skipped, unterminated tail kept
    for chunk in (1, 2, 3, 100):
        assert list(iter_token_documents("t", tokens, 0, 10, chunk)) == expected
    with pytest.raises(DataError, match=r"t: token id 9 at position 7 is outside .* \[0, 9\)"):
        list(iter_token_documents("t", tokens, 0, 9, 4))


def test_validate_sources_checks_first_record_of_every_file(tmp_path):
    write_jsonl(tmp_path / "good.jsonl", [{"text": "x"}])
    (tmp_path / "bad.jsonl").write_text('{"title": "x"}\n')
    ok = {"a": DomainSource("a", str(tmp_path / "good.jsonl"))}
    assert validate_sources(ok) == {"a": [tmp_path / "good.jsonl"]}
    bad = {**ok, "b": DomainSource("b", str(tmp_path / "*.jsonl"))}
    with pytest.raises(DataError, match=r"bad\.jsonl:1: row has no field 'text'"):
        validate_sources(bad)
    with pytest.raises(DataError, match="domain 'c': source is named 'a'"):
        validate_sources({"c": ok["a"]})
