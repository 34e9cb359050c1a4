"""Held-out evaluation: greedy and sampled answers, scored with established metric libraries.

:func:`evaluate_model` answers each held-out prompt once per decoding (``greedy``, and
``sampled`` with a fixed seed, the config's temperature and top-p), in one batched
``generate`` per decoding, and returns one row per prompt and decoding:

| column       | meaning                                                                    |
| ------------ | -------------------------------------------------------------------------- |
| ``semantic`` | MiniLM cosine to the reference (:class:`lab.rewards.Semantic`), 1 = same meaning |
| ``rouge_l``  | ROUGE-L F1 to the reference (rouge-score), in [0, 1]                       |
| ``bleu``     | sentence BLEU to the reference (sacrebleu) / 100, in [0, 1]                |
| ``nll``, ``ppl`` | mean NLL per answer token under the *base* model (adapters off), ``ppl = exp(nll)`` |
| ``self_bleu`` | BLEU of this answer against the decoding's other answers / 100: near 1 = the model says the same thing to every prompt (mode collapse) |
| ``words``    | answer length in whitespace words (tokenizer-independent, so GPT-2 and SmolLM2 compare) |
| ``repetition`` | repeated word 3-grams, a rate in [0, 1] (``-lab.rewards.repetition``)    |
| ``disc``     | the discriminator's score of (prompt, answer); NaN without one             |

:func:`summarize` gives the means per decoding, with ``ppl = exp(mean nll)`` (the
geometric mean of the answers' perplexities, robust to one wild answer) and distinct-1/2
(:func:`lab.textstats.distinct_n`) over the decoding's answers: distinctness is a property
of a *set* of answers, so it has no per-prompt value. Empty answers get NaN ``nll``/``ppl``
(they have no tokens to score) and 0 for the overlap metrics.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lab import generator, rewards
from lab.data import Example, load_examples
from lab.textstats import distinct_n

DECODINGS = ("greedy", "sampled")
SUMMARY_METRICS = ("semantic", "rouge_l", "bleu", "ppl", "distinct_1", "distinct_2", "self_bleu",
                   "words", "repetition", "disc")


def self_bleu(texts: list[str]) -> list[float]:
    """For each text, sentence BLEU (sacrebleu, effective order) against all the others / 100.

    The mean over texts is the self-BLEU of the set (Zhu et al., 2018, Texygen): ~1 when
    every text is the same, low when they differ. Empty texts score 0.

    >>> self_bleu(["the cat sat on the mat"] * 3)
    [1.0, 1.0, 1.0]
    """
    import sacrebleu

    scores = []
    for i, text in enumerate(texts):
        others = [t for j, t in enumerate(texts) if j != i]
        if not text.strip() or not others:
            scores.append(0.0)
            continue
        score = sacrebleu.sentence_bleu(text, others, use_effective_order=True).score
        scores.append(min(1.0, score / 100))
    return scores


def repetition_rate(texts: list[str], n: int = 3) -> list[float]:
    """Share of repeated word n-grams, in [0, 1]: ``-lab.rewards.repetition``.

    >>> repetition_rate(["the the the the", "a new day"])
    [1.0, 0.0]
    """
    return [-r + 0.0 for r in rewards.repetition(None, texts, n=n)]  # + 0.0: no -0.0


def score_responses(prompts: list[str], completions: list[str], references: list[str],
                    semantic=None, perplexity=None, discriminator=None) -> pd.DataFrame:
    """The per-row metrics of one set of answers (see the module table).

    ``semantic``: a :class:`lab.rewards.Semantic` (None: a new one on the cached embedder);
    ``perplexity``: a :class:`lab.rewards.Perplexity` on the base model (None: no ppl);
    ``discriminator``: a :class:`lab.discriminator.Discriminator` (None: ``disc`` is NaN).
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
        "words": [len(c.split()) for c in completions],
        "repetition": repetition_rate(completions),
        "disc": disc,
    })


def _generate(model, tokenizer, prompts, do_sample, seed, batch_size, **options) -> list[str]:
    """Completions in batches of ``batch_size`` (None: one call); sampling seeded with ``seed``."""
    size = batch_size or len(prompts)
    device = generator.model_device(model)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        return [c for start in range(0, len(prompts), size)
                for c in generator.sample(model, tokenizer, prompts[start:start + size],
                                          do_sample=do_sample, **options).completions]


