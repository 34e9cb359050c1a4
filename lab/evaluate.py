"""Held-out evaluation: greedy and sampled answers, scored with established metric libraries.
This file runs the evaluation and puts the metrics together; the factual metrics (multiple
choice, BERTScore, METEOR) are :mod:`lab.eval.factual`, the truthfulness reward it also reports
is :mod:`lab.signals.truthfulness`.

:func:`evaluate_model` answers each held-out prompt once per decoding (``greedy``, and
``sampled`` with a fixed seed, the config's temperature and top-p), in one batched
call of :func:`lab.generator.sample` per decoding, and returns one row per prompt and decoding:

| column       | meaning                                                                    |
| ------------ | -------------------------------------------------------------------------- |
| ``semantic`` | MiniLM cosine to the reference (:class:`lab.rewards.Semantic`), 1 = same meaning |
| ``rouge_l``  | ROUGE-L F1 to the reference (rouge-score), in [0, 1]                       |
| ``bleu``     | sentence BLEU to the reference (sacrebleu) / 100, in [0, 1]                |
| ``nll``, ``ppl`` | mean NLL per answer token under the *base* model (adapters off), ``ppl = exp(nll)`` |
| ``self_bleu`` | BLEU of this answer against the decoding's other answers / 100 (:func:`lab.core.ngrams.self_bleu`): near 1 = the model says the same thing to every prompt (mode collapse) |
| ``words``    | answer length in words (:func:`lab.core.ngrams.tokens`; tokenizer-independent, so GPT-2 and SmolLM2 compare) |
| ``repetition`` | repeated word 3-grams, a rate in [0, 1] (:func:`lab.core.ngrams.repetition_rate`) |
| ``disc``     | the discriminator's score of (prompt, answer); NaN without one             |
| ``bertscore`` | BERTScore F1 to the reference (``bert-score``; roberta-large online, the bundled MiniLM offline: :func:`lab.eval.factual.bertscore`) |
| ``meteor``   | METEOR to the reference (nltk + WordNet); NaN when WordNet is unavailable (:func:`lab.eval.factual.meteor`) |
| ``truthfulness`` | factual rows: the ``truthfulness`` reward of the answer (:class:`lab.signals.truthfulness.Truthfulness`), in [0, 1] |
| ``mc1``, ``mc2`` | factual rows: TruthfulQA-style multiple choice from the model's own log-probs (:func:`lab.eval.factual.multiple_choice`); they do not depend on the decoding |

:func:`summarize` gives the means per decoding, with ``ppl = exp(mean nll)`` (the
geometric mean of the answers' perplexities, robust to one wild answer) and distinct-1/2
(:func:`lab.core.ngrams.distinct_n`) over the decoding's answers: distinctness is a property
of a *set* of answers, so it has no per-prompt value. ``truthfulness``, ``mc1`` and ``mc2``
exist for factual rows only (rows with wrong answers: the ``factual``, ``truthfulqa`` and
``arc`` sources, or a local file in those layouts); the summary shows them when it has them.
Which BERTScore model ran, and why METEOR did not, is printed once and kept in ``attrs["notes"]``. Empty answers get NaN ``nll``/``ppl``
(they have no tokens to score) and 0 for the overlap metrics. The word statistics
(``words``, ``repetition``, ``self_bleu``, distinct-n) share :mod:`lab.core.ngrams`' one
tokenisation rule; ROUGE-L and BLEU to the reference keep their libraries' tokenisers.

**What is evaluated** (:func:`heldout`): the held-out split of a source of
:func:`lab.data.load_examples`: ``bundled`` -> ``data/heldout.jsonl``, ``alpaca`` -> its last
10%. A local JSON/JSONL/CSV file has no split, so *all* its rows are evaluated. A run is
evaluated on its own ``config.dataset``; a run trained on a local file is therefore evaluated
on its own training rows (fit, not generalisation) unless other data is given
(``python -m lab eval --run RUN --data OTHER.jsonl``); :func:`describe_source` says which.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lab import generator, models, rewards
from lab.checkpoint import load_generator
from lab.core import tensors
from lab.core.ngrams import distinct_n, repetition_rate, self_bleu, tokens
from lab.data import Example, load_examples
from lab.eval import factual
from lab.signals.truthfulness import shared_reward

DECODINGS = ("greedy", "sampled")
SUMMARY_METRICS = ("semantic", "rouge_l", "bleu", "bertscore", "meteor", "ppl", "distinct_1", "distinct_2",
                   "self_bleu", "words", "repetition", "disc")
FACTUAL_METRICS = ("truthfulness", "mc1", "mc2")  # in the summary when the rows have them


def score_responses(prompts: list[str], completions: list[str], references: list[str],
                    semantic=None, perplexity=None, discriminator=None, truthfulness=None,
                    bertscore_model: str = "auto") -> pd.DataFrame:
    """The per-row metrics of one set of answers (see the module table).

    ``semantic``: a :class:`lab.rewards.Semantic` (None: a new one on the cached embedder);
    ``perplexity``: a :class:`lab.rewards.Perplexity` on the base model (None: no ppl);
    ``discriminator``: a :class:`lab.discriminator.Discriminator` (None: ``disc`` is NaN);
    ``truthfulness``: a :class:`lab.signals.truthfulness.Truthfulness` (None: the column is NaN);
    ``bertscore_model``: :func:`lab.eval.factual.bertscore_model`'s ``auto``, ``minilm`` or a model id.
    """
    semantic = semantic or rewards.Semantic()
    n = len(completions)
    nll = perplexity.nll(prompts, completions).tolist() if perplexity else [math.nan] * n
    disc = [math.nan] * n
    if discriminator is not None:
        with torch.no_grad():
            disc = discriminator(prompts, completions).float().cpu().tolist()
    return pd.DataFrame({
        "semantic": semantic(prompts, completions, references=references),
        "rouge_l": rewards.rouge_l(prompts, completions, references=references),
        "bleu": rewards.bleu(prompts, completions, references=references),
        "nll": nll,
        "ppl": np.exp(nll),
        "self_bleu": self_bleu(completions),
        "words": [len(tokens(c)) for c in completions],
        "repetition": repetition_rate(completions),
        "disc": disc,
        "bertscore": factual.bertscore(completions, references, bertscore_model),
        "meteor": factual.meteor(completions, references) or [math.nan] * n,
        "truthfulness": truthfulness(prompts, completions) if truthfulness else [math.nan] * n,
    })


def _generate(model, tokenizer, prompts, do_sample, seed, batch_size, **options) -> list[str]:
    """Completions in batches of ``batch_size`` (None: one call); sampling seeded with ``seed``."""
    size = batch_size or len(prompts)
    device = tensors.model_device(model)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return [c for start in range(0, len(prompts), size)
                for c in generator.sample(model, tokenizer, prompts[start:start + size],
                                          do_sample=do_sample, **options).completions]


def evaluate_model(model, tokenizer, examples: list[Example], decodings=DECODINGS,
                   max_new_tokens: int = 32, temperature: float = 0.7, top_p: float = 0.9,
                   seed: int = 0, batch_size: int | None = None, discriminator=None,
                   semantic=None, max_prompt_tokens: int = 256, truthfulness="auto",
                   bertscore_model: str = "auto") -> pd.DataFrame:
    """Answer every example once per decoding and score it; one row per prompt and decoding.

    ``model``: a plain causal LM (the base model) or a ``PeftModel`` whose *active* adapter
    answers; perplexity is always measured with the adapters disabled (the base model).
    Columns: ``decoding, prompt_id, category, instruction, prompt, reference, completion``
    and the metrics of :func:`score_responses`; for factual examples (with wrong answers) also
    ``mc1``/``mc2`` from ``model``'s own log-probs. ``truthfulness``: ``"auto"`` (the reward on the
    bundled corpus for factual examples, else none), a passages JSONL path, a reward callable, or
    None. The model and discriminator are put in eval mode (no dropout) during the call.
    """
    unknown = [d for d in decodings if d not in DECODINGS]
    if unknown:
        raise ValueError(f"Unknown decoding(s) {unknown}; choose from {', '.join(DECODINGS)}")
    prompts = [e.prompt for e in examples]
    references = [e.completion for e in examples]
    perplexity = rewards.Perplexity(model, tokenizer, max_prompt_tokens=max_prompt_tokens)
    options = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                   max_prompt_tokens=max_prompt_tokens)
    was_training = model.training
    disc_training = discriminator.training if discriminator is not None else False
    model.eval()
    if discriminator is not None:
        discriminator.eval()
    has_choices = any(e.incorrect for e in examples)
    if isinstance(truthfulness, (str, Path)) and (truthfulness != "auto" or has_choices):
        truthfulness = shared_reward(None if truthfulness == "auto" else str(truthfulness))
    elif truthfulness == "auto":
        truthfulness = None
    frames = []
    try:
        choices = factual.multiple_choice(model, tokenizer, examples, max_prompt_tokens=max_prompt_tokens) \
            if has_choices else None
        for decoding in decodings:
            completions = _generate(model, tokenizer, prompts, decoding == "sampled", seed, batch_size, **options)
            metrics = score_responses(prompts, completions, references, semantic, perplexity, discriminator,
                                      truthfulness, bertscore_model)
            if choices is not None:
                metrics = pd.concat([metrics, choices[["mc1", "mc2"]]], axis=1)
            info = pd.DataFrame({"decoding": decoding, "prompt_id": range(len(examples)),
                                 "category": [e.category for e in examples],
                                 "instruction": [e.instruction for e in examples],
                                 "prompt": prompts, "reference": references, "completion": completions})
            frames.append(pd.concat([info, metrics], axis=1))
    finally:
        model.train(was_training)
        if discriminator is not None:
            discriminator.train(disc_training)
    frame = pd.concat(frames, ignore_index=True)
    frame.attrs["notes"] = _announce(factual.notes(bertscore_model))
    return frame


@functools.lru_cache(maxsize=8)
def _printed(line: str) -> None:
    print(line)


def _announce(notes: dict[str, str]) -> dict[str, str]:
    """Print which BERTScore model ran and whether METEOR did, once per process."""
    _printed(f"metrics: BERTScore with {notes['bertscore']}; METEOR {notes['meteor']}")
    return notes


def heldout(limit: int | None = None, source: str = "bundled", tokenizer=None,
            columns: dict[str, str] | None = None) -> list[Example]:
    """The examples to evaluate on: the held-out split of ``source`` (a local file: all its
    rows; see the module docstring). ``tokenizer``: format with its chat template;
    ``columns``: a local file's column names (:func:`lab.data.read_rows`)."""
    return load_examples(source, "heldout", columns=columns, limit=limit, tokenizer=tokenizer)


