"""lab.integrations.trl on tiny-gpt2, CPU: TRL's GRPOTrainer with the kit's SFT term, reward and online critic."""

import math

import pytest
import torch
from peft import PeftModel

pytest.importorskip("trl")

from lab import generator, models  # noqa: E402
from lab.discriminator import Discriminator  # noqa: E402
from lab.rewards import Reward  # noqa: E402
from lab.core.tensors import left_pad  # noqa: E402
from lab.integrations.trl import DiscriminatorReward, HybridGRPOConfig, HybridGRPOTrainer, to_dataset  # noqa: E402

LORA = dict(r=8, alpha=16, dropout=0.0)
# transformers >= 5.24 renamed gradient_checkpointing (TRL turns it on by default) to activation_checkpointing
CHECKPOINTING = ("activation_checkpointing" if "activation_checkpointing" in HybridGRPOConfig.__dataclass_fields__
                 else "gradient_checkpointing")


def grpo_config(tmp_path, **changes):
    """2 steps of 2 prompts x 2 generations, 4 new tokens, on the CPU, nothing reported or saved."""
    return HybridGRPOConfig(**{**dict(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, num_generations=2,
        max_completion_length=4, temperature=0.7, top_p=0.9, beta=0.0, learning_rate=1e-2, sft_coef=1.0,
        use_cpu=True, bf16=False, disable_dropout=True, **{CHECKPOINTING: False}, report_to=[],
        logging_steps=1, save_strategy="no", disable_tqdm=True, seed=0), **changes})


def make(tmp_path, reward_funcs, model=None, tokenizer=None, **changes):
    if model is None:  # a fresh copy: LoRA is injected into the model in place
        model, tokenizer = models.load("tiny-gpt2", "cpu", verbose=False)
    peft_config = None if isinstance(model, PeftModel) else models.lora_config(model, **LORA)
    return HybridGRPOTrainer(model=model, processing_class=tokenizer, reward_funcs=reward_funcs,
                             train_dataset=to_dataset(limit=8), peft_config=peft_config,
                             args=grpo_config(tmp_path, **changes))


def snapshot(model, lora: bool) -> dict:
    return {n: p.detach().clone() for n, p in model.named_parameters() if ("lora_" in n) == lora}


def test_two_steps_log_the_sft_term_and_move_only_lora(tmp_path):
    trainer = make(tmp_path, Reward({"rouge": 1.0, "length": 0.5}).as_trl())  # the kit's reward, unchanged
    lora, frozen = snapshot(trainer.model, lora=True), snapshot(trainer.model, lora=False)
    trainer.train()
    logged = [row for row in trainer.state.log_history if "sft_loss" in row]
    assert len(logged) == 2
    for row in logged:
        assert math.isfinite(row["sft_loss"]) and row["sft_loss"] > 0
        assert math.isfinite(row["rewards/reward/mean"])
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(after[n], p) for n, p in lora.items()), "no LoRA weight changed"
    assert all(torch.equal(after[n], p) for n, p in frozen.items()), "a frozen weight changed"


def test_sft_term_equals_the_kits_sft_loss(tmp_path):
    trainer = make(tmp_path, Reward({"length": 1.0}).as_trl())
    tok, examples = trainer.processing_class, to_dataset(limit=3)
    prompts, references = examples["prompt"], examples["references"]
    rows = [i for i in range(3) for _ in range(2)]  # k = 2 rows per prompt, as TRL batches them
    ids = [tok(text=prompts[i])["input_ids"] for i in rows]  # TRL's tokenisation of text prompts
    prompt_ids, prompt_mask = left_pad(ids, tok.pad_token_id)
    inputs = {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask,
              "sft_answer_ids": generator.answer_tokens(tok, [references[i] for i in rows])}
    with torch.no_grad():
        ours = trainer.sft_loss(trainer.model, inputs)
        kits = generator.sft_loss(trainer.model, tok, prompts, references)
    assert ours.item() == pytest.approx(kits.item(), rel=1e-5)


def test_discriminator_reward_trains_the_critic_online(tmp_path):
    model, tok = models.load("tiny-gpt2", "cpu", verbose=False)
    policy = models.add_lora(model, "generator", **LORA)
    disc = Discriminator(policy, tok, lora=LORA, top_layers=1)  # shares the policy's backbone
    policy.set_adapter("generator")
    critic = DiscriminatorReward(disc, Reward({"rouge": 1.0, "length": 0.5}), lr=1e-2)
    trainer = make(tmp_path, [critic.true_reward, critic], model=policy, tokenizer=tok,
                   reward_weights=[1.0, 0.0])  # the true reward drives GRPO; the critic is logged
    head = disc.head.weight.detach().clone()
    disc_lora = {p: p.detach().clone() for p in disc.parameters_to_train()[:-2]}
    trainer.train()
    assert not torch.equal(disc.head.weight, head), "the critic's head did not move"
    assert any(not torch.equal(p, before) for p, before in disc_lora.items()), "the critic's LoRA did not move"
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    assert all(not optimizer.state.get(p) for p in disc.parameters_to_train()), \
        "TRL's optimizer stepped the critic's parameters"
    logged = [row for row in trainer.state.log_history if "rewards/discriminator/mean" in row]
    assert len(logged) == 2
    assert all(math.isfinite(row["discriminator/mse"]) and math.isfinite(row["sft_loss"]) for row in logged)


def test_missing_reference_column_is_named(tmp_path):
    model, tok = models.load("tiny-gpt2", "cpu", verbose=False)
    with pytest.raises(ValueError, match="no column 'answer'"):
        HybridGRPOTrainer(model=model, processing_class=tok, reward_funcs=Reward({"length": 1.0}).as_trl(),
                          train_dataset=to_dataset(limit=4), peft_config=models.lora_config(model, **LORA),
                          args=grpo_config(tmp_path, reference_column="answer"))
    with pytest.raises(ValueError, match="sft_coef"):
        grpo_config(tmp_path, sft_coef=-1.0)


def test_a_trl_without_the_rollout_hook_is_one_clear_error(monkeypatch):
    from trl import GRPOTrainer

    from lab.integrations import trl as lab_trl

    monkeypatch.delattr(GRPOTrainer, lab_trl.ROLLOUT_HOOK)
    with pytest.raises(ImportError, match="tested range"):
        lab_trl.require_trl()
