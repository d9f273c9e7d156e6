"""Synthetic corpus: deterministic, valid inputs, and a ground truth its text really follows."""

from __future__ import annotations

import json

import pytest

from tikmix.data.errors import DataError
from tikmix.data.sources import DomainSource, iter_texts
from tikmix.data.synthetic import FUNCTION_WORDS, make_synthetic_corpus
from tikmix.data.tasks import read_task

SMALL = dict(docs_per_domain=20, words_per_doc=50, task_items=8, words_per_item=30)


def files_bytes(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def domain_words(corpus):
    return {
        name: {w for text in iter_texts(DomainSource(name, str(path))) for w in text.split()}
        for name, path in corpus.domain_files.items()
    }


def test_deterministic_for_a_seed(tmp_path):
    a = make_synthetic_corpus(tmp_path / "a", seed=5, **SMALL)
    b = make_synthetic_corpus(tmp_path / "b", seed=5, **SMALL)
    c = make_synthetic_corpus(tmp_path / "c", seed=6, **SMALL)
    assert files_bytes(a.root) == files_bytes(b.root)
    assert files_bytes(a.root) != files_bytes(c.root)


def test_ground_truth_matches_the_text(tmp_path):
    corpus = make_synthetic_corpus(tmp_path, n_domains=5, **SMALL)
    assert json.loads(corpus.ground_truth_path.read_text()) == corpus.ground_truth
    assert set(corpus.ground_truth) == set(corpus.task_files) == {
        "text_domain0", "text_domain1", "text_domain2", "blend_domain3_domain4", "qa_domain0",
    }  # fmt: skip
    vocab = domain_words(corpus)
    own = {d: words - set(FUNCTION_WORDS) for d, words in vocab.items()}
    # domain-specific inventories are disjoint; the function words are shared by every domain
    names = sorted(own)
    assert all(own[x].isdisjoint(own[y]) for x in names for y in names if x < y)
    assert all(set(FUNCTION_WORDS) <= vocab[d] for d in names)
    for task, path in corpus.task_files.items():
        items = read_task(path)  # valid task files
        assert len(items) == SMALL["task_items"]
        sources = corpus.ground_truth[task]
        for item in items:
            text = item.text if item.text is not None else item.context + " ".join(item.choices)
            content = set(text.split()) - set(FUNCTION_WORDS)
            # every content word is one of the listed source domains' words ...
            assert content <= set().union(*(own[d] for d in sources))
        # ... and each listed domain contributes
        used = {w for it in items for w in (it.text or it.context).split()}
        assert all(used & own[d] for d in sources)


def test_qa_continuation_follows_the_chain(tmp_path):
    corpus = make_synthetic_corpus(tmp_path, **SMALL)
    # bigrams of domain0's training text vs the task: the correct continuation uses only
    # transitions seen in training far more often than the uniformly drawn distractors
    train_bigrams = set()
    for text in iter_texts(DomainSource("domain0", str(corpus.domain_files["domain0"]))):
        words = text.split()
        train_bigrams.update(zip(words, words[1:], strict=False))

    def seen_fraction(context, choice):
        words = [context.split()[-1], *choice.split()]
        pairs = list(zip(words, words[1:], strict=False))
        return sum(p in train_bigrams for p in pairs) / len(pairs)

    right, wrong = [], []
    for item in read_task(corpus.task_files["qa_domain0"]):
        for k, choice in enumerate(item.choices):
            (right if k == item.answer else wrong).append(seen_fraction(item.context, choice))
    assert min(right) > 0.7 and sum(wrong) / len(wrong) < 0.3


def test_argument_checks(tmp_path):
    with pytest.raises(DataError, match="n_domains must be at least 3"):
        make_synthetic_corpus(tmp_path, n_domains=2)
    with pytest.raises(DataError, match="docs_per_domain must be positive"):
        make_synthetic_corpus(tmp_path, docs_per_domain=0)
