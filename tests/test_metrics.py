"""lab.core.ngrams: one tokenisation rule behind distinct-n, self-BLEU and the repetition rate."""

import numpy as np
import pytest

from lab import evaluate, rewards
from lab.core import ngrams


def test_one_tokenisation_rule():
    assert ngrams.tokens("Hello, WORLD! hello-world 42") == ["hello", "world", "hello", "world", "42"]
    assert ngrams.tokens("") == [] and ngrams.ngrams([], 2) == [] and ngrams.ngrams(["a"], 2) == []
    with pytest.raises(ValueError):
        ngrams.ngrams(["a"], 0)


def test_case_and_punctuation_never_make_text_differ():
    same = ["The cat sat.", "the cat sat", "THE CAT, SAT!"]
    assert ngrams.distinct_n(same, 1) == pytest.approx(3 / 9)
    assert ngrams.self_bleu(same) == pytest.approx([1.0, 1.0, 1.0])
    assert ngrams.repetition_rate(["Go on. go on, GO ON!"], n=2) == pytest.approx([3 / 4])


def test_distinct_n_by_hand():
    # unigrams a b c a: 3 unique of 4; bigrams never cross texts
    texts = ["a b c", "a"]
    assert ngrams.distinct_n(texts, 1) == pytest.approx(3 / 4)
    assert ngrams.distinct_n(texts, 2) == 1.0  # ab, bc: the second text has no bigram
    assert ngrams.distinct_n([], 1) == 0.0 and ngrams.distinct_n(["a"], 2) == 0.0


def test_self_bleu_high_for_one_answer_everywhere_low_for_distinct_answers():
    collapsed = ngrams.self_bleu(["the answer is always the same thing"] * 4)
    distinct = ngrams.self_bleu(["Paris is the capital of France.", "Mix blue and yellow to get green.",
                                  "Photosynthesis turns light into sugar.", "Seven times eight is fifty-six."])
    assert np.mean(collapsed) == pytest.approx(1.0)
    assert np.mean(distinct) < 0.1
    assert ngrams.self_bleu(["", "a b c"]) == [0.0, 0.0] and ngrams.self_bleu(["alone"]) == [0.0]
    assert ngrams.self_bleu(["?!", "a b c"]) == [0.0, 0.0]  # no tokens: no BLEU


def test_repetition_rate_range_and_the_reward_is_its_negative():
    texts = ["the the the the", "a new day dawns", "yes", "I like it. I like it. I like it."]
    rates = ngrams.repetition_rate(texts)
    assert rates[:3] == [1.0, 0.0, 0.0] and rates[3] == pytest.approx(4 / 6)
    assert rewards.repetition([""] * 4, texts) == [-r + 0.0 for r in rates]
    assert all(0.0 <= r <= 1.0 for r in ngrams.repetition_rate(["x y " * 20, "one two three four five"], n=1))


def test_evaluate_and_rewards_use_these_functions():
    assert evaluate.distinct_n is ngrams.distinct_n and evaluate.self_bleu is ngrams.self_bleu
    assert not hasattr(rewards, "_repetition_one")