def evaluate_model(model, tokenizer, examples: list[Example], decodings=DECODINGS,
                   max_new_tokens: int = 32, temperature: float = 0.7, top_p: float = 0.9,
                   seed: int = 0, batch_size: int | None = None, discriminator=None,
                   semantic=None, max_prompt_tokens: int = 256) -> pd.DataFrame:
    """Answer every example once per decoding and score it; one row per prompt and decoding.

    ``model``: a plain causal LM (the base model) or a ``PeftModel`` whose *active* adapter
    answers; perplexity is always measured with the adapters disabled (the base model).
    Columns: ``decoding, prompt_id, category, instruction, prompt, reference, completion``
    and the metrics of :func:`score_responses`. The model and discriminator are put in
    eval mode (no dropout) during the call.
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
    frames = []
    try:
        for decoding in decodings:
            completions = _generate(model, tokenizer, prompts, decoding == "sampled", seed, batch_size, **options)
            metrics = score_responses(prompts, completions, references, semantic, perplexity, discriminator)
            info = pd.DataFrame({"decoding": decoding, "prompt_id": range(len(examples)),
                                 "category": [e.category for e in examples],
                                 "instruction": [e.instruction for e in examples],
                                 "prompt": prompts, "reference": references, "completion": completions})
            frames.append(pd.concat([info, metrics], axis=1))
    finally:
        model.train(was_training)
        if discriminator is not None:
            discriminator.train(disc_training)
    return pd.concat(frames, ignore_index=True)


def heldout(limit: int | None = None, source: str = "bundled", tokenizer=None) -> list[Example]:
    """The held-out examples (``tokenizer``: format with its chat template)."""
    return load_examples(source, "heldout", limit=limit, tokenizer=tokenizer)


def _generation_options(config) -> dict:
    return dict(max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                top_p=config.top_p, max_prompt_tokens=config.max_prompt_tokens)


def evaluate_trainer(trainer, examples: list[Example] | None = None, limit: int | None = None,
                     seed: int | None = None, **options) -> pd.DataFrame:
    """:func:`evaluate_model` on a trainer in memory: its generator adapter answers, its
    discriminator scores (``disc``). Generation settings come from ``trainer.config``
    (``options`` override them); ``seed`` defaults to the config's."""
    config = trainer.config
    if examples is None:
        examples = heldout(limit, tokenizer=trainer.tokenizer if config.chat_template else None)
    previous = generator.activate(trainer.model, "generator")  # keeps the adapters trainable
    try:
        return evaluate_model(trainer.model, trainer.tokenizer, examples,
                              seed=config.seed if seed is None else seed, discriminator=trainer.disc,
                              **{**_generation_options(config), **options})
    finally:
        generator.activate(trainer.model, previous)


def evaluate_run(path: str | Path, examples: list[Example] | None = None, limit: int | None = None,
                 device: str = "auto", seed: int | None = None, **options) -> pd.DataFrame:
    """:func:`evaluate_model` on a saved run folder (or checkpoint folder): the generator is
    loaded with :func:`lab.report.load_generator`; a saved run has no ``disc`` score here."""
    from lab.report import load_generator

    model, tokenizer, config = load_generator(Path(path), device)
    if examples is None:
        examples = heldout(limit, tokenizer=tokenizer if config.chat_template else None)
    return evaluate_model(model, tokenizer, examples, seed=config.seed if seed is None else seed,
                          **{**_generation_options(config), **options})


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Means per decoding (rows) of :data:`SUMMARY_METRICS` (columns), plus ``n`` prompts.

    ``ppl = exp(mean nll)`` over the non-empty answers; ``distinct_1``/``distinct_2`` are
    computed over all the decoding's answers together.
    """
    rows = {}
    for decoding, group in df.groupby("decoding", sort=False):
        row = {m: float(group[m].mean()) for m in SUMMARY_METRICS if m in group and m != "ppl"}
        row["ppl"] = float(np.exp(group["nll"].mean())) if group["nll"].notna().any() else math.nan
        row["distinct_1"] = distinct_n(list(group["completion"]), 1)
        row["distinct_2"] = distinct_n(list(group["completion"]), 2)
        rows[decoding] = {**{m: row.get(m, math.nan) for m in SUMMARY_METRICS}, "n": len(group)}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("decoding")


def cmd_eval(args) -> int:
    """``python -m lab eval``: per-prompt rows to a CSV, the summary to stdout."""
    from lab import models
    from lab.config import HybridConfig

    tokens = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {}
    if args.run:
        frame = evaluate_run(args.run, limit=args.limit, seed=args.seed, **tokens)
    else:
        model, tokenizer = models.load(args.model, verbose=True)
        options = {**_generation_options(HybridConfig()), **tokens}
        frame = evaluate_model(model, tokenizer, heldout(args.limit), seed=args.seed or 0, **options)
    out = args.out or (Path(args.run) / "eval.csv" if args.run else None)
    if out:
        frame.to_csv(out, index=False)
        print(f"per-prompt rows written to {out}")
    print(summarize(frame).round(4).to_string())
    return 0
