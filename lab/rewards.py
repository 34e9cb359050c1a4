"""The reward functions: plain callables with TRL's signature, and their weighted composite.

Each reward is ``fn(prompts, completions, **kwargs) -> list[float]``; the reference
answers come as the keyword ``references`` (one per completion), so every function also
drops into TRL's ``GRPOTrainer`` / ``RLOOTrainer``. Scores read the *completion only*:
the prompt is never scored (the sketch's defect 2); perplexity uses it only as the
context that the completion is conditioned on. The trainer also passes ``base_pass=``
(a :class:`BasePass`, the frozen base's log-probs of the step's samples, shared with the KL
penalty): the perplexity reward reads it, the others ignore it.

| name         | callable              | range                    | measures                               |
| ------------ | --------------------- | ------------------------ | -------------------------------------- |
| ``semantic`` | :class:`Semantic`     | [-1, 1], typically 0..1  | MiniLM cosine(completion, reference)   |
| ``perplexity`` | :class:`Perplexity` | (0, 1], 0 when empty     | fluency under the frozen base LM       |
| ``rouge``    | :func:`rouge_l`       | [0, 1]                   | ROUGE-L F1 overlap with the reference  |
| ``bleu``     | :func:`bleu`          | [0, 1]                   | sentence BLEU against the reference    |
| ``repetition`` | :func:`repetition`  | [-1, 0]                  | repeated n-grams, loops                |
| ``length``   | :func:`length`        | [-1, 0]                  | words outside [min_words, max_words]   |
| ``truthfulness`` | :class:`lab.signals.truthfulness.Truthfulness` | [0, 1]  | agreement with retrieved evidence      |

:class:`Reward` weights them: ``total = sum(weight * part)``, computing only the parts
with a nonzero weight. Heavy libraries (sentence-transformers, rouge-score, sacrebleu)
load on first use. The truthfulness reward and its retriever live in
:mod:`lab.signals.truthfulness`; the metrics of held-out evaluation (multiple choice, BERTScore,
METEOR) in :mod:`lab.eval.factual`; continuations are scored by
:func:`lab.generator.score_continuations`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import torch

from lab import generator
from lab.config import PERPLEXITY_FORMS, REWARD_NAMES  # the one list of each (config validates against them)
from lab.core.ngrams import repetition_rate
from lab.models import load_embedder
from lab.signals import truthfulness



def _references(completions: list[str], references: list[str] | None) -> list[str]:
    """The references, checked: one per completion."""
    if references is None or len(references) != len(completions):
        got = "none" if references is None else len(references)
        raise ValueError(f"This reward needs references=[...], one reference answer per completion "
                         f"({len(completions)} completions, {got} references).")
    return list(references)


class Semantic:
    """Cosine similarity of MiniLM sentence embeddings of completion and reference.

    ``cos(e(completion), e(reference))`` in [-1, 1]; for English text typically 0..1
    (unrelated text ~0.0-0.2, paraphrases ~0.7-0.9, identical text 1). An empty
    completion scores 0. One ``encode`` call per batch (completions and references together).
    ``embedder``: a ``SentenceTransformer``; ``None`` loads ``lab.models.load_embedder("auto")``
    on first use.
    """

    def __init__(self, embedder=None, batch_size: int = 64):
        self._embedder = embedder
        self.batch_size = batch_size
        self.__name__ = "semantic"  # TRL logs reward functions by __name__

    @property
    def embedder(self):
        if self._embedder is None:
            self._embedder = load_embedder("auto")
        return self._embedder

    def __call__(self, prompts, completions, references=None, **kwargs) -> list[float]:
        references = _references(completions, references)
        n = len(completions)
        if n == 0:
            return []
        emb = self.embedder.encode(list(completions) + references, batch_size=self.batch_size,
                                   convert_to_tensor=True, normalize_embeddings=True,
                                   show_progress_bar=False)  # (2 * batch, dim)
        cosine = (emb[:n] * emb[n:]).sum(-1).clamp(-1.0, 1.0)  # (batch,)
        return [float(c) if text.strip() else 0.0 for c, text in zip(cosine.tolist(), completions)]


class Perplexity:
    """Fluency of the completion under the frozen base LM, given the prompt.

    ``nll`` is the mean per-token negative log-likelihood of the completion tokens given
    the prompt (prompt tokens are context only, never scored); ``ppl = exp(nll)``.

    - ``form="scaled"`` (default): ``exp(-nll / tau) = ppl ** (-1 / tau)``, in (0, 1].
      SmolLM2-135M, ``tau=4``, bundled held-out prompts: references ~0.6, the model's own
      samples ~0.8, shuffled words ~0.2 (tau 3-4 gave the widest good-junk gap).
    - ``form="sketch"``: the original sketch's ``1 / (1 + ppl)``: references ~0.15, shuffled
      words ~0.004; scored the sketch's way (prompt + completion, unconditioned) ~0.05 for
      every answer, so good and junk barely differ (defect 4).

    A language model finds loops likely, so repeated text scores well here: pair this
    reward with ``repetition``.

    An empty completion scores 0. ``model`` may be a peft ``PeftModel`` (the generator):
    it is then scored with its adapters disabled, so no second copy of the base is needed.
    No gradients; the model is put in eval mode for the call. ``base_pass=`` (a
    :class:`BasePass` of the same backbone, as the trainer passes it): the rows it scored are
    read from it, the others scored here.
    """

    def __init__(self, model, tokenizer, form: str = "scaled", tau: float = 4.0,
                 max_prompt_tokens: int = 256):
        if form not in PERPLEXITY_FORMS:
            raise ValueError(f"Perplexity form must be one of {PERPLEXITY_FORMS}, got {form!r}.")
        if not tau > 0:
            raise ValueError(f"Perplexity tau must be > 0 (typical 2-8), got {tau}.")
        self.model, self.tokenizer, self.form, self.tau = model, tokenizer, form, tau
        self.max_prompt_tokens = max_prompt_tokens  # longer prompts keep their last tokens
        self.__name__ = "perplexity"

    def nll(self, prompts: list[str], completions: list[str], base_pass: BasePass | None = None) -> torch.Tensor:
        """Mean NLL per completion token given the prompt, shape (batch,); NaN for empty completions.
        Scored by :func:`lab.generator.score_continuations` (completions of one prompt share one pass
        over it); with ``base_pass`` (of this backbone) the rows whose tokens it scored are read from it."""
        out = torch.full((len(completions),), float("nan"))  # (batch,)
        keep = [i for i, c in enumerate(completions) if c.strip()]
        if not keep:
            return out
        contexts = generator.context_tokens(self.tokenizer, [prompts[i] for i in keep], self.max_prompt_tokens)
        answers = self.tokenizer([completions[i] for i in keep], add_special_tokens=False)["input_ids"]
        if base_pass is not None and base_pass.model is self.model:  # rows the step's base pass scored
            known = [base_pass.nll(c, a) for c, a in zip(contexts, answers)]
            for i, value in zip(keep, known):
                if value is not None:
                    out[i] = value
            left = [j for j, value in enumerate(known) if value is None]
            keep, contexts, answers = [keep[j] for j in left], [contexts[j] for j in left], [answers[j] for j in left]
            if not keep:
                return out
        pad = self.tokenizer.pad_token_id or 0
        [logprobs] = generator.score_continuations(self.model, contexts, answers, pad, base=True)  # (kept, T)
        lengths = torch.tensor([len(a) for a in answers], device=logprobs.device)  # (kept,)
        out[keep] = (-logprobs.sum(-1) / lengths).float().cpu()  # (kept,)
        return out

    def __call__(self, prompts, completions, base_pass: BasePass | None = None, **kwargs) -> list[float]:
        nll = self.nll(prompts, completions, base_pass)  # (batch,)
        score = 1 / (1 + nll.exp()) if self.form == "sketch" else (-nll / self.tau).exp()  # (batch,)
        return score.nan_to_num(0.0).tolist()


@dataclass
class BasePass:
    """The frozen base's log-probs of a step's sampled responses, from ONE pass (:func:`base_pass`),
    read by both frozen-base consumers: the KL penalty (at the sampling temperature: the trainer
    hands ``at_temperature`` to the generator update) and the perplexity reward (at temperature 1:
    the trainer passes the pass to the reward as ``base_pass=``; :class:`Perplexity` reads each
    response whose decoded text re-tokenizes to the sampled tokens, and scores the others itself)."""

    at_temperature: torch.Tensor  # (N, T) log p_base of each response token (EOS included), at the temperature
    at_one: torch.Tensor  # (N, T) the same at temperature 1
    rows: dict  # (prompt token ids, response token ids before EOS) -> row
    model: object = field(repr=False)  # the backbone it ran on: a Perplexity of another model scores itself

    def nll(self, context: list[int], answer: list[int]) -> float | None:
        """Mean NLL of ``answer`` given ``context`` under the base, when this pass scored them; else None."""
        row = self.rows.get((tuple(context), tuple(answer)))
        return None if row is None or not answer else float(-self.at_one[row, :len(answer)].sum() / len(answer))


def base_pass(model, samples, temperature: float, tokenizer) -> BasePass:
    """One pass of the base (adapters off) over the sampled responses of ``samples`` (a
    :class:`lab.generator.Samples`: ``B`` prompts as the sampler saw them, ``N = B * k`` token
    lists, EOS included where sampled), scored at ``temperature`` and at 1
    (:func:`lab.generator.score_continuations`)."""
    prompt_ids, prompt_mask = samples.prompt_tensors()  # (B, P) each
    prompts = [ids[on.bool()].tolist() for ids, on in zip(prompt_ids, prompt_mask)]  # B token lists
    responses, k, eos_id = samples.responses(), samples.k, tokenizer.eos_token_id
    contexts = [prompts[i // k] for i in range(len(responses))]  # (N,) row -> its prompt's tokens
    at_temperature, at_one = generator.score_continuations(model, contexts, responses, tokenizer.pad_token_id,
                                                           (temperature, 1.0), base=True)  # (N, T) each
    rows = {(tuple(c), tuple(r[:-1] if r and r[-1] == eos_id else r)): i
            for i, (c, r) in enumerate(zip(contexts, responses))}
    return BasePass(at_temperature, at_one.float().cpu(), rows, model)  # at_one read row by row: one copy


@functools.lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prompts, completions, references=None, **kwargs) -> list[float]:
    """ROUGE-L F1 (longest common subsequence of stemmed words) with the reference, in [0, 1].

    >>> rouge_l([""] * 2, ["The cat sat.", "Dogs bark."], references=["The cat sat.", "A cat sat."])
    [1.0, 0.0]
    """
    references = _references(completions, references)
    scorer = _rouge_scorer()
    return [scorer.score(ref, text)["rougeL"].fmeasure for text, ref in zip(completions, references)]


def bleu(prompts, completions, references=None, **kwargs) -> list[float]:
    """Sentence BLEU (sacrebleu, effective order, exp smoothing) / 100, in [0, 1].

    >>> bleu([""] * 2, ["the cat sat on the mat", "dogs bark"], references=["the cat sat on the mat"] * 2)
    [1.0, 0.0]
    """
    import sacrebleu

    references = _references(completions, references)
    return [min(1.0, sacrebleu.sentence_bleu(text, [ref], use_effective_order=True).score / 100)
            for text, ref in zip(completions, references)]


def repetition(prompts, completions, n: int = 3, **kwargs) -> list[float]:
    """Penalty for repeated word n-grams, in [-1, 0]: ``-lab.core.ngrams.repetition_rate``.

    ``-(total - unique) / (total - 1)`` over the completion's word n-grams
    (:func:`lab.core.ngrams.tokens`: lower-cased ``\\w+`` words): 0 when no n-gram repeats,
    -1 when one n-gram fills the whole text (the first occurrence can never be a repeat,
    hence ``total - 1``). Fewer than ``n + 1`` words -> 0.

    >>> repetition([""] * 3, ["the the the the", "The cat sat on the mat.", "yes"])
    [-1.0, 0.0, 0.0]
    >>> [round(x, 2) for x in repetition([""], ["I like it. I like it. I like it."])]
    [-0.67]
    """
    return [-rate + 0.0 for rate in repetition_rate(completions, n)]  # + 0.0: no -0.0


def length(prompts, completions, min_words: int = 1, max_words: int = 40, **kwargs) -> list[float]:
    """0 for ``min_words <= words <= max_words``, a linear penalty outside, clipped at -1.

    Below: ``-(min_words - words) / min_words``; above: ``-(words - max_words) / max_words``.
    The default ``min_words=1`` only penalises empty answers: a fifth of the bundled
    references are one or two words ("Positive.", "Ghana").

    >>> length([""] * 4, ["Paris.", "It is Paris.", "", " ".join(["w"] * 60)], min_words=2, max_words=40)
    [-0.5, 0.0, -1.0, -0.5]
    """
    def one(words: int) -> float:
        if words < min_words:
            return -min(1.0, (min_words - words) / min_words)
        if words > max_words:
            return -min(1.0, (words - max_words) / max_words)
        return 0.0

    return [one(len(text.split())) for text in completions]


def _named(fn, name: str, **options):
    """``fn`` with ``options`` bound and ``__name__`` set (TRL logs rewards by name)."""
    bound = functools.partial(fn, **options)
    bound.__name__ = name
    return bound


_OPTIONS = {"perplexity": ("form", "tau", "max_prompt_tokens"), "repetition": ("n",),
            "length": ("min_words", "max_words"), "truthfulness": ("corpus",)}


def make_reward_fns(model=None, tokenizer=None, embedder=None, names=None, **options) -> dict:
    """Build reward callables by name: ``{name: fn}``.

    ``names``: which to build (default: all of :data:`REWARD_NAMES`, ``perplexity`` only
    when a model is given). ``options`` go to the reward that takes them: ``form``, ``tau``,
    ``max_prompt_tokens`` (perplexity), ``n`` (repetition), ``min_words``, ``max_words`` (length),
    ``corpus`` (truthfulness: a passages JSONL, the config's ``truthfulness_corpus``; None: bundled).
    """
    known_options = {key for keys in _OPTIONS.values() for key in keys}
    if set(options) - known_options:
        raise ValueError(f"Unknown reward options {sorted(set(options) - known_options)}; "
                         f"known: {sorted(known_options)}.")
    if names is None:
        names = [n for n in REWARD_NAMES if n != "perplexity" or model is not None]
    unknown = [n for n in names if n not in REWARD_NAMES]
    if unknown:
        raise ValueError(f"Unknown reward names {unknown}; known names: {', '.join(REWARD_NAMES)}.")
    if "perplexity" in names and (model is None or tokenizer is None):
        raise ValueError("The perplexity reward needs model= and tokenizer= (the frozen base LM, "
                         "or the generator's PeftModel, scored with adapters disabled).")

    def pick(name: str) -> dict:
        return {key: options[key] for key in _OPTIONS.get(name, ()) if key in options}

    builders = {
        "semantic": lambda: Semantic(embedder),
        "perplexity": lambda: Perplexity(model, tokenizer, **pick("perplexity")),
        "rouge": lambda: _named(rouge_l, "rouge"),
        "bleu": lambda: _named(bleu, "bleu"),
        "repetition": lambda: _named(repetition, "repetition", **pick("repetition")),
        "length": lambda: _named(length, "length", **pick("length")),
        "truthfulness": lambda: _truthfulness(embedder, **pick("truthfulness")),
    }
    return {name: builders[name]() for name in names}


def _truthfulness(embedder=None, corpus=None):
    if embedder is None:  # the process's one instance per corpus: evaluation reuses its embedded corpus
        return truthfulness.shared_reward(None if corpus is None else str(corpus))
    return truthfulness.Truthfulness(corpus, embedder)


@dataclass
class RewardOutput:
    """The composite's result: ``total[i] = sum(weights[name] * parts[name][i])``."""

    total: list[float]
    parts: dict[str, list[float]] = field(default_factory=dict)  # unweighted, one list per reward

    def as_frame(self):
        """A pandas DataFrame: one column per part, then ``total``; one row per completion."""
        import pandas as pd

        return pd.DataFrame({**self.parts, "total": self.total})


class Reward:
    """A weighted sum of reward parts: ``total = sum(weight * part)``.

    ``weights``: ``{name: weight}``; only nonzero weights are computed. ``fns`` adds or
    replaces callables (custom names allowed); the rest are built by :func:`make_reward_fns`
    from ``model``, ``tokenizer``, ``embedder`` and ``options``.

    ``reward(prompts, completions, references=..., **kwargs)`` returns a :class:`RewardOutput`
    (total and unweighted parts); ``kwargs`` (e.g. the trainer's ``base_pass=``) go to every
    part. ``reward.as_trl()`` is a plain TRL reward function returning the totals only.
    """

    def __init__(self, weights: dict[str, float], fns: dict | None = None, model=None, tokenizer=None,
                 embedder=None, **options):
        fns = dict(fns or {})
        known = (*REWARD_NAMES, *(n for n in fns if n not in REWARD_NAMES))
        unknown = [n for n in weights if n not in known]
        if unknown:
            raise ValueError(f"Unknown reward names {unknown} in weights; known names: {', '.join(known)}.")
        bad = {n: w for n, w in weights.items() if not isinstance(w, (int, float)) or not math.isfinite(w)}
        if bad:
            raise ValueError(f"Reward weights must be finite numbers, got {bad}.")
        self.weights = {n: float(w) for n, w in weights.items() if w != 0}
        missing = [n for n in self.weights if n not in fns]
        fns.update(make_reward_fns(model, tokenizer, embedder, names=missing, **options))
        self.fns = {n: fns[n] for n in self.weights}

    def __call__(self, prompts, completions, references=None, **kwargs) -> RewardOutput:
        parts = {name: [float(x) for x in fn(prompts, completions, references=references, **kwargs)]
                 for name, fn in self.fns.items()}
        total = [sum(self.weights[name] * parts[name][i] for name in parts) for i in range(len(completions))]
        return RewardOutput(total=total, parts=parts)

    def as_trl(self):
        """A plain ``fn(prompts, completions, **kwargs) -> list[float]`` of the totals."""
        def reward(prompts, completions, **kwargs) -> list[float]:
            return self(prompts, completions, **kwargs).total

        return reward

    def __repr__(self) -> str:
        return f"Reward({self.weights})"
