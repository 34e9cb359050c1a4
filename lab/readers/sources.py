"""Named data sources and their layouts: Hub datasets, the bundled factual set, weighted mixes.

Every layout maps onto the kit's row fields ``instruction``, ``input``, ``output``,
``category`` and, for factual layouts, ``correct`` / ``incorrect`` (the true and the fluent
but wrong answers that TruthfulQA-style multiple choice and the ``fluent_wrong`` junk use):

| source       | Hub dataset (fixed held-out split)                        | layout (:data:`LAYOUTS`)                              |
| ------------ | --------------------------------------------------------- | ----------------------------------------------------- |
| ``alpaca``   | ``yahma/alpaca-cleaned`` (last 10%)                       | instruction / input / output                          |
| ``dolly``    | ``databricks/databricks-dolly-15k`` (last 10%)            | instruction / context / response / category          |
| ``oasst``    | ``OpenAssistant/oasst1`` (its ``validation`` split)       | message trees: message_id / parent_id / role / rank / text; the top-ranked assistant reply to each root prompt (English trees where rows carry ``lang``) |
| ``truthfulqa`` | ``truthfulqa/truthful_qa``, ``generation`` (last 10%)  | question / best_answer / correct_answers / incorrect_answers |
| ``arc``      | ``allenai/ai2_arc``, ``ARC-Easy`` (its ``test`` split)    | question / choices {text, label} / answerKey -> the answer text; the choices are the prompt's input |
| ``factual``  | none: the bundled ``data/factual/`` set                   | truthfulqa                                            |

A local JSON/JSONL/CSV file in any of these layouts is recognised by its columns
(:func:`detect_layout`) and read with the same mapping code. A Hub source is loaded only when
the dataset is in the local cache or the Hub answers within ~2 s (:func:`lab.runtime.hub.hub_reachable`,
probed once per process); otherwise a ``ValueError`` names the source at once.

**Mixes** (:func:`parse_spec`): ``dataset`` may name several sources with weights,
``"bundled:0.7,factual:0.3"``: comma-separated ``SOURCE[:WEIGHT]`` items (a missing weight is
1; weights are positive and normalised). Train rows interleave the sources in proportion to
their weights, repeating a smaller source rather than dropping rows of a larger one
(:func:`interleave`); a held-out split interleaves each source's held-out rows once.
"""

from __future__ import annotations

import math
from pathlib import Path

from lab.runtime import hub

HUB = {  # source -> (Hub id, config, {split: Hub split, or None: the last 10% of "train"})
    "alpaca": ("yahma/alpaca-cleaned", None, None),
    "dolly": ("databricks/databricks-dolly-15k", None, None),
    "oasst": ("OpenAssistant/oasst1", None, {"train": "train", "heldout": "validation"}),
    "truthfulqa": ("truthfulqa/truthful_qa", "generation", None),
    "arc": ("allenai/ai2_arc", "ARC-Easy", {"train": "train", "heldout": "test"}),
}
HUB_SPLIT = {"truthfulqa": "validation"}  # the one Hub split a source cuts into train / held-out
SIGNATURES = {  # layout -> the columns that identify it
    "oasst": ("message_id", "parent_id", "role", "text"),
    "truthfulqa": ("question", "best_answer", "incorrect_answers"),
    "arc": ("question", "choices", "answerKey"),
    "dolly": ("instruction", "context", "response"),
}
NAMED = ("bundled", "auto", "factual", *HUB)


def _text(value) -> str:
    return value.strip() if isinstance(value, str) else ""


def _answers(value) -> list[str]:
    """A list of answers: a JSON list, or one string with answers separated by ';' (TruthfulQA's CSV)."""
    if isinstance(value, str):
        value = value.split(";")
    return [a.strip() for a in (value or []) if isinstance(a, str) and a.strip()]


def dolly(records, where) -> list[tuple[str, dict]]:
    """Dolly: ``instruction``, ``context`` (-> input), ``response`` (-> output), ``category``."""
    return [(where(i), {"instruction": r.get("instruction"), "input": r.get("context") or "",
                        "output": r.get("response"), "category": r.get("category") or ""})
            for i, r in enumerate(records)]


