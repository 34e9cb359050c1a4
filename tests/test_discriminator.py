"""lab.discriminator on the tiny random GPT-2: head position, adapter isolation, losses, junk."""

import copy
import math
import random

import pytest
import torch

import lab
from lab.discriminator import (
    JUNK_KINDS, Discriminator, contrastive_loss, junk_for, make_junk, ranking_accuracy, regression_loss,
    train_step,
)
from lab.models import add_lora, using_adapter

PROMPTS = ["### Prompt:\nName a colour.\n\n### Response:\n",
           "### Prompt:\nWhat is the capital of France? Answer briefly.\n\n### Response:\n",
           "### Prompt:\nHow many legs does a spider have?\n\n### Response:\n"]
ANSWERS = ["Blue is a colour of the sky.", "The capital of France is Paris.", "A spider has eight legs."]
LORA = dict(r=4, alpha=8, dropout=0.0)


@pytest.fixture
def shared(tiny):
    """A Discriminator on a fresh PeftModel that also carries the generator adapter (eval mode)."""
    lab.set_seed(0)
    model, tokenizer = tiny
    peft_model = add_lora(copy.deepcopy(model), "generator", **LORA).eval()
    return Discriminator(peft_model, tokenizer, lora=LORA)


def _junk(kind="shuffle", seed=0):
    rng = random.Random(seed)
    return [make_junk(a, ANSWERS, kind, rng) for a in ANSWERS]


def test_shared_backbone_gets_a_second_adapter(shared):
    assert set(shared.backbone.peft_config) == {"generator", "discriminator"}
    assert shared.backbone.active_adapter == "generator"
    assert "backbone" not in dict(shared.named_children())  # shared, not owned
    scores = shared(PROMPTS, ANSWERS)
    assert scores.shape == (3,) and shared.backbone.active_adapter == "generator"


def test_score_is_the_same_alone_and_in_a_left_padded_batch(shared):
    with torch.no_grad():
        for name, p in shared.backbone.named_parameters():  # a non-trivial adapter and head
            if "lora_B.discriminator" in name:
                p.normal_(0, 0.02)
        torch.nn.init.normal_(shared.head.weight, std=0.1)
        batch = shared(PROMPTS, ANSWERS)  # (3,) rows of different lengths, left padded
        alone = torch.stack([shared([p], [a])[0] for p, a in zip(PROMPTS, ANSWERS)])
    torch.testing.assert_close(batch, alone, atol=1e-5, rtol=1e-5)


def test_shared_prompts_score_as_one_full_pass_each(tiny):
    """Answers to the same prompt reuse its KV cache; each score still equals the head on a
    plain forward over ``prompt + answer + EOS``. The adapter sits on the top block only."""
    lab.set_seed(0)
    model, tok = tiny
    peft_model = add_lora(copy.deepcopy(model), "generator", **LORA).eval()
    disc = Discriminator(peft_model, tok, lora=LORA, top_layers=1)
    names = [n for n, _ in peft_model.named_parameters() if "lora_" in n and ".discriminator." in n]
    assert names and all(".h.1." in n for n in names)  # tiny-gpt2 has blocks h.0 and h.1
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B.discriminator" in name:
                p.normal_(0, 0.02)
        torch.nn.init.normal_(disc.head.weight, std=0.1)
        prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[0]]
        answers = [ANSWERS[0], ANSWERS[1], "Red.", "Green, like grass in spring."]
        scores = disc(prompts, answers)  # (4,) three rows share PROMPTS[0]
        with using_adapter(peft_model, disc.adapter):
            body = peft_model.get_base_model().base_model
            for i, (p, a) in enumerate(zip(prompts, answers)):
                ids = tok(p)["input_ids"] + tok(a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
                hidden = body(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]  # (H,)
                torch.testing.assert_close(scores[i], disc.head(hidden)[0], atol=1e-5, rtol=1e-5)


def test_train_step_changes_only_discriminator_lora_and_head(shared):
    model = shared.backbone
    optimizer = torch.optim.AdamW(shared.parameters_to_train(), lr=1e-2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    head_before = [p.clone() for p in shared.head.parameters()]
    for _ in range(2):  # LoRA B starts at zero: the second step moves every LoRA weight
        out = train_step(shared, optimizer, PROMPTS, ANSWERS, [1.0, 1.0, 1.0], junk=_junk())
    assert set(out) == {"loss", "mse", "contrastive", "aux_mse", "scores", "skipped"} and out["scores"].shape == (3,)
    assert all(math.isfinite(out[k]) for k in ("loss", "mse", "contrastive"))
    assert model.active_adapter == "generator"
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {k for k in before if ".discriminator." in k}
    assert all(not torch.equal(a, b) for a, b in zip(head_before, shared.head.parameters()))


def test_losses():
    tie = contrastive_loss(torch.tensor([0.3, 1.0]), torch.tensor([0.3, 1.0]))
    torch.testing.assert_close(tie, torch.tensor(math.log(2.0)))
    assert contrastive_loss(torch.tensor([5.0]), torch.tensor([-5.0])) < 1e-4
    torch.testing.assert_close(regression_loss(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])),
                               torch.tensor(0.5))


