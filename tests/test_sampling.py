"""The plain decode loop agrees with transformers' generate, and the nucleus is filtered correctly.
(The fast decoder against this loop: tests/test_fast_paths.py.)"""

import torch

from lab import generator
from lab.core import tensors
from lab.generator import next_token, nucleus, top_p_filter


def test_top_p_keeps_the_smallest_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = top_p_filter(logits, 0.7).isfinite()
    assert kept.tolist() == [[True, True, False, False]]
    assert top_p_filter(logits, 0.01).isfinite().sum() == 1  # the top token always stays
    assert top_p_filter(logits, 1.0).isfinite().all()


def test_nucleus_is_the_filtered_softmax_with_and_without_the_shortcut():
    torch.manual_seed(0)
    peaked = torch.randn(3, 500) * 4  # the top 64 tokens hold 0.9 of the mass: shortcut
    flat = torch.randn(2, 500) * 0.1  # they do not: the whole vocabulary
    for logits, width in ((peaked, 64), (flat, 500)):
        probs, ids = nucleus(logits, 0.9)
        assert probs.shape == ids.shape == (len(logits), width)
        full = torch.zeros_like(logits).scatter(-1, ids, probs)  # (N, V)
        expected = top_p_filter(logits, 0.9).softmax(-1)  # (N, V)
        torch.testing.assert_close(full / full.sum(-1, keepdim=True), expected)


def test_next_token_draws_from_the_nucleus_or_takes_the_most_likely():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(2000, 4)  # (N, V)
    assert next_token(logits, do_sample=False).tolist() == [0] * 2000
    torch.manual_seed(0)
    drawn = next_token(logits, temperature=1.0, top_p=0.7)  # (N,) only tokens 0 and 1 in the nucleus
    assert set(drawn.tolist()) == {0, 1} and abs(float((drawn == 0).float().mean()) - 0.5 / 0.8) < 0.05


def test_greedy_decode_equals_generate(tiny):
    model, tokenizer = tiny
    prompts = ["### Prompt:\nName a colour.\n\n### Response:\n", "Hi"]
    ids, mask = tensors.encode(tokenizer, prompts, 256)  # (B, P)
    plain = generator.decode(model, ids, mask, 2, 6, tokenizer.eos_token_id, tokenizer.pad_token_id, do_sample=False)
    ours = generator.sample(model, tokenizer, prompts, k=2, max_new_tokens=6, do_sample=False)
    assert ours.input_ids[:, ours.prompt_len:].tolist() == plain.tolist()
    ids, mask = tensors.encode(tokenizer, ours.prompts, 256)
    theirs = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                            pad_token_id=tokenizer.pad_token_id)  # (4, P + 6)
    expected = [tokenizer.decode(row[ids.shape[1]:], skip_special_tokens=True).strip() for row in theirs]
    assert ours.completions == expected


def test_sampling_is_seeded_and_restores_train_mode(tiny):
    model, tokenizer = tiny
    model.train()
    try:
        torch.manual_seed(1)
        a = generator.sample(model, tokenizer, ["Hello"], k=3, max_new_tokens=5)
        torch.manual_seed(1)
        b = generator.sample(model, tokenizer, ["Hello"], k=3, max_new_tokens=5)
        assert a.completions == b.completions and model.training
    finally:
        model.eval()  # the session's shared tiny model: later tests expect it as loaded (dropout off)