def oasst(records, where, lang: str | None = "en") -> list[tuple[str, dict]]:
    """OASST message trees: each root prompt (no ``parent_id``) with its best assistant reply
    (lowest ``rank``; unranked replies after ranked ones, then file order). Trees whose root
    has another ``lang`` are skipped when rows carry ``lang`` (``lang=None`` keeps all)."""
    records = [r for r in records if not r.get("deleted")]  # moderators' deletions are not data
    best: dict[str, tuple] = {}
    for i, r in enumerate(records):
        parent = r.get("parent_id")
        if r.get("role") == "assistant" and parent:
            rank = r.get("rank")
            key = (rank is None or rank != rank, rank if isinstance(rank, (int, float)) and rank == rank else 0, i)
            if parent not in best or key < best[parent][0]:
                best[parent] = (key, r)
    rows = []
    for i, r in enumerate(records):
        if r.get("parent_id") or r.get("role") not in ("prompter", "user"):
            continue
        if lang and r.get("lang") and r["lang"] != lang:
            continue
        reply = best.get(r.get("message_id"))
        if reply is not None:
            rows.append((where(i), {"instruction": r.get("text"), "output": reply[1].get("text"),
                                    "category": r.get("lang") or ""}))
    return rows


def truthfulqa(records, where) -> list[tuple[str, dict]]:
    """TruthfulQA generation: ``question``, ``best_answer`` (-> output), ``correct_answers``,
    ``incorrect_answers`` (lists, or ';'-separated text); ``correct`` starts with the best answer."""
    rows = []
    for i, r in enumerate(records):
        best = _text(r.get("best_answer"))
        correct = list(dict.fromkeys([best, *_answers(r.get("correct_answers"))])) if best else []
        rows.append((where(i), {"instruction": r.get("question"), "output": r.get("best_answer"),
                                "category": r.get("category") or "", "correct": correct,
                                "incorrect": _answers(r.get("incorrect_answers"))}))
    return rows


def arc(records, where) -> list[tuple[str, dict]]:
    """ARC: ``question``, ``choices`` ``{"text": [...], "label": [...]}``, ``answerKey`` ->
    the answer's text; the lettered choices become the prompt's input, the other choices the
    wrong answers."""
    rows = []
    for i, r in enumerate(records):
        choices = r.get("choices") or {}
        texts, labels = list(choices.get("text") or []), [str(x) for x in choices.get("label") or []]
        key = str(r.get("answerKey") or "")
        if key not in labels or len(texts) != len(labels):
            raise ValueError(f"{where(i)}: answerKey {key!r} is not one of the choice labels {labels}")
        answer = texts[labels.index(key)]
        rows.append((where(i), {
            "instruction": r.get("question"), "output": answer, "category": "arc",
            "input": "Choices: " + "; ".join(f"{label}) {text}" for label, text in zip(labels, texts)),
            "correct": [answer], "incorrect": [t for t in texts if t != answer]}))
    return rows


LAYOUTS = {"dolly": dolly, "oasst": oasst, "truthfulqa": truthfulqa, "arc": arc}


def detect_layout(columns) -> str:
    """The layout whose identifying columns a table has, else ``alpaca``.

    >>> detect_layout(["question", "best_answer", "correct_answers", "incorrect_answers"])
    'truthfulqa'
    >>> detect_layout(["instruction", "input", "output"])
    'alpaca'
    """
    for layout, needed in SIGNATURES.items():
        if set(needed) <= set(columns):
            return layout
    return "alpaca"


def _cached(hub_id: str) -> bool:
    """True when the dataset ``hub_id`` is in the local Hugging Face cache."""
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(hub_id, "README.md", repo_type="dataset"), str):
            return True
    except Exception:  # an unusual cache layout only means "not cached"
        pass
    return hub.in_hf_cache(hub_id)


def hub_available(source: str) -> bool:
    """True when ``source``'s Hub dataset is cached or the Hub answers quickly (probed once)."""
    return _cached(HUB[source][0]) or hub.hub_reachable()


