"""Reward functions: ranges, batching, completion-only scoring, the composite."""

import doctest
from unittest import mock

import numpy as np
import pytest
import torch

import lab.rewards as rewards
from lab import generator
from lab.core.tensors import right_pad
from lab.models import add_lora, load, load_embedder
from lab.rewards import REWARD_NAMES, Perplexity, Reward, Semantic, make_reward_fns

PROMPTS = [
    "### Prompt:\nWhat is the capital of France?\n\n### Response:\n",
    "### Prompt:\nWhy is the sky blue?\n\n### Response:\n",
    "### Prompt:\nName three primary colours.\n\n### Response:\n",
]
REFERENCES = [
    "The capital of France is Paris.",
    "Air scatters blue sunlight more than red light, so the sky looks blue.",
    "Red, yellow and blue.",
]
ANSWERS = {
    "good": REFERENCES,
    "wrong": ["The capital of France is Berlin.", "The sky is blue because it reflects the ocean.",
              "Green, purple and orange."],
    "junk": ["Paris Paris Paris Paris Paris Paris", "sky light blue the more scatters than red so Air",
             "the the the the the the the the"],
}
RANGES = {"semantic": (-1, 1), "perplexity": (0, 1), "rouge": (0, 1), "bleu": (0, 1),
          "repetition": (-1, 0), "length": (-1, 0), "truthfulness": (0, 1)}


@pytest.fixture(scope="module")
def embedder():
    return load_embedder("auto")


@pytest.fixture(scope="module")
def lm():
    model, tokenizer = load("tiny-gpt2", "cpu", verbose=False)
    return model.eval(), tokenizer  # a fresh GPT2LMHeadModel starts in train mode (dropout)


@pytest.fixture(scope="module")
def fns(lm, embedder):
    model, tokenizer = lm
    return make_reward_fns(model, tokenizer, embedder)


def test_doctests():
    assert doctest.testmod(rewards).failed == 0


def test_every_part_within_its_range(fns):
    assert set(fns) == set(REWARD_NAMES)
    for kind, answers in ANSWERS.items():
        for name, fn in fns.items():
            low, high = RANGES[name]
            scores = fn(PROMPTS, answers, references=REFERENCES)
            assert len(scores) == len(answers)
            assert all(low <= s <= high for s in scores), (kind, name, scores)


def test_batched_equals_per_sample(fns):
    prompts = PROMPTS + [PROMPTS[0] + "Answer briefly, please, and do not ramble on.\n"]
    completions = [ANSWERS["good"][0], ANSWERS["wrong"][1], ANSWERS["junk"][2], "Paris."]
    references = REFERENCES + [REFERENCES[0]]
    for name, fn in fns.items():
        batched = fn(prompts, completions, references=references)
        single = [fn([p], [c], references=[r])[0] for p, c, r in zip(prompts, completions, references)]
        np.testing.assert_allclose(batched, single, atol=1e-5, err_msg=name)


def test_identical_completion_and_reference(embedder):
    semantic = Semantic(embedder)(PROMPTS, REFERENCES, references=REFERENCES)
    np.testing.assert_allclose(semantic, 1.0, atol=1e-4)
    assert rewards.rouge_l(PROMPTS, REFERENCES, references=REFERENCES) == [1.0] * 3
    assert rewards.bleu(PROMPTS, REFERENCES, references=REFERENCES) == [1.0] * 3


def test_semantic_ranks_good_over_junk_and_empty_is_zero(embedder):
    semantic = Semantic(embedder)
    good = semantic(PROMPTS, ANSWERS["good"], references=REFERENCES)
    junk = semantic(PROMPTS, ["I like trains.", "Bananas are yellow.", "Hello."], references=REFERENCES)
    assert min(good) > max(junk)
    assert semantic(PROMPTS[:1], [""], references=REFERENCES[:1]) == [0.0]


def test_repetition_and_length():
    assert rewards.repetition([""] * 2, ["the the the the", "The cat sat on the mat."]) == [-1.0, 0.0]
    assert rewards.repetition([""] * 2, ["a b", ""]) == [0.0, 0.0]  # too short to repeat
    scores = rewards.length([""] * 4, ["", "Paris.", "one two three", " ".join(["w"] * 80)],
                            min_words=2, max_words=40)
    assert scores == [-1.0, -0.5, 0.0, -1.0]


def _manual_nll(model, tokenizer, prompt, completion):
    """Mean NLL of the completion tokens given the prompt: one unpadded forward."""
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c = tokenizer(completion, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + c])  # (1, seq)
    with torch.no_grad():
        logp = model(input_ids=ids).logits[0, :-1].log_softmax(-1)  # (seq - 1, vocab)
    token_logp = logp.gather(-1, ids[0, 1:, None])[:, 0]  # (seq - 1,)
    return float(-token_logp[len(p) - 1:].mean())


