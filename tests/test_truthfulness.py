"""The retrieval-grounded truthfulness reward on the bundled factual set, and fluent_wrong junk."""

import random

import numpy as np
import pytest
import torch

from lab import data, discriminator
from lab.config import HybridConfig
from lab.models import load
from lab.rewards import Reward, make_reward_fns
from lab.signals.truthfulness import Passage, Truthfulness, load_passages, pairwise_accuracy, question_of


@pytest.fixture(scope="module")
def reward():
    """The default reward: bundled corpus, hybrid retrieval, the bundled MiniLM embedder."""
    return Truthfulness()


def test_correct_answer_outscores_each_wrong_answer_on_heldout(reward):
    """Issue 13: on the bundled held-out split, best_answer beats *each* of its wrong answers
    for at least 80% of the questions (measured: 51/54)."""
    rows = data.factual_rows("heldout")
    assert len(rows) >= 40
    accuracy = pairwise_accuracy(rows, reward)
    print(f"held-out pairwise accuracy: {accuracy:.3f}")
    assert accuracy >= 0.8
    assert pairwise_accuracy(rows, reward, "paraphrase") >= 0.8  # a paraphrase of it as well


def test_retriever_puts_the_evidence_first(reward):
    rows = data.factual_rows("heldout")
    hits = reward.retriever.search([r["question"] for r in rows], k=3)
    top1 = np.mean([reward.retriever.passages[h[0][0]].id == r["passage_ids"][0] for h, r in zip(hits, rows)])
    top3 = np.mean([r["passage_ids"][0] in {reward.retriever.passages[i].id for i, _ in h}
                    for h, r in zip(hits, rows)])
    assert top1 >= 0.9 and top3 == 1.0


def test_range_empty_echo_and_batched_equals_single(reward):
    prompt = data.format_prompt("What is the capital of Australia?")
    answers = ["The capital of Australia is Canberra.", "The capital of Australia is Sydney.",
               "What is the capital of Australia?", "", "Bananas are yellow and I like them."]
    scores = reward([prompt] * len(answers), answers)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores[0] > 0.7 and scores[0] > scores[1] and scores[0] > scores[2]
    assert scores[3] == 0.0 and scores[4] < 0.2
    single = [reward([prompt], [a])[0] for a in answers]
    np.testing.assert_allclose(scores, single, atol=1e-5)


def test_explain_names_the_evidence(reward):
    evidence = reward.explain(data.format_prompt("What is the capital of Australia?"), "Canberra")
    assert evidence[0]["id"] == "p-geo-001" and sum(e["weight"] for e in evidence) == pytest.approx(1, abs=0.01)


def test_lexical_only_needs_no_embedder_and_reads_the_claim():
    corpus = [Passage("a", "Ottawa", "Ottawa is the capital city of Canada."),
              Passage("b", "Toronto", "Toronto is the largest city in Canada."),
              Passage("c", "Iron", "The chemical symbol of iron is Fe.")]  # BM25's IDF needs a few passages
    fn = Truthfulness(corpus, alpha=1.0, bm25_weight=1.0)
    assert fn.retriever._embedder is None
    scores = fn(["What is the capital of Canada?"] * 2, ["Ottawa.", "Toronto."])
    assert fn.retriever._embedder is None  # never loaded
    assert scores == [1.0, 0.0]


def test_question_of_reads_kit_and_chat_prompts(tiny):
    _, tokenizer = tiny
    assert question_of(data.format_prompt("Who wrote Hamlet?")) == "Who wrote Hamlet?"
    assert "Who wrote Hamlet?" in question_of(data.format_prompt("Who wrote Hamlet?", tokenizer=tokenizer))


def test_any_passages_file_and_clear_errors(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"id": "x", "title": "Gold", "text": "The chemical symbol of gold is Au."}\n')
    assert load_passages(path) == [Passage("x", "Gold", "The chemical symbol of gold is Au.")]
    (tmp_path / "bad.jsonl").write_text('{"id": "x"}\n')
    with pytest.raises(ValueError, match="line 1: each line needs a non-empty 'text'"):
        load_passages(tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match="does not exist"):
        load_passages(tmp_path / "none.jsonl")


def test_registered_as_a_reward_with_a_corpus_option(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text('{"id": "x", "title": "Gold", "text": "The chemical symbol of gold is Au."}\n')
    assert HybridConfig(reward_weights={"truthfulness": 1.0}, truthfulness_corpus=str(path)).truthfulness_corpus
    [fn] = make_reward_fns(names=["truthfulness"], corpus=str(path)).values()
    assert fn.__name__ == "truthfulness" and fn.retriever.passages[0].id == "x"
    out = Reward({"truthfulness": 1.0}, corpus=str(path))(["What is the symbol of gold?"], ["It is Au."])
    assert out.parts["truthfulness"][0] > 0.5


def test_fluent_wrong_junk_uses_the_factual_wrong_answers():
    rows = data.factual_rows("train")[:6]
    references = [r["best_answer"] for r in rows]
    wrong = [tuple(r["incorrect_answers"]) for r in rows]
    rng = random.Random(0)
    junk = [discriminator.make_junk(ref, references, "fluent_wrong", rng, bad) for ref, bad in zip(references, wrong)]
    assert all(j in r["incorrect_answers"] for j, r in zip(junk, rows))
    mixed = discriminator.junk_for(references * 4, random.Random(1), wrong=wrong * 4)  # half hard, half synthetic
    hard = sum(j in r["incorrect_answers"] for j, r in zip(mixed, rows * 4))
    assert 4 <= hard <= 20
    examples = data.load_examples("factual", "train", limit=6)  # the wrong answers travel with the examples
    assert [e.wrong for e in examples] == [tuple(r["incorrect_answers"]) for r in rows]
    # unknown answers fall back to 'other'; other references draw exactly as before
    assert discriminator.make_junk("Purple is a colour.", ["Dogs bark."], "fluent_wrong", rng) == "Dogs bark."
    plain = ["The sky is blue today.", "Cats like to sleep a lot."]
    rng_a, rng_b = random.Random(3), random.Random(3)
    expected = [discriminator.make_junk(r, plain, rng_b.choice(discriminator.JUNK_KINDS), rng_b) for r in plain]
    assert discriminator.junk_for(plain, rng_a) == expected


def test_contrastive_loss_takes_fluent_wrong_junk():
    model, tokenizer = load("tiny-gpt2", "cpu", verbose=False)  # its own copy: the critic adds an adapter
    disc = discriminator.Discriminator(model, tokenizer, top_layers=0)
    rows = data.factual_rows("train")[:3]
    prompts = [data.format_prompt(r["question"]) for r in rows]
    answers = [r["best_answer"] for r in rows]
    junk = discriminator.junk_for(answers, random.Random(0), wrong=[r["incorrect_answers"] for r in rows],
                                  hard_share=1.0)
    assert all(j in r["incorrect_answers"] for j, r in zip(junk, rows))
    optimizer = torch.optim.AdamW(disc.parameters_to_train(), lr=1e-3)
    out = discriminator.train_step(disc, optimizer, prompts, answers, [1.0] * 3, junk=junk)
    assert np.isfinite(out["contrastive"]) and out["contrastive"] > 0
