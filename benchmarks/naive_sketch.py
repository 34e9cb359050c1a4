"""The original sketch's training loop, rendered faithfully: the naive baseline of the benchmark.

This is *not* the kit. It reproduces, step by step, the loop described in
``design.md`` ("The sketch's loop, step by step"), with its known defects kept on
purpose (each is marked ``# sketch defect N: ...``, numbered as in design.md's list),
neither slowed down nor optimised:

1. the generator (LM + LoRA r=8, alpha=16, dropout=0.05, causal-LM task) samples ONE
   response (top-p 0.9, temperature 0.7) and decodes the whole output, prompt included;
2. semantic = MiniLM cosine(decoded, target), each text encoded by its own call;
   ppl_reward = 1 / (1 + exp(CE)) of the decoded text under a frozen copy of the LM;
   combined = 0.7 * semantic + 0.3 * ppl_reward;
3. the discriminator (a separate sequence-classification copy, 1 label, + LoRA) reads
   prompt + "\\n\\n### Response:\\n" + decoded text; MSE against combined; AdamW (1e-4);
4. generator loss = CE(prompt + target) + 0.5 * (-(combined - b) * (-CE(prompt)));
   AdamW (5e-5) over the generator's parameters;
5. b = 0.9 * b + 0.1 * combined (b starts at 0).

Three LM backbones stay resident (generator, discriminator, frozen base) plus MiniLM.

    >>> sketch = NaiveSketch("smollm2-135m", max_new_tokens=32)   # doctest: +SKIP
    >>> row = sketch.step()                                       # doctest: +SKIP
    >>> row["time_sample"], row["combined"]                       # doctest: +SKIP

Run alone: ``python benchmarks/naive_sketch.py --steps 3``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone, no install needed

import torch
import torch.nn.functional as F

from lab import models
from lab.data import format_prompt, load_examples
from lab.core.seeding import set_seed

SEMANTIC_WEIGHT, PPL_WEIGHT = 0.7, 0.3  # combined = 0.7 * semantic + 0.3 * ppl_reward
RL_WEIGHT = 0.5  # generator loss = SFT + 0.5 * RL
LR_GEN, LR_DISC = 5e-5, 1e-4
BASELINE_DECAY = 0.9  # b = 0.9 * b + 0.1 * combined
LORA = dict(r=8, lora_alpha=16, lora_dropout=0.05)


def resident_parameters(*modules: torch.nn.Module) -> int:
    """Sum of ``numel`` over the parameters of ``modules``, each tensor counted once
    (tied or shared weights, e.g. one backbone under two adapters, are one tensor)."""
    seen, total = set(), 0
    for module in modules:
        for p in module.parameters():
            key = (p.data_ptr(), tuple(p.shape), tuple(p.stride()))
            if key not in seen:
                seen.add(key)
                total += p.numel()
    return total


class NaiveSketch:
    """The sketch's per-sample loop: one prompt, one sample, four models, each step."""

    def __init__(self, model_name: str = "smollm2-135m", max_new_tokens: int = 32, seed: int = 0,
                 verbose: bool = False, device: str = "cpu"):
        from peft import LoraConfig, TaskType, get_peft_model
        from transformers import AutoModelForSequenceClassification

        set_seed(seed)
        self.max_new_tokens, self.device = max_new_tokens, torch.device(device)
        # Alpaca-layout rows, one per step: ds[step % len(ds)] after a seeded shuffle.
        self.ds = load_examples("bundled", "train")
        random.Random(seed).shuffle(self.ds)

        # sketch defect 6: three separate backbones stay resident (generator, discriminator,
        # frozen base), plus MiniLM; the kit shares one backbone for all three roles.
        # -- generator: the LM + LoRA (causal-LM task)
        gen, self.tokenizer = models.load(model_name, self.device, "float32", verbose=verbose)  # the sketch: fp32
        conv1d = gen.config.model_type == "gpt2"  # GPT-2's Conv1D stores W transposed
        self.generator = get_peft_model(gen, LoraConfig(
            **LORA, bias="none", task_type=TaskType.CAUSAL_LM,
            target_modules=models.lora_targets(gen), fan_in_fan_out=conv1d))
        # -- discriminator: a separate sequence-classification copy, 1 label, + LoRA (SEQ_CLS)
        choice = models.resolve(model_name)
        if choice.source == "random":  # tiny-gpt2 (harness tests): same random weights as load()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                config = copy.deepcopy(gen.config)
                config.num_labels = 1
                disc = AutoModelForSequenceClassification.from_config(config)
        else:
            location = models.smollm2_dir() if choice.source == "bundled" else choice.location
            disc = AutoModelForSequenceClassification.from_pretrained(
                location, num_labels=1, local_files_only=choice.source == "hf-cache")
        disc.config.pad_token_id = self.tokenizer.pad_token_id
        disc.to(self.device)
        self.discriminator = get_peft_model(disc, LoraConfig(
            **LORA, bias="none", task_type=TaskType.SEQ_CLS,
            target_modules=models.lora_targets(disc), fan_in_fan_out=conv1d))
        # -- base: a third, frozen copy of the LM for the perplexity reward
        self.base, _ = models.load(model_name, self.device, "float32", verbose=False)
        self.base.eval()
        for p in self.base.parameters():
            p.requires_grad_(False)
        # -- MiniLM (SentenceTransformer) for the semantic reward
        self.embedder = models.load_embedder("auto", device=str(self.device))

        self.generator.train()
        self.discriminator.train()
        # "over all generator parameters": the frozen ones get no grad, so only LoRA moves.
        self.opt_gen = torch.optim.AdamW(self.generator.parameters(), lr=LR_GEN)
        self.opt_disc = torch.optim.AdamW(self.discriminator.parameters(), lr=LR_DISC)
        self.baseline = 0.0  # b starts at 0
        self.step_count = 0

    def resident_parameters(self) -> int:
        """Parameters of every resident model (3 backbones + 2 LoRA + head + MiniLM), shared counted once."""
        return resident_parameters(self.generator, self.discriminator, self.base, self.embedder)

    # --- the reward -------------------------------------------------------------------
    def compute_reward(self, generated_text: str, target_text: str) -> tuple[float, float, float]:
        """(semantic, ppl_reward, combined) of one decoded text."""
        from sentence_transformers import util

        # semantic: MiniLM cosine, each text encoded by its own call
        emb_gen = self.embedder.encode(generated_text, convert_to_tensor=True, show_progress_bar=False)
        emb_tgt = self.embedder.encode(target_text, convert_to_tensor=True, show_progress_bar=False)
        semantic = util.cos_sim(emb_gen, emb_tgt).item()
        # perplexity under the frozen base copy
        enc = self.tokenizer(generated_text, return_tensors="pt").to(self.device)
        with torch.no_grad():
            ce = self.base(**enc, labels=enc["input_ids"]).loss
        ppl = math.exp(ce.item())
        # sketch defect 4: 1/(1+ppl) is ~0.01-0.05 for typical output, almost no signal.
        ppl_reward = 1.0 / (1.0 + ppl)
        return semantic, ppl_reward, SEMANTIC_WEIGHT * semantic + PPL_WEIGHT * ppl_reward

    # --- one step ---------------------------------------------------------------------
    def step(self) -> dict:
        """One sketch step on ``ds[step % len(ds)]``; returns losses, rewards and phase times."""
        row = self.ds[self.step_count % len(self.ds)]
        self.step_count += 1
        prompt = format_prompt(row.instruction, row.input)  # "### Prompt:\n...\n\n### Response:\n"
        target = row.completion
        times = {}

        # 1. sample ONE response
        t0 = time.perf_counter()
        inputs = self.tokenizer(prompt, return_tensors="pt").to(self.device)
        out = self.generator.generate(
            **inputs, max_new_tokens=self.max_new_tokens, do_sample=True, top_p=0.9,
            temperature=0.7, pad_token_id=self.tokenizer.pad_token_id)
        new_tokens = out.shape[1] - inputs["input_ids"].shape[1]
        # sketch defect 2: decode(out[0]) keeps the prompt, so the reward and the
        # discriminator below score the prompt text as well as the response.
        generated_text = self.tokenizer.decode(out[0], skip_special_tokens=True)
        times["time_sample"] = time.perf_counter() - t0

        # 2. reward: 0.7 * semantic + 0.3 * ppl_reward
        t0 = time.perf_counter()
        semantic, ppl_reward, combined = self.compute_reward(generated_text, target)
        times["time_reward"] = time.perf_counter() - t0

        # 3. discriminator: regress the reward (MSE), one AdamW step
        t0 = time.perf_counter()
        # (defect 2 again: generated_text already holds the prompt and its "### Response:",
        # so the discriminator reads the prompt twice.)
        disc_inputs = self.tokenizer(prompt + "\n\n### Response:\n" + generated_text,
                                     return_tensors="pt").to(self.device)
        disc_pred = self.discriminator(**disc_inputs).logits.squeeze()  # ()
        d_loss = F.mse_loss(disc_pred, torch.tensor(combined, dtype=disc_pred.dtype, device=self.device))
        self.opt_disc.zero_grad()
        d_loss.backward()
        self.opt_disc.step()
        # sketch defect 5: the discriminator's prediction is never used (not as the
        # baseline, not as a reward); the baseline is the EMA of step 5.
        times["time_disc"] = time.perf_counter() - t0

        # 4. generator: SFT + 0.5 * REINFORCE, one AdamW step
        t0 = time.perf_counter()
        full = self.tokenizer(prompt + target, return_tensors="pt").to(self.device)
        # sketch defect 3: the SFT labels are the whole sequence, prompt tokens included.
        sft_loss = self.generator(**full, labels=full["input_ids"]).loss
        # sketch defect 1: the "log-probability" is that of the PROMPT (inputs), not of the
        # sampled response, so the update does not reinforce what was sampled.
        log_prob = -self.generator(**inputs, labels=inputs["input_ids"]).loss
        rl_loss = -(combined - self.baseline) * log_prob
        loss = sft_loss + RL_WEIGHT * rl_loss
        self.opt_gen.zero_grad()
        loss.backward()
        self.opt_gen.step()
        times["time_gen"] = time.perf_counter() - t0

        # 5. EMA baseline
        baseline_used = self.baseline
        self.baseline = BASELINE_DECAY * self.baseline + (1 - BASELINE_DECAY) * combined

        return dict(step=self.step_count, semantic=semantic, ppl_reward=ppl_reward, combined=combined,
                    baseline=baseline_used, d_pred=disc_pred.detach().item(), d_loss=d_loss.detach().item(),
                    loss_sft=sft_loss.detach().item(), loss_rl=rl_loss.detach().item(), loss=loss.detach().item(),
                    response_len=int(new_tokens), sample=generated_text, **times,
                    step_time=sum(times.values()))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Run the sketch's naive loop for a few steps.")
    parser.add_argument("--model", default="smollm2-135m", help="model name (lab.models); default smollm2-135m")
    parser.add_argument("--steps", type=int, default=3, help="steps to run (default 3)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="response length cap (default 32)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sketch = NaiveSketch(args.model, args.max_new_tokens, args.seed, verbose=True)
    print(f"resident parameters: {sketch.resident_parameters() / 1e6:.1f} M")
    for _ in range(args.steps):
        row = sketch.step()
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}))


if __name__ == "__main__":
    main()