def test_perplexity_scores_the_completion_given_the_prompt(lm):
    model, tokenizer = lm
    score = Perplexity(model, tokenizer, tau=4.0)
    long_prompt = "### Prompt:\n" + "blah " * 60 + "\n\n### Response:\n"
    for prompt in (PROMPTS[0], long_prompt):
        expected = np.exp(-_manual_nll(model, tokenizer, prompt, REFERENCES[0]) / 4.0)
        np.testing.assert_allclose(score([prompt], [REFERENCES[0]]), [expected], atol=1e-5)
    assert score(PROMPTS[:2], ["", REFERENCES[1]])[0] == 0.0
    assert score(PROMPTS[:1], ["   "]) == [0.0]


def test_perplexity_ignores_lora_weights(lm):
    model, tokenizer = lm
    prompts, completions = PROMPTS, ANSWERS["wrong"]
    base_scores = Perplexity(model, tokenizer)(prompts, completions)
    peft_model = add_lora(model, adapter_name="generator", r=4, alpha=8, dropout=0.1)
    try:
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0, 1.0)
        ids = tokenizer(PROMPTS[0], return_tensors="pt")["input_ids"]  # (1, seq)
        with torch.no_grad(), peft_model.disable_adapter():
            base_logits = peft_model(input_ids=ids).logits  # (1, seq, vocab)
        assert not torch.allclose(peft_model(input_ids=ids).logits, base_logits)  # LoRA is active
        peft_model.train()
        scores = Perplexity(peft_model, tokenizer)(prompts, completions)
        np.testing.assert_allclose(scores, base_scores, atol=1e-6)
        assert peft_model.training  # the mode is restored
    finally:
        peft_model.unload().eval()  # give the shared fixture back its plain layers


@pytest.fixture
def lora_samples():
    """A tiny GPT-2 with a nonzero LoRA (so base and policy differ) and 2 prompts x (2 samples of it
    + the reference)."""
    model, tok = load("tiny-gpt2", "cpu", "float32", verbose=False)
    model = add_lora(model, "generator", r=4, alpha=8, dropout=0.0).eval()  # eval: no dropout
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.2)
    prompts = ["### Prompt:\nName a colour.\n\n### Response:\n", "### Prompt:\nCount to three.\n\n### Response:\n"]
    samples = generator.sample(model, tok, prompts, k=2, max_new_tokens=8, temperature=0.7, top_p=0.9)
    # A random model's samples need not re-tokenize to themselves (which rows do depends on the
    # torch release's random stream); each prompt's reference, joined as a third row, always does.
    return model, tok, generator.with_references(samples, tok, ["Red.", "One, two, three."], 8)


def test_the_base_pass_holds_the_kl_reference_and_the_perplexity_rows(lora_samples):
    model, tok, samples = lora_samples
    base = rewards.base_pass(model, samples, 0.7, tok)
    prompt_ids, prompt_mask = samples.prompt_tensors()  # (B, P)
    responses, mask = right_pad(samples.responses(), tok.pad_token_id)  # (N, T)
    index = torch.arange(samples.num_prompts).repeat_interleave(samples.k)  # (N,)
    with torch.no_grad(), model.disable_adapter():  # the base, at the sampling temperature: the KL's reference
        expected = generator.continuation_logprobs(model, prompt_ids, prompt_mask, responses, mask, index,
                                                   temperature=0.7).tokens  # (N, T)
    torch.testing.assert_close(base.at_temperature, expected, rtol=1e-5, atol=1e-5)
    perplexity = Perplexity(model, tok)
    own = perplexity.nll(samples.prompts, samples.completions)  # (N,) scored by the reward itself
    contexts = generator.context_tokens(tok, samples.prompts)
    answers = tok(samples.completions, add_special_tokens=False)["input_ids"]
    known = [base.nll(c, a) for c, a in zip(contexts, answers)]
    assert any(v is not None for v in known)  # decoded text that re-tokenizes to the sampled tokens
    for value, mine in zip(known, own.tolist()):
        assert value is None or value == pytest.approx(mine, rel=1e-5, abs=1e-5)


def test_perplexity_reads_the_base_pass_it_is_given_and_scores_the_rest(lora_samples):
    model, tok, samples = lora_samples
    base = rewards.base_pass(model, samples, 0.7, tok)
    perplexity = Perplexity(model, tok)
    completions = samples.completions[:-1] + ["an answer nobody sampled"]  # a row the pass did not score
    own = perplexity(samples.prompts, completions)
    with mock.patch.object(generator, "score_continuations", wraps=generator.score_continuations) as scorer:
        read = Reward({"perplexity": 1.0}, fns={"perplexity": perplexity})(
            samples.prompts, completions, references=completions, base_pass=base)  # the composite forwards it
    assert scorer.call_count == 1 and len(scorer.call_args.args[1]) < len(completions)  # only the rows not read
    np.testing.assert_allclose(read.total, own, rtol=1e-5, atol=1e-6)
    other, _ = load("tiny-gpt2", "cpu", "float32", verbose=False)  # a pass of another backbone is not read
    with mock.patch.object(generator, "score_continuations", wraps=generator.score_continuations) as scorer:
        Perplexity(other, tok)(samples.prompts, completions, base_pass=base)
    assert len(scorer.call_args.args[1]) == len(completions)


