"""Instruction data: Alpaca-style rows -> (prompt, completion) examples.

Sources (``load_examples(source=...)``):

| source      | what                                                                      |
| ----------- | ------------------------------------------------------------------------- |
| ``bundled`` | the project's own set in ``data/`` (``train.jsonl``, ``heldout.jsonl``)    |
| ``alpaca``  | ``yahma/alpaca-cleaned`` from the Hub (last 10% held out, fixed)          |
| ``auto``    | ``alpaca`` when it is cached or the Hub answers in ~2 s, else ``bundled`` |
| a path      | any local JSON / JSONL / CSV file, read with ``datasets``                 |

Other layouts map onto ``instruction`` / ``input`` / ``output`` with ``columns=``, e.g.
Dolly ``{"instruction": "instruction", "input": "context", "output": "response"}`` or
OASST-style ``{"instruction": "prompt", "output": "response"}``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

PROMPT_TEMPLATE = "### Prompt:\n{instruction}\n\n### Response:\n"
PROMPT_TEMPLATE_WITH_INPUT = "### Prompt:\n{instruction}\n{input}\n\n### Response:\n"
ALPACA_HUB_ID = "yahma/alpaca-cleaned"
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
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{where}: missing or empty field {field!r} "
                             f"(each row needs non-empty 'instruction' and 'output'; "
                             f"map other column names with columns={{...}})")
    extra = row.get("input") or ""
    if not isinstance(extra, str):
        raise ValueError(f"{where}: field 'input' must be text, got {type(extra).__name__}")
    instruction, output = row["instruction"].strip(), row["output"].strip()
    return Example(
        prompt=format_prompt(instruction, extra.strip(), tokenizer),
        completion=output, instruction=instruction, input=extra.strip(),
        category=str(row.get("category") or ""),
    )


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
    if not path.read_text(encoding="utf-8", errors="replace").strip():
        raise ValueError(f"Data file {path} is empty; it needs at least one row "
                         f"with 'instruction' and 'output'.")
    if path.suffix.lower() == ".jsonl":
        _check_json_lines(path)
    try:
        table = load_dataset(kind, data_files=str(path), split="train")
    except Exception as err:  # datasets raises many kinds; one clear message instead
        raise ValueError(f"Data file {path} could not be read as {kind.upper()}: {err}") from err
    if len(table) == 0:
        raise ValueError(f"Data file {path} holds no rows; it needs at least one "
                         f"with 'instruction' and 'output'.")
    mapping = {field: field for field in ("instruction", "input", "output", "category")}
    mapping.update(columns or {})
    missing = [f"{field} (column {col!r})" for field, col in mapping.items()
               if field in REQUIRED and col not in table.column_names]
    if missing:
        raise ValueError(f"Data file {path}: no column for {', '.join(missing)}; it has "
                         f"{table.column_names}. Map them with columns={{'output': 'response', ...}}")
    unit, offset = ("line", 2 if kind == "csv" else 1) if path.suffix.lower() != ".json" else ("record", 1)
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


def _alpaca_rows(split: str) -> list[tuple[str, dict]]:
    from datasets import load_dataset

    table = load_dataset(ALPACA_HUB_ID, split="train")
    cut = int(len(table) * 0.9)  # fixed split: the last 10% is held out
    part = table.select(range(cut)) if split == "train" else table.select(range(cut, len(table)))
    return [(f"{ALPACA_HUB_ID}, row {i}", dict(r)) for i, r in enumerate(part)]


def resolve_source(source: str = "auto") -> str:
    """``auto`` -> ``alpaca`` when cached or the Hub answers quickly, else ``bundled``."""
    if source != "auto":
        return source
    from lab.models import hub_reachable, in_hf_cache

    try:
        from huggingface_hub import try_to_load_from_cache

        cached = isinstance(try_to_load_from_cache(ALPACA_HUB_ID, "README.md", repo_type="dataset"), str)
    except Exception:  # an unusual cache layout only means "not cached"
        cached = in_hf_cache(ALPACA_HUB_ID)
    return "alpaca" if cached or hub_reachable() else "bundled"


def load_examples(source: str = "bundled", split: str = "train", columns: dict[str, str] | None = None,
                  tokenizer=None, limit: int | None = None) -> list[Example]:
    """Load ``split`` of ``source`` as a list of :class:`Example`.

    ``tokenizer``: format prompts with its chat template instead of the kit's template.
    ``limit``: keep the first ``limit`` examples.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    source = resolve_source(source)
    if source == "bundled":
        rows = read_rows(_bundled_path(split))
    elif source == "alpaca":
        rows = _alpaca_rows(split)
    else:
        rows = read_rows(source, columns)
    examples = [to_example(row, tokenizer, where) for where, row in rows]
    if not examples:
        raise ValueError(f"Source {source!r} ({split}) holds no examples.")
    return examples[:limit] if limit else examples
