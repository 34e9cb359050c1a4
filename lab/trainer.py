"""``HybridTrainer``: each step an SFT phase on the reference answers and a REINFORCE phase
on the generator's own samples, with a discriminator as critic, baseline or adversary.

One frozen backbone serves three roles: the generator (LoRA adapter ``generator``), the
reference model for the perplexity reward and the KL penalty (adapters disabled), and the
discriminator (adapter ``discriminator`` + a scalar head), unless the config names a
separate discriminator model. The trainer knows no reward internals: any callable that
returns a :class:`lab.rewards.RewardOutput` can be passed in.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from lab import advantages as adv
from lab import checkpoint, discriminator, generator, models, objective
from lab.config import HybridConfig
from lab.data import Example, load_examples
from lab.discriminator import Discriminator
from lab.guards import finite_update, stop_on_signals
from lab.tensors import encode
from lab.seeding import set_seed
from lab.metrics import distinct_n

Callback = Callable[["HybridTrainer", dict], None]


class HybridTrainer:
    """Train a LoRA generator with SFT + lambda * (REINFORCE + KL - entropy).

    >>> trainer = HybridTrainer(HybridConfig(model="tiny-gpt2"))   # doctest: +SKIP
    >>> history = trainer.run(steps=20)                             # doctest: +SKIP
    """

    def __init__(self, config: HybridConfig, examples: list[Example] | None = None,
                 reward=None, model=None, tokenizer=None, verbose: bool = True):
        self.config = config
        set_seed(config.seed)
        self.device = models.pick_device(config.device)
        if model is None:
            model, tokenizer = models.load(config.model, self.device, verbose=verbose)
        lora = dict(r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout)
        self.model = models.add_lora(model, "generator", **lora)
        models.disable_dropout(self.model)  # train mode then differs from eval only by LoRA dropout
        self.tokenizer = tokenizer
        if config.discriminator_model:
            self.disc = Discriminator.from_name(config.discriminator_model, self.device,
                                                top_layers=config.discriminator_top_layers, **lora)
        else:
            self.disc = Discriminator(self.model, tokenizer, lora=lora,
                                      top_layers=config.discriminator_top_layers).to(self.device)
        models.disable_dropout(self.disc.backbone)  # a separate discriminator model too
        self.model.set_adapter("generator")
        self.examples = examples or load_examples(
            config.dataset, "train", tokenizer=tokenizer if config.chat_template else None)
        if reward is None:
            from lab.rewards import Reward

            reward = Reward(config.reward_weights, model=self.model, tokenizer=tokenizer)
        self.reward = reward
        self.gen_params = generator.generator_parameters(self.model)
        self.opt_gen = torch.optim.AdamW(self.gen_params, lr=config.lr)
        self.opt_disc = torch.optim.AdamW(self.disc.parameters_to_train(), lr=config.lr_discriminator)
        self.step_count = 0
        self.ema_baseline: float | None = None
        self.critic_accuracy: float | None = None  # running pairwise accuracy of the critic
        self.rng = random.Random(config.seed)  # junk negatives
        self.rows: list[dict] = []
        self.sample_rows: list[dict] = []
        self.nonfinite_in_a_row = 0  # steps in a row that skipped an update (lab.guards.finite_update)
        self.stop_reason: str | None = None  # why the last run() ended early: "request", "SIGTERM" ...
        self._stop = False

    # --- data -------------------------------------------------------------------------
    def batch(self, step: int) -> list[Example]:
        """The ``B`` examples of ``step`` (1-based): a seeded shuffle per epoch, so any step's
        batch is known from the step number alone (exact resume)."""
        size, n = self.config.prompts_per_step, len(self.examples)
        picked = []
        for position in range((step - 1) * size, step * size):
            epoch, index = divmod(position, n)
            order = list(range(n))
            random.Random(self.config.seed * 100_003 + epoch).shuffle(order)
            picked.append(self.examples[order[index]])
        return picked

    # --- one step ---------------------------------------------------------------------
    def step(self) -> dict:
        """One training step; returns (and records) its history row."""
        cfg, row, times = self.config, {}, {}
        self.step_count += 1
        row["step"], row["mode"] = self.step_count, cfg.mode
        batch = self.batch(self.step_count)
        prompts = [e.prompt for e in batch]
        references = [e.completion for e in batch]
        self.model.train()
        use_rl = cfg.mode in ("rl", "hybrid")

        if use_rl:
            # 1. sample B prompts x k responses in one batched generate
            t0 = time.perf_counter()
            self.model.set_adapter("generator")
            samples = generator.sample(
                self.model, self.tokenizer, prompts, k=cfg.samples_per_prompt,
                max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                max_prompt_tokens=cfg.max_prompt_tokens)
            refs = [r for r in references for _ in range(cfg.samples_per_prompt)]  # (N,)
            times["time_sample"] = time.perf_counter() - t0

            # 2. score: reward parts and the weighted total, on the completions only
            t0 = time.perf_counter()
            scored = self.reward(samples.prompts, samples.completions, references=refs)
            reward = torch.tensor(scored.total, dtype=torch.float32)  # (N,)
            times["time_reward"] = time.perf_counter() - t0
            if not bool(torch.isfinite(reward).all()):  # nothing learns from it: skip the step's updates
                row.update(reward=float("nan"), nonfinite="reward", skipped_updates=1)
                return self._finish(row, times, self._lambda())

            # 3. discriminator update: regress the reward (+ rank reference above junk)
            t0 = time.perf_counter()
            critic = self._discriminator_update(samples.prompts, samples.completions, reward,
                                                prompts, references, row)  # (N,)
            times["time_disc"] = time.perf_counter() - t0

            # 4. advantages: what phase B maximises, minus the baseline
            target = self._rl_target(reward, critic)  # (N,)
            advantage, base = adv.advantages(target, cfg.baseline, cfg.samples_per_prompt,
                                             ema=self.ema_baseline, critic=critic, scale=cfg.scale_rewards)
            self.ema_baseline = adv.ema_update(self.ema_baseline, target, cfg.ema_decay)
            self._record_rewards(row, scored, reward, critic, base, advantage, samples)
        else:
            samples = advantage = None

        # 5-6. generator update: SFT + lambda * (policy loss + beta * KL - eta * entropy), clipped
        t0 = time.perf_counter()
        lam = self._lambda()
        row.update(self._update_generator(prompts, references, samples, advantage, lam))
        times["time_gen"] = time.perf_counter() - t0

        return self._finish(row, times, lam)

    def _finish(self, row: dict, times: dict, lam: float) -> dict:
        """7. one history row; counts steps in a row that skipped an update (non-finite values)."""
        row.update(times)
        row["lambda"] = lam
        row["step_time"] = sum(times.values())
        if row.get("d_skipped"):
            row["nonfinite"] = row.get("nonfinite") or "discriminator"
        if row.get("skipped_updates"):
            row["nonfinite"] = row.get("nonfinite") or "generator"
        self.nonfinite_in_a_row = self.nonfinite_in_a_row + 1 if row.get("nonfinite") else 0
        self.rows.append(row)
        return row

    def _discriminator_update(self, prompts, completions, reward, batch_prompts, references, row):
        """One optimizer step of the discriminator (:func:`lab.discriminator.train_step`):
        regress the samples' reward, and with ``mse+contrastive`` rank each reference above a
        junk answer. Returns its pre-update predictions for the samples (N,)."""
        cfg = self.config
        self.disc.train()
        junk, ranked = None, 0
        if cfg.discriminator_loss == "mse+contrastive":  # references first: junk[i] ranks below row i
            junk, ranked = discriminator.junk_for(references, self.rng), len(references)
            prompts, completions = list(batch_prompts) + list(prompts), list(references) + list(completions)
            reward = torch.cat([torch.full((ranked,), float("nan")), reward])  # (B + N,) NaN: ranked only
        out = discriminator.train_step(self.disc, self.opt_disc, prompts, completions, reward, junk=junk,
                                       contrastive_weight=cfg.contrastive_weight)
        critic, reward = out["scores"][ranked:].float().cpu(), reward[ranked:]  # (N,) the samples' rows
        accuracy = adv.pairwise_accuracy(critic, reward, k=cfg.samples_per_prompt)  # within each prompt
        if accuracy == accuracy:
            prev = self.critic_accuracy
            self.critic_accuracy = accuracy if prev is None else 0.8 * prev + 0.2 * accuracy
        row.update(d_loss=out["loss"], d_mse=out["mse"], d_contrastive=out["contrastive"],
                   d_accuracy=accuracy, d_pred=float(critic.mean()), d_skipped=int(out["skipped"]))
        return critic

    def _rl_target(self, reward: torch.Tensor, critic: torch.Tensor) -> torch.Tensor:
        """The signal phase B maximises: the reward, the discriminator's score, or a mix."""
        cfg = self.config
        if cfg.reward_source == "discriminator":
            return critic.clone()
        if cfg.reward_source == "mix":
            return (1 - cfg.reward_mix) * reward + cfg.reward_mix * critic
        return reward

    def _lambda(self) -> float:
        cfg = self.config
        if cfg.mode == "sft":
            return 0.0
        if cfg.mode == "rl":
            return 1.0
        return adv.lambda_at(self.step_count, cfg.lambda_schedule, cfg.lambda_rl,
                             cfg.lambda_warmup_steps, self.critic_accuracy)

    def _update_generator(self, prompts, references, samples, advantage, lam) -> dict:
        """Optimizer step(s) of the generator (:func:`lab.objective.generator_loss`): one pass
        over the batch, or with ``policy_loss="ppo"`` ``ppo_epochs`` passes over
        ``ppo_minibatches`` minibatches of prompts against the sampling policy's log-probs.
        Returns the history entries: each term averaged over the first epoch's minibatches
        (what the step computed at the sampling policy), ``clip_frac`` and ``approx_kl`` over
        every pass."""
        cfg = self.config
        self.model.set_adapter("generator")
        use_rl = samples is not None and lam > 0
        if samples is not None:  # the prompts exactly as the sampler saw them
            prompt_ids = samples.input_ids[::samples.k, :samples.prompt_len]  # (B, P)
            prompt_mask = samples.attention_mask[::samples.k, :samples.prompt_len]  # (B, P)
        else:
            prompt_ids, prompt_mask = encode(self.tokenizer, prompts, cfg.max_prompt_tokens, self.device)  # (B, P)
        responses = None
        if use_rl:
            response = samples.input_ids[:, samples.prompt_len:].tolist()  # (N, T)
            responses = [tokens[:max(n, 1)] for tokens, n in zip(response, samples.lengths.tolist())]
        batch = objective.GeneratorBatch(
            prompt_ids, prompt_mask,
            generator.answer_tokens(self.tokenizer, references) if cfg.mode in ("sft", "hybrid") else None,
            responses, advantage, k=samples.k if use_rl else 1)
        ppo = use_rl and cfg.policy_loss == "ppo"
        epochs, parts = (cfg.ppo_epochs, cfg.ppo_minibatches) if ppo else (1, 1)
        if ppo and (epochs > 1 or parts > 1):  # later passes compare with the policy that sampled
            batch.old_logprobs = objective.sampling_logprobs(self.model, batch, cfg.temperature,
                                                             self.tokenizer.pad_token_id)  # (N, T)
        passes = []
        for epoch in range(epochs):
            for prompt_index in torch.arange(len(prompts)).tensor_split(parts):
                part = batch if parts == 1 else batch.select(prompt_index.tolist())
                loss, logs = objective.generator_loss(self.model, part, cfg, lam, self.tokenizer.pad_token_id)
                stepped, logs["grad_norm"] = finite_update(self.opt_gen, self.gen_params, loss, cfg.max_grad_norm)
                passes.append(dict(logs, loss=loss.item(), epoch=epoch, skipped=not stepped))
        first = [p for p in passes if p["epoch"] == 0]
        out = {key: sum(p[key] for p in first) / len(first) for key in first[0] if key not in ("epoch", "skipped")}
        out["skipped_updates"] = sum(p["skipped"] for p in passes)
        for key in ("clip_frac", "approx_kl"):
            if key in first[0]:
                out[key] = sum(p[key] for p in passes) / len(passes)
        return out

    def _record_rewards(self, row, scored, reward, critic, base, advantage, samples) -> None:
        row["reward"], row["reward_std"] = float(reward.mean()), float(reward.std(unbiased=False))
        for name, values in scored.parts.items():
            row[f"reward_{name}"] = sum(values) / len(values)
        row.update(baseline=float(base.mean()), adv_mean=float(advantage.mean()),
                   adv_std=float(advantage.std(unbiased=False)),
                   response_len=float(samples.lengths.float().mean()),
                   distinct_1=distinct_n(samples.completions, 1),
                   distinct_2=distinct_n(samples.completions, 2), sample=samples.completions[0])
        for i, (prompt, completion) in enumerate(zip(samples.prompts, samples.completions)):
            parts = {f"reward_{n}": v[i] for n, v in scored.parts.items()}
            self.sample_rows.append(dict(step=self.step_count, prompt=prompt, completion=completion,
                                         reward=float(reward[i]), d_pred=float(critic[i]), **parts))

    # --- the run loop -------------------------------------------------------------------
    def run(self, steps: int | None, callbacks: list[Callback] = (), out_dir: str | Path | None = None,
            progress: bool = True) -> pd.DataFrame:
        """Run ``steps`` more steps (``None``: until stopped); returns the whole history.

        Each callback is called as ``callback(trainer, row)`` after every step.
        :meth:`request_stop` (e.g. from a widget's Stop button), SIGINT (Ctrl-C, a notebook
        interrupt) and SIGTERM end the run after the current step (``stop_reason`` says
        which). With ``out_dir``, checkpoints go there every ``checkpoint_every`` steps and at
        the end. After ``max_nonfinite_steps`` steps in a row that had to skip an update
        (non-finite reward, loss or gradient) the run saves the last good state and raises
        ``FloatingPointError``.
        """
        from tqdm.auto import tqdm

        self._stop, self.stop_reason = False, None
        every, limit = self.config.checkpoint_every, self.config.max_nonfinite_steps
        with stop_on_signals(self.request_stop), tqdm(total=steps, disable=not progress,
                                                      desc=f"{self.config.mode} run") as bar:
            done = 0
            while steps is None or done < steps:
                row = self.step()
                done += 1
                bar.update(1)
                bar.set_postfix({k: round(row[k], 3) for k in ("reward", "loss") if k in row})
                for callback in callbacks:
                    callback(self, row)
                if self.nonfinite_in_a_row >= limit:
                    where = f"; {self.save(out_dir)} holds the last good state" if out_dir is not None else ""
                    raise FloatingPointError(
                        f"{limit} steps in a row had non-finite values ({row['nonfinite']}) and skipped their "
                        f"updates{where}. Lower lr, raise max_grad_norm clipping, or check the reward.")
                if out_dir is not None and every and self.step_count % every == 0:
                    self.save(out_dir)
                if self._stop:
                    break
        if out_dir is not None:
            self.save(out_dir)
        return self.history

    def request_stop(self, reason: str = "request") -> None:
        """Ask :meth:`run` to return after the step in progress (thread-safe)."""
        self.stop_reason = reason
        self._stop = True

    @property
    def history(self) -> pd.DataFrame:
        """One row per step so far."""
        return pd.DataFrame(self.rows)

    @property
    def samples(self) -> pd.DataFrame:
        """Every sampled response with its reward parts and the critic's prediction."""
        return pd.DataFrame(self.sample_rows)

    # --- checkpoints --------------------------------------------------------------------
    def save(self, out_dir: str | Path) -> Path:
        """Write a checkpoint atomically under ``out_dir/checkpoints``; returns its folder."""
        return checkpoint.save(self, Path(out_dir))

    @classmethod
    def resume(cls, path: str | Path, **kwargs) -> "HybridTrainer":
        """Rebuild a trainer from a run folder (its latest checkpoint) or a checkpoint folder."""
        return checkpoint.load(cls, Path(path), **kwargs)