def describe_source(source: str, trained_on: str | None = None) -> str:
    """What :func:`heldout` of ``source`` evaluates, in words; warns when it is the local file a
    run (``trained_on``) was trained on.

    >>> describe_source("bundled")
    'the held-out split of bundled'
    >>> print(describe_source("my.jsonl", trained_on="my.jsonl"))  # doctest: +ELLIPSIS
    all rows of my.jsonl (a local file has no held-out split: these are the run's training rows, ...)
    """
    if Path(source).suffix.lower() not in (".json", ".jsonl", ".csv"):  # a named source
        return f"the held-out split of {source}"
    text = f"all rows of {source}"
    if trained_on is not None and Path(source).resolve() == Path(trained_on).resolve():
        text += (" (a local file has no held-out split: these are the run's training rows, so this "
                 "measures fit, not generalisation; pass --data OTHER_FILE)")
    return text


def generation_options(config) -> dict:
    """The decoding settings of a :class:`lab.config.HybridConfig` (``evaluate_model`` options)."""
    return dict(max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                top_p=config.top_p, max_prompt_tokens=config.max_prompt_tokens)


def run_options(config) -> dict:
    """What evaluating a run takes from its config: the decoding settings and its truthfulness corpus."""
    return {"truthfulness": config.truthfulness_corpus or "auto", **generation_options(config)}


