"""Cheap statistics of generated text, shared by the trainer's history and the evaluation."""

from __future__ import annotations


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct-n: unique n-grams / all n-grams over ``texts`` (whitespace tokens).

    >>> distinct_n(["a b a b"], 1)
    0.5
    >>> distinct_n(["a b", "a b"], 2)
    0.5
    """
    grams = [tuple(words[i:i + n]) for words in (t.split() for t in texts)
             for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0
