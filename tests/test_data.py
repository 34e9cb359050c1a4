"""Prompt formatting, the bundled set, local files with column mappings, and data errors."""

import dataclasses
import json
import time

import pytest

from lab import data
from lab.readers import sources


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


# --- issue 13: more sources, their layouts, mixes ------------------------------------------------
def test_dolly_layout_is_recognised_by_its_columns(tmp_path):
    path = write_jsonl(tmp_path / "dolly.jsonl", [
        {"instruction": "Who wrote it?", "context": "Hamlet", "response": "Shakespeare.", "category": "qa"},
        {"instruction": "Name a colour.", "context": "", "response": "Blue.", "category": "brainstorming"}])
    first, second = data.load_examples(str(path))
    assert first.prompt == "### Prompt:\nWho wrote it?\nHamlet\n\n### Response:\n"
    assert (first.completion, first.category) == ("Shakespeare.", "qa")
    assert second.prompt == data.format_prompt("Name a colour.") and not second.incorrect


def test_oasst_trees_give_the_top_ranked_reply_to_each_root(tmp_path):
    messages = [
        {"message_id": "r1", "parent_id": None, "role": "prompter", "text": "What is 2+2?", "lang": "en"},
        {"message_id": "a1", "parent_id": "r1", "role": "assistant", "rank": 1, "text": "Five.", "lang": "en"},
        {"message_id": "a2", "parent_id": "r1", "role": "assistant", "rank": 0, "text": "Four.", "lang": "en"},
        {"message_id": "p2", "parent_id": "a2", "role": "prompter", "text": "Why?", "lang": "en"},
        {"message_id": "a3", "parent_id": "p2", "role": "assistant", "rank": 0, "text": "Arithmetic.", "lang": "en"},
        {"message_id": "r2", "parent_id": None, "role": "prompter", "text": "Name a bird.", "lang": "en"},
        {"message_id": "a4", "parent_id": "r2", "role": "assistant", "rank": None, "text": "A robin.", "lang": "en"},
        {"message_id": "r3", "parent_id": None, "role": "prompter", "text": "Hallo?", "lang": "de"},
        {"message_id": "a5", "parent_id": "r3", "role": "assistant", "rank": 0, "text": "Hallo!", "lang": "de"},
        {"message_id": "r4", "parent_id": None, "role": "prompter", "text": "No reply yet.", "lang": "en"},
    ]
    path = write_jsonl(tmp_path / "oasst.jsonl", messages)
    examples = data.load_examples(str(path))
    assert [(e.instruction, e.completion) for e in examples] == [("What is 2+2?", "Four."), ("Name a bird.", "A robin.")]


def test_truthfulqa_layout_carries_true_and_wrong_answers(tmp_path):
    path = write_jsonl(tmp_path / "tqa.jsonl", [
        {"type": "Adversarial", "category": "Misconceptions", "question": "What colour is the Sun?",
         "best_answer": "The Sun is white.", "correct_answers": ["The Sun is white.", "It is white."],
         "incorrect_answers": ["The Sun is yellow.", "The Sun is orange."], "source": "made up"}])
    [example] = data.load_examples(str(path))
    assert example.completion == "The Sun is white." and example.category == "Misconceptions"
    assert example.correct == ("The Sun is white.", "It is white.")
    assert example.incorrect == ("The Sun is yellow.", "The Sun is orange.")
    assert example.wrong == example.incorrect  # the fluent_wrong junk takes them from the example


def test_truthfulqa_csv_with_semicolon_lists(tmp_path):
    path = tmp_path / "tqa.csv"
    path.write_text('question,best_answer,correct_answers,incorrect_answers\n'
                    'Is 7 prime?,Yes, 7 is prime.,"Yes, 7 is prime.; It is prime.","No, 7 is even.; No."\n'
                    .replace("Yes, 7 is prime.,", '"Yes, 7 is prime.",'))
    [example] = data.load_examples(str(path))
    assert example.correct == ("Yes, 7 is prime.", "It is prime.") and example.incorrect == ("No, 7 is even.", "No.")


def test_arc_layout_maps_the_answer_key_to_its_text(tmp_path):
    path = write_jsonl(tmp_path / "arc.jsonl", [
        {"id": "q1", "question": "Which gas do plants take in?", "answerKey": "B",
         "choices": {"text": ["oxygen", "carbon dioxide", "helium"], "label": ["A", "B", "C"]}}])
    [example] = data.load_examples(str(path))
    assert example.completion == "carbon dioxide"
    assert example.input == "Choices: A) oxygen; B) carbon dioxide; C) helium"
    assert example.incorrect == ("oxygen", "helium")
    bad = write_jsonl(tmp_path / "bad_arc.jsonl", [
        {"question": "Q?", "answerKey": "D", "choices": {"text": ["x", "y"], "label": ["A", "B"]}}])
    with pytest.raises(ValueError, match=r"bad_arc\.jsonl, line 1: answerKey 'D'"):
        data.load_examples(str(bad))