def evaluate_trainer(trainer, examples: list[Example] | None = None, limit: int | None = None,
                     seed: int | None = None, **options) -> pd.DataFrame:
    """:func:`evaluate_model` on a trainer in memory: its generator adapter answers, its
    discriminator scores (``disc``). Generation settings come from ``trainer.config``
    (``options`` override them); ``seed`` defaults to the config's."""
    config = trainer.config
    if examples is None:
        examples = heldout(limit, config.dataset, trainer.tokenizer if config.chat_template else None,
                           config.dataset_columns)
    previous = models.activate(trainer.model, "generator")  # keeps the adapters trainable
    try:
        return evaluate_model(trainer.model, trainer.tokenizer, examples,
                              seed=config.seed if seed is None else seed, discriminator=trainer.disc,
                              **{**run_options(config), **options})
    finally:
        models.activate(trainer.model, previous)


def evaluate_run(path: str | Path, examples: list[Example] | None = None, limit: int | None = None,
                 device: str = "auto", seed: int | None = None, source: str | None = None,
                 columns: dict[str, str] | None = None, **options) -> pd.DataFrame:
    """:func:`evaluate_model` on a saved run folder (or checkpoint folder): the generator is
    loaded with :func:`lab.checkpoint.load_generator`; a saved run has no ``disc`` score here.
    Without ``examples``, :func:`heldout` of ``source`` (default: the run's ``config.dataset``)."""
    model, tokenizer, config = load_generator(Path(path), device)
    if examples is None:
        own = source is None or source == config.dataset  # the run's own data: its own column names
        examples = heldout(limit, source or config.dataset, tokenizer if config.chat_template else None,
                           columns or (config.dataset_columns if own else None))
    return evaluate_model(model, tokenizer, examples, seed=config.seed if seed is None else seed,
                          **{**run_options(config), **options})


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Means per decoding (rows) of :data:`SUMMARY_METRICS` (columns), then those of
    :data:`FACTUAL_METRICS` that the rows have, plus ``n`` prompts.

    ``ppl = exp(mean nll)`` over the non-empty answers; ``distinct_1``/``distinct_2`` are
    computed over all the decoding's answers together. ``attrs["notes"]`` says which
    BERTScore model ran and whether METEOR did.
    """
    names = [*SUMMARY_METRICS, *(m for m in FACTUAL_METRICS if m in df and df[m].notna().any())]
    rows = {}
    for decoding, group in df.groupby("decoding", sort=False):
        row = {m: float(group[m].mean()) for m in names if m in group and m != "ppl"}
        row["ppl"] = float(np.exp(group["nll"].mean())) if group["nll"].notna().any() else math.nan
        row["distinct_1"] = distinct_n(list(group["completion"]), 1)
        row["distinct_2"] = distinct_n(list(group["completion"]), 2)
        rows[decoding] = {**{m: row.get(m, math.nan) for m in names}, "n": len(group)}
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("decoding")
    table.attrs["notes"] = df.attrs.get("notes", {})
    return table

