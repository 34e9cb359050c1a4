"""TRL's ``GRPOTrainer`` as a side of the benchmark, configured to do the kit's work.

Matched to the kit side (``lab.config.preset("bench")``, whose values are read here, so the
two cannot drift apart):

| what | kit (``HybridTrainer``) | TRL (``GRPOTrainer``) |
| --- | --- | --- |
| model | ``lab.models.load(name, "cpu", config.dtype)``: ``auto``, bf16 on CPUs with AMX/AVX512-BF16, else fp32 | the same weights in the same dtype (``bf16=False``: no autocast on top) |
| LoRA | ``lab.models.add_lora``: r=8, alpha=16, dropout 0, ``lora_targets`` | the same call, passed in as a ``PeftModel`` |
| prompts | ``HybridTrainer.batch(step)``: B per step, seeded order | the same B prompts per step, same order (``shuffle_dataset=False``) |
| reward | ``Reward(config.reward_weights, model=policy)`` | the same ``Reward``, through ``as_trl()`` |
| sampling | T=0.7, top-p 0.9, 32 new tokens | ``temperature``, ``top_p``, ``top_k=0``, ``max_completion_length`` alike |
| samples / step | B=4 prompts x k=2 | ``per_device_train_batch_size=8``, ``num_generations=2``, one micro-batch |
| objective | SFT + lambda * REINFORCE (+ a critic update) | GRPO's clipped loss (``loss_type`` TRL's default), ``beta=0``: no reference pass |
| optimiser | AdamW lr 1e-4, clip 1.0 | AdamW lr 1e-4 constant, ``max_grad_norm=1.0`` |
| dropout | off (``disable_dropout``) | off (``disable_dropout=True``) |

Not the kit's, TRL's as shipped: ``gradient_checkpointing`` is turned off (TRL's default is
on; the kit does not checkpoint, and on this CPU it only costs time). The perplexity reward
scores with the policy's adapters disabled, as the kit's does (``--reward-base copy``: a
separate frozen copy of the base LM instead, the layout of a self-contained reward function).

Timing: ``trainer.train()`` runs ``warmup + steps`` optimizer steps; a callback takes the
wall clock and the process CPU time at the end of each step, so a step's time is
everything TRL does between two step ends (data, rollout, reward, loss, backward, clip,
optimizer step, its logging). Phases: ``sample`` = ``GRPOTrainer._generate``, ``reward`` =
``_calculate_rewards``, ``gen`` = the rest of the step, ``disc`` = 0 (no critic).

Run alone: ``python benchmarks/trl_side.py --steps 2`` (one JSON row a step).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone, no install needed

from lab import models
from lab.core.seeding import set_seed


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def no_checkpointing(config_class) -> str:
    """The name of the activation-checkpointing switch: ``activation_checkpointing`` in
    transformers >= 5.24, ``gradient_checkpointing`` (its deprecated alias there) before."""
    fields = config_class.__dataclass_fields__
    return "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"


def kit_order(config, examples, steps: int) -> list:
    """The examples the kit trains on in steps 1..``steps``, in order: ``HybridTrainer.batch``
    itself (it reads only ``config`` and ``examples``), so both sides see the same prompts."""
    from lab.trainer import HybridTrainer

    view = SimpleNamespace(config=config, examples=examples)
    return [e for step in range(1, steps + 1) for e in HybridTrainer.batch(view, step)]


class TRLSide:
    """TRL's GRPOTrainer on the kit's model, LoRA, prompts, reward and sampling: ``run()`` -> rows."""

    def __init__(self, model_name: str = "smollm2-135m", max_new_tokens: int = 32, seed: int = 0,
                 prompts_per_step: int = 4, samples_per_prompt: int = 2, total_steps: int = 9,
                 reward_base: str = "shared", verbose: bool = False, device: str = "cpu"):
        from transformers import PrinterCallback, TrainerCallback
        from transformers.utils import logging as hf_logging

        from lab.config import preset
        from lab.data import load_examples
        from lab.rewards import Reward
        from lab.integrations.trl import require_trl, to_dataset

        GRPOConfig, GRPOTrainer = require_trl()
        if not verbose:
            hf_logging.set_verbosity_error()
        config = preset("bench", model=model_name, device=device, seed=seed, max_new_tokens=max_new_tokens,
                        prompts_per_step=prompts_per_step, samples_per_prompt=samples_per_prompt)
        set_seed(seed)
        model, tokenizer = models.load(model_name, device, config.dtype, verbose=verbose)  # the kit's dtype
        self.policy = models.add_lora(model, "generator", r=config.lora_r, alpha=config.lora_alpha,
                                      dropout=config.lora_dropout)
        self.base = None
        if reward_base == "copy":  # a self-contained reward: its own frozen base LM
            self.base, _ = models.load(model_name, device, config.dtype, verbose=False)
            self.base.eval().requires_grad_(False)
        elif reward_base != "shared":
            raise ValueError(f"reward_base must be 'shared' or 'copy', got {reward_base!r}")
        self.reward = Reward(config.reward_weights, model=self.base or self.policy, tokenizer=tokenizer)
        examples = kit_order(config, load_examples(config.dataset, "train"), total_steps)

        self.out_dir = tempfile.mkdtemp(prefix="bench-trl-")
        args = GRPOConfig(
            output_dir=self.out_dir, max_steps=total_steps, seed=seed,
            per_device_train_batch_size=config.samples_per_step, gradient_accumulation_steps=1,
            num_generations=config.samples_per_prompt, shuffle_dataset=False,
            max_completion_length=config.max_new_tokens, temperature=config.temperature, top_p=config.top_p,
            top_k=0, beta=0.0, learning_rate=config.lr, lr_scheduler_type="constant", weight_decay=0.01,
            max_grad_norm=config.max_grad_norm, disable_dropout=True, **{no_checkpointing(GRPOConfig): False},
            use_cpu=device == "cpu", bf16=False, fp16=False, logging_steps=1, save_strategy="no", report_to="none",
            disable_tqdm=True, dataloader_num_workers=0)
        self.rows: list[dict] = []
        self.phase = {"time_sample": 0.0, "time_reward": 0.0, "response_len": float("nan")}
        side = self

        class StepClock(TrainerCallback):
            """Wall and CPU time from one step's end to the next, with the phases inside."""

            def on_train_begin(self, args, state, control, **kwargs):
                self.wall, self.cpu = time.perf_counter(), cpu_seconds()

            def on_step_end(self, args, state, control, **kwargs):
                wall, cpu = time.perf_counter(), cpu_seconds()
                row = dict(step=state.global_step, step_time=wall - self.wall, cpu_s=cpu - self.cpu, **side.phase)
                row["time_disc"] = 0.0
                row["time_gen"] = row["step_time"] - row["time_sample"] - row["time_reward"]
                side.rows.append(row)
                side.phase = {"time_sample": 0.0, "time_reward": 0.0, "response_len": float("nan")}
                self.wall, self.cpu = wall, cpu

        self.trainer = GRPOTrainer(model=self.policy, processing_class=tokenizer, args=args,
                                   reward_funcs=self.reward.as_trl(), train_dataset=to_dataset(examples),
                                   callbacks=[StepClock()])
        self.trainer.remove_callback(PrinterCallback)  # stdout carries the JSON only
        self._time(self.trainer, "_generate", "time_sample")
        self._time(self.trainer, "_calculate_rewards", "time_reward")

    def _time(self, trainer, method: str, phase: str) -> None:
        """Wrap ``trainer.<method>`` to add its wall time to the step's ``phase``."""
        original = getattr(trainer, method)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            out = original(*args, **kwargs)
            self.phase[phase] += time.perf_counter() - t0
            if method == "_generate":  # (prompt ids, completion ids, ...): mean new tokens
                self.phase["response_len"] = sum(map(len, out[1])) / len(out[1])
            return out

        setattr(trainer, method, timed)

    def run(self) -> list[dict]:
        """Train ``total_steps`` steps; returns one row per step (times in seconds)."""
        try:
            self.trainer.train()
        finally:
            shutil.rmtree(self.out_dir, ignore_errors=True)
        return self.rows

    def resident_parameters(self) -> int:
        """Policy backbone + LoRA, the base copy if any, TRL's reference model if any, MiniLM."""
        from naive_sketch import resident_parameters

        resident = [self.trainer.model, models.load_embedder("auto")]
        resident += [m for m in (self.base, getattr(self.trainer, "ref_model", None)) if m is not None]
        return resident_parameters(*resident)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="TRL's GRPOTrainer on the kit's setup for a few steps.")
    parser.add_argument("--model", default="smollm2-135m", help="model name (lab.models); default smollm2-135m")
    parser.add_argument("--steps", type=int, default=2, help="steps to run (default 2)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="response length cap (default 32)")
    parser.add_argument("--reward-base", choices=("shared", "copy"), default="shared",
                        help="perplexity reward: the policy with adapters off (shared) or a frozen copy")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    side = TRLSide(args.model, args.max_new_tokens, args.seed, total_steps=args.steps,
                   reward_base=args.reward_base, verbose=True)
    for row in side.run():
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}))
    print(f"resident parameters: {side.resident_parameters() / 1e6:.1f} M")


if __name__ == "__main__":
    main()
