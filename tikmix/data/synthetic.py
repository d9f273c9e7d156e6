"""A synthetic corpus with planted domain structure, and tasks whose source domains are known.

Each domain is a Markov chain over its own inventory of pseudo-words (built from a domain-specific
set of consonants, so words — and their BPE tokens — are distinct across domains) plus a few function
words shared by all domains (``the``, ``of``, ...) whose successors differ per domain. Every word has
``successors`` possible next words with Dirichlet-random probabilities, drawn through random
permutations so that every word also has ``successors`` predecessors (no word is starved); one
permutation is a single cycle through the inventory, which makes each chain irreducible. A small model
learns these bigram rules within a few hundred thousand tokens, and a task written by one domain's
chain is helped by training on that domain and not by the others — the ground truth an influence
estimate must recover.

Tasks (for ``n_domains = D``, domains ``domain0 … domain{D-1}``):

* ``text_domain{i}`` for ``i < D - 2``: fresh documents of domain ``i``;
* ``blend_domain{D-2}_domain{D-1}``: fresh documents, alternately from the last two domains (50/50);
* ``qa_domain0``: context/continuation with 4 choices: the context is a walk of domain 0, the correct
  continuation continues the walk, the distractors are words of domain 0 drawn uniformly (right
  words, wrong transitions).

Everything is deterministic for ``seed`` and takes well under a second at the default sizes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tikmix.core.atomic import atomic_output, write_json_atomic
from tikmix.data.errors import DataError

FUNCTION_WORDS = ("the", "of", "and", "a", "to", "in", "is", "on")
_CONSONANTS = "bcdfghjklmnprstvwz"
_VOWELS = "aeiou"
_CONSONANTS_PER_DOMAIN = 4
_QA_CHOICES = 4


@dataclass(frozen=True)
class SyntheticCorpus:
    """Paths written by :func:`make_synthetic_corpus` and the planted ground truth."""

    root: Path
    domain_files: dict[str, Path]  # domain -> domains/{domain}.jsonl
    task_files: dict[str, Path]  # task -> tasks/{task}.jsonl
    ground_truth: dict[str, list[str]]  # task -> domains its text was drawn from
    ground_truth_path: Path


class _DomainChain:
    """One domain's word inventory and bigram transition structure."""

    def __init__(self, words: list[str], successors: int, rng: np.random.Generator) -> None:
        self.words = words
        n = len(words)
        cycle = rng.permutation(n)
        along_cycle = np.empty(n, dtype=np.int64)
        along_cycle[cycle] = np.roll(cycle, -1)
        # Column j maps each word to a successor through a permutation: every word is then the
        # successor of exactly `successors` words, so none is starved, and column 0 (one cycle
        # through all words) makes the chain irreducible.
        perms = [along_cycle] + [rng.permutation(n) for _ in range(successors - 1)]
        self.next_words = np.stack(perms, axis=1)
        self.next_probs = rng.dirichlet(np.full(successors, 2.0), size=n)
        # Plain lists: a walk is a tight Python loop, far faster than per-step numpy calls.
        self._next = self.next_words.tolist()
        self._cumulative = np.cumsum(self.next_probs, axis=1).tolist()

    def walk(self, n_words: int, rng: np.random.Generator, start: int | None = None) -> list[int]:
        """A walk of ``n_words`` word indices; from ``start``'s successor if given, else random."""
        state = int(rng.integers(len(self.words))) if start is None else start
        uniforms = rng.random(n_words).tolist()
        if start is None:
            out, uniforms = [state], uniforms[1:]
        else:
            out = []
        for u in uniforms:
            cum = self._cumulative[state]
            k = 0
            while k < len(cum) - 1 and u >= cum[k]:
                k += 1
            state = self._next[state][k]
            out.append(state)
        return out

    def text(self, indices: list[int]) -> str:
        return " ".join(self.words[i] for i in indices)


def _inventories(n_domains: int, n_words: int, rng: np.random.Generator) -> list[list[str]]:
    consonants = rng.permutation(list(_CONSONANTS))
    taken = set(FUNCTION_WORDS)
    inventories = []
    for d in range(n_domains):
        start = d * _CONSONANTS_PER_DOMAIN
        letters = [consonants[(start + k) % len(consonants)] for k in range(_CONSONANTS_PER_DOMAIN)]
        words: list[str] = []
        while len(words) < n_words:
            n_syllables = int(rng.integers(2, 4))
            word = "".join(
                rng.choice(letters) + rng.choice(list(_VOWELS)) for _ in range(n_syllables)
            )
            if word not in taken:
                taken.add(word)
                words.append(word)
        inventories.append(words + list(FUNCTION_WORDS))
    return inventories


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))