@pytest.mark.parametrize("kind", JUNK_KINDS)
def test_junk_differs_from_the_answer(kind):
    rng = random.Random(0)
    for answer in [*ANSWERS, "Fish.", "Paris", "Yes yes"]:
        junk = make_junk(answer, ANSWERS, kind, rng)
        assert junk.strip() and junk != answer
    with pytest.raises(ValueError, match="junk kind"):
        make_junk("x y", [], "nonsense", rng)


def test_fluent_wrong_junk_comes_from_the_wrong_answers_given_with_the_references():
    wrong = [("The capital of France is Lyon.",), ()]  # per reference, as Example.wrong holds them
    junk = junk_for(ANSWERS[1:], random.Random(0), wrong=wrong, hard_share=1.0)
    assert junk[0] == wrong[0][0] and junk[1].strip() and junk[1] != ANSWERS[2]  # none known: synthetic
    assert junk_for(ANSWERS, random.Random(0)) == junk_for(ANSWERS, random.Random(0), wrong=[()] * 3)
    with pytest.raises(ValueError):  # one tuple per reference
        junk_for(ANSWERS, random.Random(0), wrong=[()])


def test_contrastive_training_ranks_references_above_junk(shared):
    junk = _junk("other", seed=1)
    optimizer = torch.optim.AdamW(shared.parameters_to_train(), lr=1e-2)
    losses = [train_step(shared, optimizer, PROMPTS, ANSWERS, [1.0] * 3, junk=junk)["contrastive"]
              for _ in range(8)]
    assert all(math.isfinite(v) and v > 0 for v in losses)
    assert losses[-1] < losses[0]
    assert ranking_accuracy(shared, PROMPTS, ANSWERS, junk) == 1.0


def test_from_name_wraps_its_own_model():
    disc = Discriminator.from_name("tiny-gpt2", device="cpu", **LORA)
    assert list(disc.backbone.peft_config) == ["discriminator"]
    assert disc(PROMPTS[:2], ANSWERS[:2]).shape == (2,)
    names = {id(p) for p in disc.parameters_to_train()}
    assert {id(p) for p in disc.head.parameters()} <= names


def test_notebook_03_quick_recipe_ranks_held_out_references_above_junk():
    """Notebook 03 in quick mode, on the bundled SmolLM2-135M: 20 steps of 4 references + 4 junk
    + 2 scored generator samples; the held-out ranking accuracy (24 prompts x 4 junk kinds) must
    reach 0.8. The notebook only prints this check; this is the hard one."""
    from lab.data import load_examples
    from lab.generator import sample
    from lab.models import load
    from lab.rewards import Reward

    lab.set_seed(0)  # the order of the notebook: seed, load, adapters, junk demo, samples, training
    model, tokenizer = load("smollm2-135m", device="cpu", verbose=False)
    model = add_lora(model, "generator", r=8, alpha=16, dropout=0.05)
    disc = Discriminator(model, tokenizer, lora=dict(r=8, alpha=16, dropout=0.05))
    train = load_examples("bundled", split="train")
    heldout = load_examples("bundled", split="heldout")
    rng = random.Random(0)
    answers = [e.completion for e in train]
    for kind in JUNK_KINDS:  # the notebook's junk demo draws from rng
        make_junk(train[1].completion, answers, kind, rng)
    reward = Reward({"semantic": 0.7, "perplexity": 0.3}, model=model, tokenizer=tokenizer)
    rng.shuffle(train)
    eval_rows = heldout[::3]  # 24 prompts
    picked = train[:4] + eval_rows[:4]
    samples = sample(model, tokenizer, [e.prompt for e in picked], k=2, max_new_tokens=32)
    refs = [e.completion for e in picked[:4] for _ in range(2)]
    scored = reward(samples.prompts[:8], samples.completions[:8], references=refs).total
    train_samples = list(zip(samples.prompts[:8], samples.completions[:8], scored))

    steps, batch = 20, 4
    easier = [kind for kind in JUNK_KINDS if kind != "other"]
    optimizer = torch.optim.AdamW(disc.parameters_to_train(), lr=1e-3)
    model.train()
    for step in range(steps):
        rows = [train[(step * batch + i) % len(train)] for i in range(batch)]
        extra = [train_samples[(2 * step + i) % len(train_samples)] for i in range(2)]
        kinds = ["other" if i % 2 == 0 else easier[(step * batch // 2 + i // 2) % len(easier)] for i in range(batch)]
        junk = [make_junk(e.completion, answers, kind, rng) for e, kind in zip(rows, kinds)]
        train_step(disc, optimizer, prompts=[e.prompt for e in rows] + [p for p, _, _ in extra],
                   completions=[e.completion for e in rows] + [c for _, c, _ in extra],
                   targets=[1.0] * batch + [r for _, _, r in extra], junk=junk, junk_target=0.0)
    model.eval()

    hrng = random.Random(1)
    prompts = [e.prompt for e in eval_rows]
    references = [e.completion for e in eval_rows]
    per_kind = {kind: ranking_accuracy(disc, prompts, references,
                                       [make_junk(r, references, kind, hrng) for r in references])
                for kind in JUNK_KINDS}
    accuracy = sum(per_kind.values()) / len(per_kind)
    assert accuracy >= 0.8, per_kind
