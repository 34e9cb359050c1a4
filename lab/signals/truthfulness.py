"""The ``truthfulness`` REWARD and its passage retriever: agreement of an answer with retrieved
evidence. (The factual METRICS of evaluation, multiple choice and BERTScore, are
:mod:`lab.eval.factual`; :mod:`lab.rewards` builds this reward by name.)

**Retrieval** (:class:`Retriever`): a hybrid of BM25 (``rank-bm25``'s ``BM25Okapi`` over the
Porter-stemmed content words of each passage's title and text) and dense retrieval (MiniLM
cosine of question and passage, the embedder the semantic reward already loads):

    fused(q, p) = w * bm25(q, p) / max_p' bm25(q, p') + (1 - w) * cos(e(q), e(p)),   w = bm25_weight

**Agreement** (:class:`Truthfulness`): the top ``k`` passages, weighted by
``pi_j = softmax(fused_j / temperature)`` (sharp: mostly the top passage), each scored

    a_j = alpha * lexical_j + (1 - alpha) * dense_j,       reward = sum_j pi_j * a_j  in [0, 1]

- ``lexical_j``: the share of the answer's *claim terms* found in passage ``j``. The claim
  terms are the answer's stemmed content words that the question does not already hold: in
  "The capital of Australia is Sydney." only "sydney" makes a claim; the words shared with the
  question say nothing about truth. An answer that only echoes the question has no claim: 0.
- ``dense_j``: ``max(0, max_s cos(e(answer), e(s)))`` over the sentences ``s`` of passage ``j``:
  meaning, for paraphrases and key terms that the words miss.

Why not plain word overlap with the top 3 passages: the factual set's distractor passages
(Sydney, Buzz Aldrin) share words with the wrong answers, so overlap prefers a wrong answer
about half the time. Weighting the top passage, and judging only the claim, fixes most of it.

Measured on the bundled factual set (``alpha=0.5``, ``bm25_weight=0.3``, ``temperature=0.05``,
``k=3``, chosen on ``train.jsonl``; :func:`pairwise_accuracy`), the correct ``best_answer``
outscores *each* of its wrong answers for 125/126 train and 51/54 held-out questions (94.4%);
its paraphrase (``correct_answers[0]``) for 50/54, its bare key term for 50/54. Plain word
overlap with the top 3 passages manages 27/54. The retriever ranks the evidence passage first
for 53/54 held-out questions.

The reward reads facts; it is meaningful for factual questions whose evidence is in the corpus
(the bundled ``data/factual/passages.jsonl``, or any passages JSONL: one
``{"id", "title", "text"}`` object per line).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lab.data import data_dir, format_prompt
from lab.models import load_embedder

_NUMBER_WORDS = {"one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                 "twelve", "fifteen", "twenty", "forty", "fifty", "sixty", "hundred", "first", "third",
                 "last", "few", "many", "most", "more", "less", "least", "no", "not", "never", "none"}


@dataclass(frozen=True)
class Passage:
    """One evidence passage of the retrieval corpus."""

    id: str
    title: str
    text: str


def default_corpus() -> Path:
    """The bundled passage corpus, ``data/factual/passages.jsonl``."""
    return data_dir() / "factual" / "passages.jsonl"


def load_passages(path: str | Path | None = None) -> list[Passage]:
    """Read a passages JSONL file (``None``: :func:`default_corpus`); errors name the line."""
    path = Path(path) if path is not None else default_corpus()
    if not path.is_file():
        raise ValueError(f"Passage corpus {path} does not exist; give a JSONL file with one "
                         f'{{"id", "title", "text"}} object per line (truthfulness_corpus=...)')
    passages = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}, line {number}: not valid JSON ({err.msg})") from err
        if not isinstance(row, dict) or not str(row.get("text") or "").strip():
            raise ValueError(f"{path}, line {number}: each line needs a non-empty 'text' (and 'id', 'title')")
        passages.append(Passage(str(row.get("id", number)), str(row.get("title") or ""), row["text"].strip()))
    if not passages:
        raise ValueError(f"Passage corpus {path} holds no passages")
    return passages


@functools.lru_cache(maxsize=1)
def _stopwords() -> frozenset:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS - _NUMBER_WORDS)  # numbers and negations carry facts


@functools.lru_cache(maxsize=1)
def _stemmer():
    from nltk.stem.porter import PorterStemmer

    return PorterStemmer()


def terms(text: str) -> list[str]:
    """Porter-stemmed content words, numbers without thousands separators.

    >>> terms("There are 1,440 minutes in a day.")
    ['1440', 'minut', 'day']
    """
    text = re.sub(r"(?<=\d),(?=\d{3})", "", text.lower())
    stop, stem = _stopwords(), _stemmer()
    return [stem.stem(w) for w in re.findall(r"[a-z0-9]+(?:\.\d+)?", text) if w not in stop]


def question_of(prompt: str) -> str:
    """The question inside a formatted prompt (the kit's template or a chat template).

    >>> question_of("### Prompt:\\nWhat is the capital of Peru?\\n\\n### Response:\\n")
    'What is the capital of Peru?'
    """
    match = re.search(r"### Prompt:\n(.*?)\n\n### Response:", prompt, re.S)
    if match:
        return match.group(1).strip()
    text = re.sub(r"<\|[^|>]*\|>|<[^<>]{1,20}>", " ", prompt)  # chat-template markers
    text = re.sub(r"^\s*(system|user|assistant)\b", " ", text, flags=re.M)
    return " ".join(text.split())


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip()] or [text]


class Retriever:
    """Hybrid BM25 + dense retrieval over ``passages`` (see the module docstring).

    ``bm25_weight``: ``w`` in the fused score; 1.0 is BM25 alone (no embedder is loaded).
    ``embedder``: a ``SentenceTransformer``; ``None`` loads ``lab.models.load_embedder("auto")``
    when first needed.
    """

    def __init__(self, passages: list[Passage], embedder=None, bm25_weight: float = 0.3):
        from rank_bm25 import BM25Okapi

        if not 0.0 <= bm25_weight <= 1.0:
            raise ValueError(f"bm25_weight must lie in [0, 1], got {bm25_weight}")
        self.passages, self.bm25_weight, self._embedder = list(passages), bm25_weight, embedder
        self.terms = [terms(f"{p.title} {p.text}") for p in self.passages]
        self.term_sets = [set(t) for t in self.terms]
        self.bm25 = BM25Okapi([t or ["_"] for t in self.terms])
        self._passage_emb = None

    @property
    def embedder(self):
        if self._embedder is None:
            self._embedder = load_embedder("auto")
        return self._embedder

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-norm MiniLM embeddings, (len(texts), dim)."""
        return self.embedder.encode(list(texts), convert_to_numpy=True, normalize_embeddings=True,
                                    show_progress_bar=False, batch_size=64)

    def scores(self, queries: list[str]) -> np.ndarray:
        """Fused scores of every passage for each query, (Q, P)."""
        bm25 = np.stack([self.bm25.get_scores(terms(q)) for q in queries])  # (Q, P)
        bm25 = bm25 / np.maximum(bm25.max(axis=1, keepdims=True), 1e-9)  # (Q, P) in [0, 1]
        if self.bm25_weight >= 1.0:
            return bm25
        if self._passage_emb is None:
            self._passage_emb = self.encode([f"{p.title}. {p.text}" for p in self.passages])  # (P, dim)
        dense = self.encode(queries) @ self._passage_emb.T  # (Q, P)
        return self.bm25_weight * bm25 + (1 - self.bm25_weight) * dense

    def search(self, queries: list[str], k: int = 3) -> list[list[tuple[int, float]]]:
        """The top ``k`` passages per query: ``[[(passage index, fused score), ...], ...]``, best first."""
        fused = self.scores(queries)  # (Q, P)
        top = np.argsort(-fused, axis=1, kind="stable")[:, :k]  # (Q, k)
        return [[(int(i), float(fused[q, i])) for i in row] for q, row in enumerate(top)]


class Truthfulness:
    """The ``truthfulness`` reward: agreement of the answer with retrieved evidence, in [0, 1].

    A plain TRL-style callable ``fn(prompts, completions, **kwargs) -> list[float]``; the
    question is read from each prompt (:func:`question_of`), references are not needed.
    Batched: one retrieval per distinct prompt (a prompt's k samples share it) and one
    embedder call for all answers. An empty answer scores 0.

    ``corpus``: a passages JSONL path, or a list of :class:`Passage` (``None``: the bundled
    corpus). ``alpha``: weight of the lexical part (1.0 with ``bm25_weight=1.0``: no embedder).

    >>> corpus = [Passage("p1", "Canberra", "Canberra is the capital city of Australia."),
    ...           Passage("p2", "Sydney", "Sydney is the oldest and largest city in Australia."),
    ...           Passage("p3", "Gold", "The chemical symbol of gold is Au.")]
    >>> reward = Truthfulness(corpus, alpha=1.0, bm25_weight=1.0)
    >>> reward(["What is the capital of Australia?"] * 3, ["It is Canberra.", "It is Sydney.", ""])
    [1.0, 0.0, 0.0]
    """

    def __init__(self, corpus=None, embedder=None, k: int = 3, alpha: float = 0.5,
                 bm25_weight: float = 0.3, temperature: float = 0.05):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha (the lexical weight) must lie in [0, 1], got {alpha}")
        if not temperature > 0 or k < 1:
            raise ValueError(f"temperature must be > 0 and k >= 1, got {temperature}, {k}")
        passages = corpus if isinstance(corpus, list) else load_passages(corpus)
        self.retriever = Retriever(passages, embedder, bm25_weight)
        self.k, self.alpha, self.temperature = k, alpha, temperature
        self._sentences, self._sentence_emb = None, None
        self.__name__ = "truthfulness"  # TRL logs reward functions by __name__

    def _sentence_index(self):
        """Every passage's sentences, embedded once: (list of (S_p, dim) arrays)."""
        if self._sentence_emb is None:
            self._sentences = [_sentences(p.text) for p in self.retriever.passages]
            flat = self.retriever.encode([s for group in self._sentences for s in group])  # (S, dim)
            bounds = np.cumsum([0] + [len(g) for g in self._sentences])
            self._sentence_emb = [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        return self._sentence_emb

    def evidence(self, prompts: list[str]) -> list[list[tuple[int, float]]]:
        """Per prompt: the top ``k`` passages and their weights ``pi_j`` (summing to 1)."""
        out = []
        for hits in self.retriever.search([question_of(p) for p in prompts], self.k):
            fused = np.array([s for _, s in hits])  # (k,)
            weights = np.exp((fused - fused.max()) / self.temperature)  # (k,)
            out.append([(i, float(w)) for (i, _), w in zip(hits, weights / weights.sum())])
        return out

    def parts(self, prompts, completions) -> dict[str, list[float]]:
        """The weighted ``lexical`` and ``dense`` parts and the ``reward`` of each answer."""
        n = len(completions)
        distinct = list(dict.fromkeys(prompts))
        evidence = dict(zip(distinct, self.evidence(distinct)))
        lexical, dense = np.zeros(n), np.zeros(n)  # (n,)
        keep = [i for i, c in enumerate(completions) if c.strip()]
        answer_emb = None
        if self.alpha < 1.0 and keep:
            sentence_emb = self._sentence_index()
            answer_emb = self.retriever.encode([completions[i] for i in keep])  # (kept, dim)
        question_terms = {p: set(terms(question_of(p))) for p in distinct}  # once per prompt, not per sample
        for row, i in enumerate(keep):
            claim = [t for t in terms(completions[i]) if t not in question_terms[prompts[i]]]
            for passage, weight in evidence[prompts[i]]:
                if claim:
                    found = self.retriever.term_sets[passage]
                    lexical[i] += weight * sum(t in found for t in claim) / len(claim)
                if answer_emb is not None:
                    dense[i] += weight * max(0.0, float((sentence_emb[passage] @ answer_emb[row]).max()))
        reward = np.clip(self.alpha * lexical + (1 - self.alpha) * dense, 0.0, 1.0)  # (n,)
        return {"lexical": lexical.tolist(), "dense": dense.tolist(), "reward": reward.tolist()}

    def __call__(self, prompts, completions, **kwargs) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"truthfulness needs one prompt per completion, got {len(prompts)} "
                             f"prompts and {len(completions)} completions")
        return [round(r, 6) for r in self.parts(list(prompts), list(completions))["reward"]]

    def explain(self, prompt: str, completion: str) -> list[dict]:
        """What the reward saw for one answer: its evidence passages, weights and text."""
        return [{"id": self.retriever.passages[i].id, "weight": round(w, 3),
                 "title": self.retriever.passages[i].title, "text": self.retriever.passages[i].text}
                for i, w in self.evidence([prompt])[0]]


def pairwise_accuracy(rows: list[dict], reward, answer: str = "best") -> float:
    """Share of questions whose correct answer outscores *each* of its wrong answers.

    ``rows``: factual rows (``question``, ``best_answer``, ``correct_answers``,
    ``incorrect_answers``; :func:`lab.data.factual_rows`). ``answer``: which correct answer
    competes: ``best`` (``best_answer``), ``paraphrase`` (``correct_answers[0]``) or ``key``
    (``correct_answers[-1]``). ``reward``: any TRL-style reward reading the question from the prompt.
    """
    pick = {"best": lambda r: r["best_answer"], "paraphrase": lambda r: r["correct_answers"][0],
            "key": lambda r: r["correct_answers"][-1]}[answer]
    prompts, answers, spans = [], [], []
    for row in rows:
        choices = [pick(row), *row["incorrect_answers"]]
        spans.append((len(answers), len(choices)))
        prompts += [format_prompt(row["question"])] * len(choices)
        answers += choices
    scores = reward(prompts, answers)
    wins = [all(scores[start] > s for s in scores[start + 1:start + size]) for start, size in spans]
    return sum(wins) / len(wins)


@functools.lru_cache(maxsize=2)
def shared_reward(corpus: str | None = None) -> Truthfulness:
    """One :class:`Truthfulness` per corpus path and process (its corpus is embedded once)."""
    return Truthfulness(corpus)