def test_dataset_columns_map_any_layout_including_wrong_answers(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"q": "Capital of Peru?", "a": "Lima.", "bad": ["Cusco."]}])
    columns = '{"instruction": "q", "output": "a", "incorrect": "bad"}'  # as the config field holds it
    [example] = data.load_examples(str(path), columns=columns)
    assert (example.instruction, example.completion, example.incorrect) == ("Capital of Peru?", "Lima.", ("Cusco.",))
    with pytest.raises(ValueError, match="dataset_columns must map the kit's fields"):
        data.load_examples(str(path), columns='{"question": "q"}')


def test_factual_source_is_the_bundled_factual_set():
    train, heldout = data.load_examples("factual", "train"), data.load_examples("factual", "heldout")
    assert (len(train), len(heldout)) == (126, 54)
    assert not {e.prompt for e in train} & {e.prompt for e in heldout}
    rows = data.factual_rows("heldout")
    assert [e.completion for e in heldout] == [r["best_answer"] for r in rows]
    assert all(len(e.incorrect) >= 2 and e.correct[0] == e.completion for e in heldout)
    # the bare key term ("Canberra") is not a multiple-choice option; the paraphrase is
    assert all(r["correct_answers"][-1] not in e.correct and r["correct_answers"][0] in e.correct
               for e, r in zip(heldout, rows))
    assert all(e.wrong == e.incorrect for e in heldout)


def test_wrong_answers_travel_with_the_examples_whatever_was_loaded_before():
    bundled = data.load_examples("bundled", "train")
    asked = [e for e in bundled if e.wrong]  # bundled instructions that ask a factual-set question
    assert asked and all(e.wrong == data.wrong_answers(e.completion) and not e.incorrect for e in asked)
    data.load_examples("factual", "train")
    assert data.load_examples("bundled", "train") == bundled  # no state left behind by another source
    row = dataclasses.asdict(asked[0])
    assert data.Example(**row) == asked[0]  # the checkpoint's queue: saved with asdict, rebuilt so
    del row["wrong"]
    assert data.Example(**row).wrong == ()  # a queue saved before the field existed still loads


def test_weighted_mix_interleaves_by_weight():
    assert sources.parse_spec("bundled:3, factual:1") == [("bundled", 0.75), ("factual", 0.25)]
    train = data.load_examples("bundled:0.5,factual:0.5", "train")
    bundled = data.load_examples("bundled", "train")
    factual = [e for e in train if e.incorrect]
    assert len(train) == 2 * len(bundled) and len(factual) == len(bundled)  # factual repeated, none dropped
    assert all(abs(sum(bool(e.incorrect) for e in train[:n]) - n / 2) <= 1 for n in (10, 51, 200))
    heldout = data.load_examples("bundled:0.7,factual:0.3", "heldout")
    assert len(heldout) == len(data.load_examples("bundled", "heldout")) + 54  # each held-out row once
    assert len({id(e) for e in heldout}) == len(heldout)


@pytest.mark.parametrize("spec, message", [
    ("bundled:0", "must be a positive number"),
    ("bundled:-1,factual:1", "must be a positive number"),
    ("bundled:x", "must be a positive number"),
    ("bundled:1,bundled:2", "names a source twice"),
    (":1", "has no source name"),
    ("", "must name a source"),
])
def test_bad_mix_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        data.load_examples(spec)


@pytest.mark.parametrize("source", ["alpaca", "dolly", "oasst", "truthfulqa", "arc"])
def test_hub_source_offline_fails_at_once_naming_it(source, no_network, monkeypatch):
    monkeypatch.setattr(sources, "_cached", lambda hub_id: False)
    started = time.perf_counter()
    with pytest.raises(ValueError, match=f"Data source '{source}' needs the Hugging Face Hub dataset"):
        data.load_examples(source)
    assert time.perf_counter() - started < 5


@pytest.mark.parametrize("source, layout_rows, expected", [
    ("dolly", [{"instruction": "Hi?", "context": "", "response": "Hello.", "category": "open_qa"}] * 10, "Hello."),
    ("truthfulqa", [{"question": "Q?", "best_answer": "A.", "correct_answers": ["A."],
                     "incorrect_answers": ["B."], "category": "c"}] * 10, "A."),
    ("arc", [{"question": "Q?", "answerKey": "A", "choices": {"text": ["yes", "no"], "label": ["A", "B"]}}], "yes"),
])
def test_hub_path_loads_the_real_dataset_id_and_maps_its_layout(source, layout_rows, expected, monkeypatch):
    """The Hub path with load_dataset stubbed by a table in the source's own layout."""
    import datasets

    calls = []

    def fake_load_dataset(hub_id, config=None, split=None):
        calls.append((hub_id, config, split))
        return datasets.Dataset.from_list(layout_rows)

    monkeypatch.setattr(sources, "hub_available", lambda source: True)
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    examples = data.load_examples(source, "heldout")
    hub_id, config, splits = sources.HUB[source]
    assert calls[0][:2] == (hub_id, config)
    assert calls[0][2] == (splits["heldout"] if splits else sources.HUB_SPLIT.get(source, "train"))
    assert examples and examples[0].completion == expected
