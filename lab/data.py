"""Instruction data: Alpaca-style rows -> (prompt, completion) examples.

Sources (``load_examples(source=...)``):

| source      | what                                                                      |
| ----------- | ------------------------------------------------------------------------- |
| ``bundled`` | the project's own set in ``data/`` (``train.jsonl``, ``heldout.jsonl``)    |
| ``alpaca``  | ``yahma/alpaca-cleaned`` from the Hub (last 10% held out, fixed)          |
| ``auto``    | ``alpaca`` when it is cached or the Hub answers in ~2 s, else ``bundled`` |
| ``factual`` | the bundled factual set in ``data/factual/`` (TruthfulQA layout: wrong answers too) |
| ``dolly``, ``oasst``, ``truthfulqa``, ``arc`` | Hub datasets in their own layouts (:mod:`lab.readers.sources`) |
| a path      | any local JSON / JSONL / CSV file, read with ``datasets``                 |
| a mix       | ``"bundled:0.7,factual:0.3"``: sources with weights (:func:`lab.readers.sources.parse_spec`) |

A local file in the Dolly, OASST, TruthfulQA or ARC layout is recognised by its columns
(:func:`lab.readers.sources.detect_layout`). Other layouts map onto ``instruction`` / ``input`` /
``output`` (and ``category``, ``correct``, ``incorrect``) with ``columns=`` (the config field
``dataset_columns``), e.g. ``{"instruction": "prompt", "output": "response"}``.
Factual rows carry their true and wrong answers (``Example.correct`` / ``Example.incorrect``)
for TruthfulQA-style multiple choice. Every example carries the fluent but wrong answers its
question is known to have (``Example.wrong``: its own wrong answers, else the bundled factual
set's, :func:`wrong_answers`): the critic's ``fluent_wrong`` junk
(:func:`lab.discriminator.junk_for`) takes them from the examples of its batch.
"""

from __future__ import annotations

import functools
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from lab.readers import sources

PROMPT_TEMPLATE = "### Prompt:\n{instruction}\n\n### Response:\n"
PROMPT_TEMPLATE_WITH_INPUT = "### Prompt:\n{instruction}\n{input}\n\n### Response:\n"
SPLITS = ("train", "heldout")
REQUIRED = ("instruction", "output")


@dataclass(frozen=True)
class Example:
    """One training example: the prompt text and the reference completion."""

    prompt: str  # formatted prompt, ends where the response starts
    completion: str  # reference answer
    instruction: str
    input: str = ""
    category: str = ""
    correct: tuple[str, ...] = ()  # factual rows: the true answers, the reference first
    incorrect: tuple[str, ...] = ()  # factual rows: fluent but wrong answers (multiple-choice choices)
    wrong: tuple[str, ...] = ()  # fluent but wrong answers to this question, any source: fluent_wrong junk


def data_dir() -> Path:
    """The bundled data folder: ``$LAB_DATA_DIR``, else ``data/`` beside the package."""
    return Path(os.environ.get("LAB_DATA_DIR", Path(__file__).resolve().parent.parent / "data"))


def format_prompt(instruction: str, input: str = "", tokenizer=None) -> str:
    """Build the prompt for one row.

    Without a tokenizer the kit's template is used; with one, its chat template.

    >>> format_prompt("Add 2 and 3.")
    '### Prompt:\\nAdd 2 and 3.\\n\\n### Response:\\n'
    >>> format_prompt("Translate to French.", "cat")
    '### Prompt:\\nTranslate to French.\\ncat\\n\\n### Response:\\n'
    """
    if tokenizer is not None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("This tokenizer has no chat template; use chat_template=False "
                             "to format prompts with the kit's '### Prompt:' template.")
        content = f"{instruction}\n{input}" if input else instruction
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True)
    if input:
        return PROMPT_TEMPLATE_WITH_INPUT.format(instruction=instruction, input=input)
    return PROMPT_TEMPLATE.format(instruction=instruction)


def to_example(row: dict, tokenizer=None, where: str = "row") -> Example:
    """Validate one Alpaca-layout row and format it; errors name ``where`` and the field."""
    for field in REQUIRED:
        value = row.get(field)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{where}: field {field!r} must be text, got {type(value).__name__} {value!r:.60}; "
                             f"quote it in the file (a CSV or JSON column of numbers or lists is not text)")
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{where}: missing or empty field {field!r} "
                             f"(each row needs non-empty 'instruction' and 'output'; "
                             f"map other column names with columns={{...}})")
    extra = row.get("input") or ""
    if not isinstance(extra, str):
        raise ValueError(f"{where}: field 'input' must be text, got {type(extra).__name__}")
    instruction, output = row["instruction"].strip(), row["output"].strip()
    incorrect = _texts(row.get("incorrect"))
    return Example(
        prompt=format_prompt(instruction, extra.strip(), tokenizer),
        completion=output, instruction=instruction, input=extra.strip(),
        category=str(row.get("category") or ""),
        correct=_texts(row.get("correct")), incorrect=incorrect, wrong=incorrect or wrong_answers(output),
    )