def hub_rows(source: str, split: str) -> list[tuple[str, dict]]:
    """``split`` (``train`` / ``heldout``) of a Hub ``source`` in the kit's row fields.
    Fails at once, naming the source, when the Hub is unreachable and nothing is cached."""
    hub_id, config, splits = HUB[source]
    if not hub_available(source):
        raise ValueError(
            f"Data source {source!r} needs the Hugging Face Hub dataset {hub_id}, which is not in the "
            f"local cache, and the Hub did not answer within 2 s. Use 'bundled' or 'factual', or a "
            f"local JSON/JSONL/CSV file in the {source} layout (see lab.readers.sources).")
    from datasets import load_dataset

    if splits:
        table = load_dataset(hub_id, config, split=splits[split])
    else:  # one Hub split, cut at a fixed point: the last 10% is held out
        table = load_dataset(hub_id, config, split=HUB_SPLIT.get(source, "train"))
        cut = int(len(table) * 0.9)
        table = table.select(range(cut) if split == "train" else range(cut, len(table)))
    where = (lambda i: f"{hub_id}, row {i}")
    records = [dict(r) for r in table]
    return [(where(i), r) for i, r in enumerate(records)] if source == "alpaca" else LAYOUTS[source](records, where)


def parse_spec(spec: str) -> list[tuple[str, float]]:
    """``dataset`` as ``[(source, weight), ...]``, weights normalised to sum to 1.

    >>> parse_spec("bundled")
    [('bundled', 1.0)]
    >>> parse_spec("bundled:0.7, factual:0.3")
    [('bundled', 0.7), ('factual', 0.3)]
    >>> parse_spec("bundled:0")
    Traceback (most recent call last):
    ...
    ValueError: dataset='bundled:0': the weight of 'bundled' must be a positive number, got '0'
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("dataset must name a source ('bundled', 'factual', 'alpaca', ...), a local "
                         "file, or a weighted mix such as 'bundled:0.7,factual:0.3'")
    if Path(spec).is_file() or "," not in spec and ":" not in spec:
        return [(spec.strip(), 1.0)]
    items = []
    for item in spec.split(","):
        name, colon, weight = item.strip().rpartition(":")
        if not colon or (not _is_number(weight) and name.strip() not in NAMED):
            name, weight = item, "1"  # no weight (a colon inside a path such as C:\\data.jsonl)
        name = name.strip()
        if not name:
            raise ValueError(f"dataset={spec!r}: an item has no source name; write 'SOURCE:WEIGHT, ...'")
        value = float(weight) if _is_number(weight) else math.nan
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"dataset={spec!r}: the weight of {name!r} must be a positive number, got {weight.strip()!r}")
        items.append((name, value))
    names = [n for n, _ in items]
    if len(set(names)) != len(names):
        raise ValueError(f"dataset={spec!r} names a source twice; give each source once with its weight")
    total = sum(w for _, w in items)
    return [(n, round(w / total, 12)) for n, w in items]


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def interleave(parts: list[list], weights: list[float], repeat: bool) -> list:
    """Merge ``parts`` so that every prefix holds them in proportion to ``weights``.

    ``repeat=True`` (train): a part is cycled until the mix reaches ``max_i len_i / w_i`` rows,
    so no row of any part is dropped; ``repeat=False`` (held-out): each row once.

    >>> interleave([["a1", "a2", "a3", "a4"], ["b1"]], [0.5, 0.5], repeat=True)
    ['a1', 'b1', 'a2', 'b1', 'a3', 'b1', 'a4', 'b1']
    >>> interleave([["a1", "a2", "a3"], ["b1"]], [0.5, 0.5], repeat=False)
    ['a1', 'b1', 'a2', 'a3']
    """
    if len(parts) == 1:
        return list(parts[0])
    total = max(math.ceil(len(p) / w - 1e-9) for p, w in zip(parts, weights)) if repeat else 0
    counts = [max(1, round(w * total)) if repeat else len(p) for p, w in zip(parts, weights)]
    taken, out = [0] * len(parts), []
    while True:
        due = [i for i in range(len(parts)) if taken[i] < counts[i] and parts[i]]
        if not due:
            return out
        i = min(due, key=lambda j: ((taken[j] + 1) / weights[j], j))
        out.append(parts[i][taken[i] % len(parts[i])])
        taken[i] += 1