def test_perplexity_forms_and_options(lm):
    model, tokenizer = lm
    sketch = Perplexity(model, tokenizer, form="sketch")(PROMPTS, ANSWERS["good"])
    nll = Perplexity(model, tokenizer).nll(PROMPTS, ANSWERS["good"])  # (batch,)
    np.testing.assert_allclose(sketch, 1 / (1 + nll.exp()), atol=1e-6)
    with pytest.raises(ValueError, match="form"):
        Perplexity(model, tokenizer, form="inverse")
    with pytest.raises(ValueError, match="tau"):
        Perplexity(model, tokenizer, tau=0)


def test_scaled_form_spreads_more_than_sketch_on_smollm2():
    model, tokenizer = load("smollm2-135m", "cpu", verbose=False)
    good = REFERENCES
    junk = ANSWERS["junk"][1:] + ["capital the Paris is France of.", "blue blue sky sky red red"]
    prompts = PROMPTS + PROMPTS[1:] + PROMPTS[:2]
    nll = Perplexity(model, tokenizer).nll(prompts, good + junk).numpy()  # (batch,)
    sketch, scaled = 1 / (1 + np.exp(nll)), np.exp(-nll / 4.0)
    assert scaled.std() > 1.4 * sketch.std()  # measured: 0.26 vs 0.16
    gap = lambda s: s[:3].mean() - s[3:].mean()  # good minus junk
    assert gap(scaled) > gap(sketch) > 0
    # The sketch's own way (prompt + completion, unconditioned): ~0.01-0.05, no signal.
    whole = Perplexity(model, tokenizer, form="sketch")([""] * 3, [p + c for p, c in zip(PROMPTS, good)])
    assert np.mean(whole) < 0.1  # measured: 0.05


def test_composite_total_is_the_weighted_sum(fns):
    weights = {"semantic": 0.5, "perplexity": 0.2, "rouge": 0.1, "bleu": 0.05, "repetition": 0.1,
               "length": 0.05, "truthfulness": 0.05}
    reward = Reward(weights, fns=fns)
    completions = ANSWERS["good"] + ANSWERS["junk"]
    out = reward(PROMPTS * 2, completions, references=REFERENCES * 2)
    expected = sum(w * np.array(out.parts[name]) for name, w in weights.items())
    np.testing.assert_allclose(out.total, expected, atol=1e-12)
    for name, fn in fns.items():  # parts are unweighted
        np.testing.assert_allclose(out.parts[name], fn(PROMPTS * 2, completions, references=REFERENCES * 2))
    frame = out.as_frame()
    assert list(frame.columns) == [*weights, "total"] and len(frame) == 6
    trl_fn = reward.as_trl()
    np.testing.assert_allclose(trl_fn(PROMPTS * 2, completions, references=REFERENCES * 2,
                                      completion_ids=None), out.total)


def test_composite_computes_only_nonzero_weights():
    calls = []

    def spy(prompts, completions, **kwargs):
        calls.append(len(completions))
        return [1.0] * len(completions)

    weights = {"perplexity": 0.0, "length": 0.5, "mine": 2.0, "semantic": 0}
    reward = Reward(weights, fns={"semantic": spy, "mine": spy})  # no model: perplexity is never built
    out = reward(PROMPTS, ["Paris.", "", "ok"])
    assert set(out.parts) == {"length", "mine"} and calls == [3]
    assert out.total == [2.0, 1.5, 2.0]


def test_unknown_names_and_bad_inputs():
    with pytest.raises(ValueError, match="known names: semantic, perplexity, rouge"):
        Reward({"rogue": 1.0})
    with pytest.raises(ValueError, match="known names"):
        make_reward_fns(names=["semantic", "fluency"])
    with pytest.raises(ValueError, match="tokenizer"):
        Reward({"perplexity": 1.0})
    with pytest.raises(ValueError, match="finite"):
        Reward({"rouge": float("nan")})
    with pytest.raises(ValueError, match="known"):
        make_reward_fns(temperature=1.0)
    with pytest.raises(ValueError, match="one reference answer per completion"):
        rewards.rouge_l(PROMPTS, REFERENCES, references=REFERENCES[:2])


def test_registry_passes_options_and_names_functions(lm):
    model, tokenizer = lm
    fns = make_reward_fns(model, tokenizer, form="sketch", tau=2.0, n=2, min_words=5, max_words=8)
    assert fns["perplexity"].form == "sketch" and fns["perplexity"].tau == 2.0
    assert fns["repetition"]([""], ["a b a b"]) == [-0.5]
    assert fns["length"]([""], ["one two"]) == [-0.6]
    assert [fn.__name__ for fn in fns.values()] == list(REWARD_NAMES)
    assert "perplexity" not in make_reward_fns()