def _texts(value) -> tuple[str, ...]:
    """A list of answers (or one ';'-separated text) as a tuple of stripped texts."""
    return tuple(sources._answers(value))


def _check_json_lines(path: Path) -> None:
    """Name the line of a JSONL file that is not valid JSON (datasets' error does not)."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}, line {number}: not valid JSON ({err.msg}); "
                                     f"each line must be one JSON object") from err


def read_rows(path: str | Path, columns: dict[str, str] | None = None) -> list[tuple[str, dict]]:
    """Read a local JSON/JSONL/CSV file with ``datasets``: ``[(where, row), ...]``.

    ``columns`` maps the kit's fields to the file's: ``{"output": "response"}``.
    ``where`` names the file and the line (JSONL, CSV) or record (JSON) of each row.
    """
    from datasets import load_dataset

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Data file {path} does not exist; pass a JSON, JSONL or CSV file, "
                         f"or one of the sources 'bundled', 'alpaca', 'auto'.")
    kind = {".json": "json", ".jsonl": "json", ".csv": "csv"}.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"Data file {path}: unsupported type {path.suffix!r}; use .json, .jsonl or .csv")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[:err.start].count(b"\n") + 1
        raise ValueError(f"Data file {path}, line {line}: not UTF-8 text (byte {err.object[err.start]:#04x}); "
                         f"re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8 {path.name} > fixed{path.suffix}"
                         ) from None
    if not text.strip():
        raise ValueError(f"Data file {path} is empty; it needs at least one row "
                         f"with 'instruction' and 'output'.")
    if path.suffix.lower() == ".jsonl":
        _check_json_lines(path)
    try:
        table = load_dataset(kind, data_files=str(path), split="train")
    except Exception as err:  # datasets raises many kinds; one clear message instead
        if "corresponds to no data" in str(err):  # e.g. a CSV with its header line only
            table = []
        else:
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ValueError(f"Data file {path} could not be read as {kind.upper()}: {first}") from err
    if len(table) == 0:
        raise ValueError(f"Data file {path} holds no rows; it needs at least one "
                         f"with 'instruction' and 'output'.")
    unit, offset = ("line", 2 if kind == "csv" else 1) if path.suffix.lower() != ".json" else ("record", 1)
    layout = "alpaca" if columns else sources.detect_layout(table.column_names)
    if layout != "alpaca":  # a known layout (Dolly, OASST, TruthfulQA, ARC), mapped by its own code
        return sources.LAYOUTS[layout]([dict(r) for r in table], lambda i: f"{path}, {unit} {i + offset}")
    mapping = {field: field for field in ("instruction", "input", "output", "category", "correct", "incorrect")}
    mapping.update(parse_columns(columns) or {})
    missing = [f"{field} (column {col!r})" for field, col in mapping.items()
               if field in REQUIRED and col not in table.column_names]
    if missing:
        raise ValueError(f"Data file {path}: no column for {', '.join(missing)}; it has "
                         f"{table.column_names}. Map them with columns={{'output': 'response', ...}}")
    rows = []
    for index, record in enumerate(table):
        row = {field: record.get(col) for field, col in mapping.items()}
        rows.append((f"{path}, {unit} {index + offset}", row))
    return rows


def _bundled_path(split: str) -> Path:
    path = data_dir() / f"{split}.jsonl"
    if not path.is_file():
        raise ValueError(f"Bundled data file {path} is missing; run from a clone of the "
                         f"repository or set LAB_DATA_DIR to the folder holding {split}.jsonl")
    return path


def parse_columns(columns) -> dict[str, str] | None:
    """``columns`` / ``dataset_columns``: a mapping of the kit's field to the file's column, or
    its JSON/YAML text; ``None`` or empty: no mapping.

    >>> parse_columns('{"output": "response"}')
    {'output': 'response'}
    """
    if columns is None or columns == "" or columns == {}:
        return None
    if isinstance(columns, str):
        import yaml

        try:
            columns = yaml.safe_load(columns)  # JSON is YAML too
        except yaml.YAMLError:
            columns = None
    fields = ("instruction", "input", "output", "category", "correct", "incorrect")
    if not isinstance(columns, dict) or not all(isinstance(v, str) for v in columns.values()) \
            or set(columns) - set(fields):
        raise ValueError(f"dataset_columns must map the kit's fields ({', '.join(fields)}) to the file's "
                         f"column names, e.g. '{{\"instruction\": \"prompt\", \"output\": \"response\"}}'; "
                         f"got {columns!r}")
    return dict(columns)


def check_source(source: str, columns=None) -> None:
    """Fail at once, before anything loads, on a ``dataset`` (``source``) or ``dataset_columns``
    that cannot be read: a bad mix, a name that is neither a source nor a file, columns that do
    not map the kit's fields. :func:`load_examples` starts with it; the CLI calls it on the config.

    >>> check_source("bundled:0.7,factual:0.3")
    >>> check_source("bundeld")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Data file bundeld does not exist, and 'bundeld' is no source (bundled, auto, factual, ...)
    """
    parse_columns(columns)
    for name, _ in sources.parse_spec(source):
        if name not in sources.NAMED and not Path(name).is_file():
            raise ValueError(f"Data file {name} does not exist, and {name!r} is no source ({', '.join(sources.NAMED)})")


def factual_rows(split: str = "heldout") -> list[dict]:
    """The bundled factual set's rows as stored (``question``, ``best_answer``,
    ``correct_answers``, ``incorrect_answers``, ``passage_ids`` ...; data/README.md)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    path = data_dir() / "factual" / f"{split}.jsonl"
    if not path.is_file():
        raise ValueError(f"Bundled factual file {path} is missing; run from a clone of the repository "
                         f"or set LAB_DATA_DIR to the folder holding factual/{split}.jsonl")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def wrong_answers(reference: str) -> tuple[str, ...]:
    """The fluent but wrong answers that the bundled factual set knows for the question that
    ``reference`` answers (some bundled instructions ask its questions); ``()`` if none.
    :func:`to_example` fills ``Example.wrong`` with them where a row has no wrong answers of its own.

    >>> wrong_answers("The capital of Australia is Canberra.")
    ('The capital of Australia is Sydney.', 'Melbourne is the capital of Australia.')
    """
    return _bundled_wrong().get(reference.strip(), ())