def make_synthetic_corpus(
    out_dir: str | Path,
    *,
    n_domains: int = 4,
    docs_per_domain: int = 200,
    words_per_doc: int = 150,
    task_items: int = 32,
    words_per_item: int = 60,
    context_words: int = 16,
    continuation_words: int = 6,
    words_per_domain: int = 40,
    successors: int = 3,
    seed: int = 0,
) -> SyntheticCorpus:
    """Write ``out_dir/domains/*.jsonl``, ``out_dir/tasks/*.jsonl`` and ``out_dir/ground_truth.json``.

    Args:
        n_domains: number of domains (at least 3: two single-domain roles and a blended pair).
        docs_per_domain, words_per_doc: size of each domain's training text.
        task_items, words_per_item: items per task and words per text item.
        context_words: words in each qa context (short enough to fit a 64-token context).
        continuation_words: words in each qa continuation / choice.
        words_per_domain: pseudo-words per domain (the function words come on top).
        successors: possible next words per word (≥ 2); fewer means more predictable text.
        seed: everything is a deterministic function of the arguments.
    """
    if n_domains < 3:
        raise DataError(f"n_domains must be at least 3, got {n_domains}")
    if successors < 2 or successors > words_per_domain:
        raise DataError(f"successors must be in [2, words_per_domain], got {successors}")
    for name, value in (
        ("docs_per_domain", docs_per_domain),
        ("words_per_doc", words_per_doc),
        ("task_items", task_items),
        ("words_per_item", words_per_item),
        ("context_words", context_words),
        ("continuation_words", continuation_words),
    ):
        if value < 1:
            raise DataError(f"{name} must be positive, got {value}")
    root = Path(out_dir)
    structure_rng, corpus_rng, task_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
    )
    names = [f"domain{i}" for i in range(n_domains)]
    chains = {
        name: _DomainChain(words, successors, structure_rng)
        for name, words in zip(
            names, _inventories(n_domains, words_per_domain, structure_rng), strict=True
        )
    }

    domain_files = {}
    for name, chain in chains.items():
        domain_files[name] = root / "domains" / f"{name}.jsonl"
        docs = [chain.text(chain.walk(words_per_doc, corpus_rng)) for _ in range(docs_per_domain)]
        _write_jsonl(domain_files[name], [{"text": doc} for doc in docs])

    ground_truth: dict[str, list[str]] = {}
    task_rows: dict[str, list[dict]] = {}
    for name in names[:-2]:
        chain = chains[name]
        task_rows[f"text_{name}"] = [
            {"text": chain.text(chain.walk(words_per_item, task_rng))} for _ in range(task_items)
        ]
        ground_truth[f"text_{name}"] = [name]
    pair = names[-2:]
    blend = f"blend_{pair[0]}_{pair[1]}"
    task_rows[blend] = [
        {"text": chains[pair[k % 2]].text(chains[pair[k % 2]].walk(words_per_item, task_rng))}
        for k in range(task_items)
    ]
    ground_truth[blend] = list(pair)
    qa_name, chain = names[0], chains[names[0]]
    qa_rows = []
    for _ in range(task_items):
        context = chain.walk(context_words, task_rng)
        correct = chain.text(chain.walk(continuation_words, task_rng, start=context[-1]))
        distractors = [
            chain.text(list(task_rng.integers(len(chain.words), size=continuation_words)))
            for _ in range(_QA_CHOICES - 1)
        ]
        answer = int(task_rng.integers(_QA_CHOICES))
        choices = [" " + c for c in distractors[:answer] + [correct] + distractors[answer:]]
        qa_rows.append({"context": chain.text(context), "choices": choices, "answer": answer})
    task_rows[f"qa_{qa_name}"] = qa_rows
    ground_truth[f"qa_{qa_name}"] = [qa_name]

    task_files = {}
    for task, rows in task_rows.items():
        task_files[task] = root / "tasks" / f"{task}.jsonl"
        _write_jsonl(task_files[task], rows)
    ground_truth_path = root / "ground_truth.json"
    write_json_atomic(ground_truth_path, ground_truth)
    return SyntheticCorpus(root, domain_files, task_files, ground_truth, ground_truth_path)
