"""lab.generator on the tiny random GPT-2: log-probs, SFT masking, sampling, adapter isolation."""

import copy

import pytest
import torch
import torch.nn.functional as F

import lab
from lab.discriminator import Discriminator
from lab.generator import (
    continuation_logprobs, generator_parameters, response_logprobs, sample, sft_batch, sft_loss,
)
from lab.core.tensors import left_pad, position_ids, until_first_eos
from lab.losses import reinforce_loss
from lab.models import add_lora

PROMPTS = ["### Prompt:\nName a colour.\n\n### Response:\n",
           "### Prompt:\nWhat is the capital of France? Answer briefly.\n\n### Response:\n"]
ANSWERS = ["Blue.", "The capital of France is Paris."]


@pytest.fixture
def gen(tiny):
    """A fresh PeftModel (generator adapter, no dropout, eval mode) and the tokenizer."""
    lab.set_seed(0)
    model, tokenizer = tiny
    peft_model = add_lora(copy.deepcopy(model), "generator", r=4, alpha=8, dropout=0.0)
    return peft_model.eval(), tokenizer


def _perturb_lora(model):
    """LoRA B starts at zero; make the adapter non-trivial so that it matters in the forward."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)


def test_position_ids_start_at_first_real_token():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert position_ids(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]


def test_until_first_eos_keeps_the_first_eos():
    tokens = torch.tensor([[5, 2, 2, 7], [5, 6, 7, 8], [2, 5, 2, 5]])
    assert until_first_eos(tokens, eos_id=2).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


def test_response_logprobs_equal_hand_computation(gen):
    model, tok = gen
    _perturb_lora(model)
    prompts = tok(PROMPTS)["input_ids"]
    answers = tok(ANSWERS, add_special_tokens=False)["input_ids"]
    rows = [p + a for p, a in zip(prompts, answers)]
    input_ids, attention_mask = left_pad(rows, tok.pad_token_id)  # (2, L) different pad lengths
    response_mask, _ = left_pad([[0] * len(p) + [1] * len(a) for p, a in zip(prompts, answers)], 0)
    out = response_logprobs(model, input_ids, attention_mask, response_mask, with_entropy=True)
    width = input_ids.shape[1]
    for i, (row, p) in enumerate(zip(rows, prompts)):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([row])).logits[0]  # (len, V), no padding at all
        hand, hand_entropy = [], []
        for t in range(len(p), len(row)):
            logp = torch.log_softmax(logits[t - 1], -1)  # (V,) predicts token t
            hand.append(logp[row[t]])
            hand_entropy.append(-(logp.exp() * logp).sum())
        offset = width - len(row)  # left padding of row i
        cols = [offset + t - 1 for t in range(len(p), len(row))]  # shifted positions
        torch.testing.assert_close(out.tokens[i, cols], torch.stack(hand), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.sums[i], torch.stack(hand).sum(), atol=1e-4, rtol=1e-5)
        torch.testing.assert_close(out.entropy[i, cols], torch.stack(hand_entropy), atol=1e-4, rtol=1e-5)
        assert out.tokens[i].count_nonzero() == len(cols)


def test_shared_prompt_logprobs_equal_full_rows_values_and_gradients(gen):
    """Each prompt computed once (KV cache repeated) gives the log-probs, the entropy and the
    LoRA gradients of scoring every prompt + response row on its own."""
    model, tok = gen
    _perturb_lora(model)
    s = sample(model, tok, PROMPTS, k=3, max_new_tokens=6)
    temps = torch.tensor([0.7, 1.0, 0.7, 1.0, 0.7, 1.0])  # (N,) one temperature per row
    P = s.prompt_len
    shared = continuation_logprobs(model, s.input_ids[::3, :P], s.attention_mask[::3, :P], s.input_ids[:, P:],
                                   s.response_mask[:, P:], torch.tensor([0, 0, 0, 1, 1, 1]), with_entropy=True,
                                   temperature=temps)
    full = response_logprobs(model, s.input_ids, s.attention_mask, s.response_mask, with_entropy=True,
                             temperature=temps)
    torch.testing.assert_close(shared.sums, full.sums, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(shared.tokens, full.tokens[:, P - 1:], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared.entropy, full.entropy[:, P - 1:], atol=1e-4, rtol=1e-5)
    params = generator_parameters(model)
    weights = torch.arange(1.0, 7.0)  # (N,) a loss that weighs rows differently
    grads_shared = torch.autograd.grad((shared.sums * weights).sum(), params)
    grads_full = torch.autograd.grad((full.sums * weights).sum(), params)
    for a, b in zip(grads_shared, grads_full):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_sft_loss_trains_on_completion_tokens_only(gen):
    model, tok = gen
    _perturb_lora(model)
    batch = sft_batch(tok, PROMPTS, ANSWERS)
    prompts = tok(PROMPTS)["input_ids"]
    answers = tok(ANSWERS, add_special_tokens=False)["input_ids"]
    trained = batch["labels"] != -100
    assert trained.sum(-1).tolist() == [len(a) + 1 for a in answers]  # completion + EOS
    assert (batch["labels"][trained] == batch["input_ids"][trained]).all()

    total, count = 0.0, 0  # manual CE over completion tokens, one unpadded row at a time
    for p, a in zip(prompts, answers):
        row = torch.tensor([p + a + [tok.eos_token_id]])
        with torch.no_grad():
            logits = model(input_ids=row).logits[0]  # (len, V)
        total += F.cross_entropy(logits[len(p) - 1:-1], row[0, len(p):], reduction="sum")
        count += len(a) + 1
    loss = sft_loss(model, tok, PROMPTS, ANSWERS)
    torch.testing.assert_close(loss, total / count, atol=1e-5, rtol=1e-5)

    kwargs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  position_ids=position_ids(batch["attention_mask"]))
    with torch.no_grad():
        hf = model(**kwargs, labels=batch["labels"]).loss  # transformers' CE skips -100
        whole = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        sketch = model(**kwargs, labels=whole).loss  # defect 3: prompt tokens labelled too
    torch.testing.assert_close(loss, hf, atol=1e-5, rtol=1e-5)
    assert not torch.isclose(loss, sketch, atol=1e-3)


def test_sample_returns_k_rows_per_prompt_in_prompt_major_order(gen):
    model, tok = gen
    prompts = PROMPTS + ["### Prompt:\nSay hi.\n\n### Response:\n"]
    s = sample(model, tok, prompts, k=2, max_new_tokens=5)
    assert len(s.completions) == len(s.prompts) == 6 and s.k == 2 and s.num_prompts == 3
    assert s.prompts == [prompts[0]] * 2 + [prompts[1]] * 2 + [prompts[2]] * 2
    assert s.input_ids.shape == s.attention_mask.shape == s.response_mask.shape
    assert s.input_ids.shape[1] <= s.prompt_len + 5
    assert s.response_mask[:, :s.prompt_len].sum() == 0
    assert s.response_mask.sum(-1).tolist() == s.lengths.tolist()
    assert (s.attention_mask >= s.response_mask).all()
    for i, text in enumerate(s.completions):
        response = s.input_ids[i, s.prompt_len:s.prompt_len + int(s.lengths[i])]
        assert text == tok.decode(response, skip_special_tokens=True).strip()
        assert "### Prompt" not in text
    greedy = sample(model, tok, prompts[:1], k=3, max_new_tokens=5, do_sample=False)
    assert len(set(greedy.completions)) == 1


def test_reinforce_loss_is_advantage_weighted_logprob():
    sums = torch.tensor([-2.0, -3.0], requires_grad=True)
    advantages = torch.tensor([1.0, -0.5], requires_grad=True)
    loss = reinforce_loss(sums, advantages)
    torch.testing.assert_close(loss, torch.tensor(-(1.0 * -2.0 + -0.5 * -3.0) / 2))
    loss.backward()
    torch.testing.assert_close(sums.grad, torch.tensor([-0.5, 0.25]))
    assert advantages.grad is None  # the advantages are constants


def test_generator_step_changes_only_generator_lora(gen):
    model, tok = gen
    disc = Discriminator(model, tok, lora=dict(r=4, alpha=8, dropout=0.0))
    params = generator_parameters(model)
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    head_before = {k: v.clone() for k, v in disc.head.state_dict().items()}

    s = sample(model, tok, PROMPTS, k=2, max_new_tokens=4)
    with torch.no_grad():
        baseline = disc(s.prompts, s.completions)  # (N,) the critic as baseline
    assert model.active_adapter == "generator"
    logprobs = response_logprobs(model, s.input_ids, s.attention_mask, s.response_mask)
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.2])
    loss = sft_loss(model, tok, PROMPTS, ANSWERS) + reinforce_loss(logprobs.sums, rewards - baseline)
    optimizer.zero_grad()
    loss.backward()
    assert all(p.grad is not None for p in params)
    optimizer.step()

    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".generator." in k for k in changed)
    assert {k for k in before if "lora_B.generator" in k} <= changed
    assert all(torch.equal(v, disc.head.state_dict()[k]) for k, v in head_before.items())


def test_many_rows_are_scored_in_chunks_with_the_same_results(gen, monkeypatch):
    from lab import generator

    model, tokenizer = gen
    _perturb_lora(model)
    contexts = [tokenizer(p)["input_ids"] for p in PROMPTS for _ in range(3)]  # 6 rows, 2 distinct contexts
    answers = [tokenizer(a, add_special_tokens=False)["input_ids"][:n] for a in ANSWERS for n in (1, 3, 8)]
    whole = generator.score_continuations(model, contexts, answers, tokenizer.pad_token_id, (0.7, 1.0))
    width, vocab = max(map(len, answers)), model.get_output_embeddings().weight.shape[0]
    monkeypatch.setattr(generator, "SCORE_LOGITS", 4 * width * vocab)  # chunks of 4 rows: 4 + 2
    chunked = generator.score_continuations(model, contexts, answers, tokenizer.pad_token_id, (0.7, 1.0))
    for a, b in zip(whole, chunked):  # (6, T) each: the last chunk's shorter rows padded with 0
        assert a.shape == b.shape == (6, width)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