@functools.lru_cache(maxsize=1)
def _bundled_wrong() -> dict[str, tuple[str, ...]]:
    """Every correct answer of the bundled factual set -> its question's wrong answers (read once;
    none without ``data/factual/``)."""
    table = {}
    for split in SPLITS:
        if (data_dir() / "factual" / f"{split}.jsonl").is_file():
            for row in factual_rows(split):
                for answer in (row["best_answer"], *row["correct_answers"]):
                    table[answer.strip()] = tuple(row["incorrect_answers"])
    return table


def _source_rows(source: str, split: str, columns) -> list[tuple[str, dict]]:
    source = resolve_source(source)
    if source == "bundled":
        return read_rows(_bundled_path(split))
    if source == "factual":  # the last correct answer is a bare key term ("Canberra"): not a choice, since
        # a one-word choice takes most of the probability mass (MC2) whatever the model knows
        rows = [{**r, "correct_answers": r["correct_answers"][:-1]} for r in factual_rows(split)]
        return sources.truthfulqa(rows, lambda i: f"data/factual/{split}.jsonl, line {i + 1}")
    if source in sources.HUB:
        return sources.hub_rows(source, split)
    return read_rows(source, columns)


def resolve_source(source: str = "auto") -> str:
    """``auto`` -> ``alpaca`` when cached or the Hub answers quickly, else ``bundled``."""
    if source != "auto":
        return source
    return "alpaca" if sources.hub_available("alpaca") else "bundled"


def load_examples(source: str = "bundled", split: str = "train", columns: dict[str, str] | None = None,
                  tokenizer=None, limit: int | None = None) -> list[Example]:
    """Load ``split`` of ``source`` (a source, a file, or a weighted mix) as :class:`Example` rows.

    ``tokenizer``: format prompts with its chat template instead of the kit's template.
    ``limit``: keep the first ``limit`` examples.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    check_source(source, columns)
    parts, weights = [], []
    for name, weight in sources.parse_spec(source):
        examples = [to_example(row, tokenizer, where) for where, row in _source_rows(name, split, columns)]
        if not examples:
            raise ValueError(f"Source {name!r} ({split}) holds no examples.")
        parts.append(examples)
        weights.append(weight)
    examples = sources.interleave(parts, weights, repeat=split == "train")
    return examples[:limit] if limit else examples


def epoch_batch(examples: list, step: int, size: int, seed: int) -> list:
    """The ``size`` examples of ``step`` (1-based): a seeded shuffle per epoch, so that any step's
    batch is known from the step number alone (exact resume).

    >>> epoch_batch(list("abcd"), 3, 2, seed=0) == epoch_batch(list("abcd"), 3, 2, seed=0)
    True
    """
    picked, n = [], len(examples)
    for position in range((step - 1) * size, step * size):
        epoch, index = divmod(position, n)
        order = list(range(n))
        random.Random(seed * 100_003 + epoch).shuffle(order)
        picked.append(examples[order[index]])
    return picked
