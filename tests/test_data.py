"""Prompt formatting, the bundled set, local files with column mappings, and data errors."""

import json

import pytest

from lab import data


def test_template_without_and_with_input():
    assert data.format_prompt("Name a colour.") == "### Prompt:\nName a colour.\n\n### Response:\n"
    assert data.format_prompt("Translate.", "cat") == "### Prompt:\nTranslate.\ncat\n\n### Response:\n"


def test_chat_template(tiny):
    _, tokenizer = tiny  # SmolLM2's tokenizer carries a chat template
    prompt = data.format_prompt("Name a colour.", tokenizer=tokenizer)
    assert "Name a colour." in prompt and prompt != data.format_prompt("Name a colour.")


def test_bundled_splits_sizes_and_disjoint():
    train = data.load_examples("bundled", "train")
    heldout = data.load_examples("bundled", "heldout")
    assert len(train) >= 300 and len(heldout) >= 60
    assert not {e.prompt for e in train} & {e.prompt for e in heldout}
    assert len({e.category for e in train}) >= 6
    first = train[0]
    assert first.prompt.startswith("### Prompt:\n") and first.prompt.endswith("### Response:\n")
    assert first.completion and first.completion not in first.prompt


def test_offline_auto_source_is_bundled(no_network):
    assert data.resolve_source("auto") == "bundled"


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_local_jsonl_with_column_mapping(tmp_path):
    path = write_jsonl(tmp_path / "dolly.jsonl", [
        {"instruction": "Who wrote it?", "context": "Hamlet", "response": "Shakespeare."}])
    [example] = data.load_examples(str(path), columns={"input": "context", "output": "response"})
    assert example.prompt == "### Prompt:\nWho wrote it?\nHamlet\n\n### Response:\n"
    assert example.completion == "Shakespeare."


def test_local_csv_prompt_response_layout(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("prompt,response\nSay hi.,Hi!\nCount to two.,\"One, two.\"\n")
    examples = data.load_examples(str(path), columns={"instruction": "prompt", "output": "response"})
    assert [e.completion for e in examples] == ["Hi!", "One, two."]


def test_missing_field_names_file_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [
        {"instruction": "Fine.", "output": "Yes."},
        {"instruction": "No answer here."},
    ])
    with pytest.raises(ValueError, match=r"bad\.jsonl, line 2: missing or empty field 'output'"):
        data.load_examples(str(path))


def test_invalid_json_line_is_named(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n{"instruction": oops}\n')
    with pytest.raises(ValueError, match=r"broken\.jsonl, line 2: not valid JSON"):
        data.load_examples(str(path))


def test_csv_missing_field_names_line(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("instruction,output\nA,B\nC,\n")
    with pytest.raises(ValueError, match=r"bad\.csv, line 3: missing or empty field 'output'"):
        data.load_examples(str(path))


def test_missing_column_suggests_mapping(tmp_path):
    path = write_jsonl(tmp_path / "oasst.jsonl", [{"prompt": "Hi", "response": "Hello"}])
    with pytest.raises(ValueError, match="Map them with columns="):
        data.load_examples(str(path))


def test_empty_file_is_a_clear_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with pytest.raises(ValueError, match=r"empty\.jsonl is empty"):
        data.load_examples(str(path))


@pytest.mark.parametrize("source, message", [
    ("no/such/file.jsonl", "does not exist"),
    ("README.md", "unsupported type"),
])
def test_bad_sources(source, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "README.md").write_text("text")
    with pytest.raises(ValueError, match=message):
        data.load_examples(source)


def test_bad_split():
    with pytest.raises(ValueError, match="split must be one of"):
        data.load_examples("bundled", split="test")
