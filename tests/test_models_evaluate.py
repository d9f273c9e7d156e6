"""Validation loss and multiple-choice accuracy against hand-computed references."""

import numpy as np
import pytest
import torch
from torch import nn

from tikmix.models.evaluate import mean_loss, multiple_choice_accuracy, sequence_losses
from tikmix.models.llama import ModelConfig, TinyLlama


class Bigram(nn.Module):
    """A model whose next-token distribution depends only on the current token: P[current]."""

    def __init__(self, probabilities: np.ndarray) -> None:
        super().__init__()
        self.log_p = nn.Parameter(torch.as_tensor(np.log(probabilities)))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.log_p[input_ids]


def test_mean_loss_matches_a_hand_computed_reference():
    torch.manual_seed(0)
    model = TinyLlama(ModelConfig(vocab_size=40, d_model=16, n_layers=1, n_heads=2, max_seq_len=16))
    rng = np.random.default_rng(0)
    n, width = 7, 13
    ids = rng.integers(1, 40, size=(n, width)).astype(np.int32)
    mask = np.zeros((n, width), dtype=np.uint8)
    for row, (start, stop) in enumerate([(1, 13), (3, 6), (8, 9), (2, 4), (5, 11), (1, 2), (4, 8)]):
        mask[row, start:stop] = 1
        ids[row, stop:] = 0  # right padding
    reference_sum, reference_count = 0.0, 0
    with torch.no_grad():
        for row in range(n):
            logits = model(torch.as_tensor(ids[row : row + 1, :-1], dtype=torch.long))[0]
            log_p = torch.log_softmax(logits.double(), dim=-1)
            for t in range(1, width):
                if mask[row, t]:
                    reference_sum -= float(log_p[t - 1, ids[row, t]])
                    reference_count += 1
    expected = reference_sum / reference_count
    for batch_size in (1, 3, 7):
        assert mean_loss(model, ids, mask, batch_size=batch_size) == pytest.approx(
            expected, rel=1e-6
        )
    sums, counts = sequence_losses(model, ids, mask, batch_size=2)
    assert counts.tolist() == [12, 3, 1, 2, 6, 1, 4]
    # token-weighted, not the mean of per-row means
    assert expected != pytest.approx(float(np.mean(sums / counts)), rel=1e-3)


def test_mean_loss_ignores_column_zero_and_requires_scored_tokens():
    model = Bigram(np.full((3, 3), 1 / 3))
    ids = np.array([[1, 2, 0]])
    assert mean_loss(model, ids, np.array([[1, 1, 0]])) == pytest.approx(np.log(3))
    with pytest.raises(ValueError, match="scores no token"):
        mean_loss(model, ids, np.array([[1, 0, 0]]))
    with pytest.raises(ValueError, match="\\[N, L \\+ 1\\]"):
        mean_loss(model, ids, np.ones((1, 4)))


P = np.array(
    [
        [0.05, 0.50, 0.25, 0.20],  # after token 0 (the context)
        [0.10, 0.30, 0.30, 0.30],
        [0.25, 0.25, 0.25, 0.25],
        [0.25, 0.25, 0.25, 0.25],
    ]
)


def test_multiple_choice_accuracy_raw_and_length_normalised():
    # item 0: "1" (log .5) vs "2" (log .25); answer 0 wins under both rankings
    # item 1: "3" (log .2 = -1.61) vs "1 1" (log .5 + log .3 = -1.90, per token -0.95);
    #         the answer "1 1" loses on the sum and wins per token
    # item 2: "2 2" (log .25 + log .25) vs "3" (log .2) vs "1" (log .5); answer 2 wins both
    rows = [
        ([0, 1], 0),
        ([0, 3], 1),
        ([0, 2, 2], 2),
        ([0, 2], 0),
        ([0, 1, 1], 1),
        ([0, 3], 2),
        ([0, 1], 2),
    ]
    width = 4
    choice_ids = np.zeros((len(rows), width), dtype=np.int32)
    choice_mask = np.zeros((len(rows), width), dtype=np.uint8)
    for r, (tokens, _) in enumerate(rows):
        choice_ids[r, : len(tokens)] = tokens
        choice_mask[r, 1 : len(tokens)] = 1
    choice_item = np.array([item for _, item in rows])
    answer = np.array([0, 1, 2])
    result = multiple_choice_accuracy(
        Bigram(P), choice_ids, choice_mask, choice_item, answer, batch_size=3
    )
    assert result == {"accuracy": pytest.approx(2 / 3), "accuracy_norm": 1.0, "n_items": 3}
    wrong = multiple_choice_accuracy(
        Bigram(P), choice_ids, choice_mask, choice_item, np.array([1, 0, 0])
    )
    assert wrong == {"accuracy": pytest.approx(1 / 3), "accuracy_norm": 0.0, "n_items": 3}


def test_multiple_choice_input_errors():
    ids = np.array([[0, 1], [0, 2]])
    mask = np.array([[0, 1], [0, 1]])
    with pytest.raises(ValueError, match="answer\\[0\\] = 2 but item 0 has 2 choices"):
        multiple_choice_accuracy(Bigram(P), ids, mask, np.array([0, 0]), np.array([2]))
    with pytest.raises(ValueError, match="one entry per choice row"):
        multiple_choice_accuracy(Bigram(P), ids, mask, np.array([0]), np.array([0]))
    with pytest.raises(ValueError, match="index the 1 items"):
        multiple_choice_accuracy(Bigram(P), ids, mask, np.array([0, 1]), np.array([0]))
