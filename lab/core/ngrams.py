"""Text statistics with one tokenisation rule: distinct-n, self-BLEU, n-gram repetition.

Every function here reads text through :func:`tokens`: **lower-cased word tokens**, the
maximal runs of letters, digits and underscores (the regex ``\\w+``, Unicode-aware), so
punctuation and case never make two words differ ("Paris." and "paris" are one token;
"don't" is "don", "t"). The trainer's history (``distinct_1``/``distinct_2``), the
held-out evaluation (:mod:`lab.evaluate`) and the repetition reward
(:func:`lab.rewards.repetition`) all count with it, so their numbers agree.

The *reference-overlap* metrics (ROUGE-L and BLEU against the reference answer, in
:mod:`lab.rewards`) keep their libraries' standard tokenisers, so they compare with
published numbers; self-BLEU is a diversity statistic of the kit, so it is computed by
sacrebleu on this module's tokens (``tokenize="none"`` on the space-joined tokens).
"""

from __future__ import annotations

import re

TOKEN = re.compile(r"\w+")


def tokens(text: str) -> list[str]:
    """The words of ``text``: lower-cased ``\\w+`` runs; punctuation and spaces separate them.

    >>> tokens("The cat's mat, 2 times!")
    ['the', 'cat', 's', 'mat', '2', 'times']
    >>> tokens("  ...  ")
    []
    """
    return TOKEN.findall(text.lower())


def ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
    """The ``n``-grams of a token list, in order (none when it has fewer than ``n`` tokens).

    >>> ngrams(["a", "b", "c"], 2)
    [('a', 'b'), ('b', 'c')]
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct-n of a *set* of texts: unique n-grams / all n-grams, over all ``texts`` together.

    1.0 when no n-gram repeats anywhere; near 0 when every text says the same thing.
    N-grams do not cross text boundaries; no n-grams at all gives 0.0.

    >>> distinct_n(["a b a b"], 1)
    0.5
    >>> distinct_n(["A b.", "a B"], 2)
    0.5
    """
    grams = [gram for text in texts for gram in ngrams(tokens(text), n)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(texts: list[str], n: int = 3) -> list[float]:
    """Per text, the share of its n-grams that repeat an earlier one, in [0, 1].

    ``(total - unique) / (total - 1)`` over the text's n-grams: 0 when none repeats, 1 when
    one n-gram fills the whole text (the first occurrence can never be a repeat, hence
    ``total - 1``). Fewer than ``n + 1`` tokens: 0. :func:`lab.rewards.repetition` is its
    negative.

    >>> repetition_rate(["the the the the", "The cat sat on the mat.", "yes"])
    [1.0, 0.0, 0.0]
    >>> [round(r, 2) for r in repetition_rate(["I like it. I like it. I like it."])]
    [0.67]
    """
    rates = []
    for text in texts:
        grams = ngrams(tokens(text), n)
        rates.append((len(grams) - len(set(grams))) / (len(grams) - 1) if len(grams) >= 2 else 0.0)
    return rates


def self_bleu(texts: list[str]) -> list[float]:
    """Per text, sentence BLEU against all the *other* texts / 100, in [0, 1].

    The mean over texts is the self-BLEU of the set (Zhu et al., 2018, Texygen): ~1 when
    every text is the same, low when they differ. sacrebleu's sentence BLEU with effective
    order (exp smoothing) on :func:`tokens` (joined by spaces, ``tokenize="none"``), so case
    and punctuation do not count. A text without tokens, or without others, scores 0.

    >>> self_bleu(["The cat sat on the mat."] * 2 + ["the cat sat on the mat"])
    [1.0, 1.0, 1.0]
    >>> self_bleu(["", "a b c"])
    [0.0, 0.0]
    """
    import sacrebleu

    joined = [" ".join(tokens(text)) for text in texts]
    scores = []
    for i, text in enumerate(joined):
        others = [t for j, t in enumerate(joined) if j != i]
        if not text or not others:
            scores.append(0.0)
            continue
        score = sacrebleu.sentence_bleu(text, others, tokenize="none", use_effective_order=True).score
        scores.append(min(1.0, score / 100))
    return scores
