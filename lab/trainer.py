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
from collections import deque
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from lab import advantages as adv
from lab import checkpoint, discriminator, generator, models, objective, rewards
from lab.runtime import distributed
from lab.variants import mixing, selfplay
from lab.config import HybridConfig
from lab.data import Example, load_examples
from lab.discriminator import Discriminator
from lab.runtime.guards import stop_on_signals
from lab.core.tensors import encode, eval_mode
from lab.core.seeding import set_seed
from lab.variants.stream import JsonlStream
from lab.core.ngrams import distinct_n

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
        self.device = distributed.setup(models.pick_device(config.device))  # launched: this process's device
        distributed.check_divisible(config.prompts_per_step,  # each process's share, and PPO's minibatches of it
                                    config.ppo_minibatches if config.policy_loss == "ppo" else 1)
        if model is not None and hasattr(model, "peft_config"):
            raise ValueError("this model already carries LoRA adapters (it trained another HybridTrainer); "
                             "load a fresh model for each trainer, e.g. lab.models.load(name)")
        if model is None:
            model, tokenizer = models.load(config.model, self.device, config.dtype, quantization=config.quantization,
                                           verbose=verbose and distributed.is_main())
        _check_context(model, config)
        lora = dict(r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout)
        self.model = models.add_lora(model, "generator", **lora)
        models.disable_dropout(self.model)  # train mode then differs from eval only by LoRA dropout
        self.tokenizer = tokenizer
        disc_lora = dict(lora, r=config.discriminator_lora_r or config.lora_r)
        disc_options = dict(top_layers=config.discriminator_top_layers, aux_head=config.discriminator_aux_weight > 0)
        if config.discriminator_model:
            self.disc = Discriminator.from_name(config.discriminator_model, self.device, **disc_options, **disc_lora)
        else:
            self.disc = Discriminator(self.model, tokenizer, lora=disc_lora, **disc_options).to(self.device)
        models.disable_dropout(self.disc.backbone)  # a separate discriminator model too
        self.model.set_adapter("generator")
        if config.mode == "selfplay":  # the frozen opponent: a third adapter on the same backbone
            selfplay.add_snapshot(self.model, **lora)
        self.examples = examples or load_examples(
            config.dataset, "train", columns=config.dataset_columns,
            tokenizer=tokenizer if config.chat_template else None)
        if reward is None:
            from lab.rewards import Reward

            reward = Reward(config.reward_weights, model=self.model, tokenizer=tokenizer,
                            corpus=config.truthfulness_corpus)
        self.reward = reward
        self._perplexity = None
        if config.discriminator_aux_weight > 0:  # the side task's target: perplexity under the base model
            from lab.rewards import Perplexity

            self._perplexity = Perplexity(self.model, tokenizer, max_prompt_tokens=config.max_prompt_tokens)
        self.queue: deque[Example] = deque()  # fed or streamed examples not trained on yet
        self.stream = JsonlStream(config.stream, tokenizer=tokenizer if config.chat_template else None) \
            if config.stream else None
        self.gen_params = generator.generator_parameters(self.model)
        self.opt_gen = torch.optim.AdamW(self.gen_params, lr=config.lr)
        self.opt_disc = torch.optim.AdamW(self.disc.parameters_to_train(), lr=config.lr_discriminator)
        self.step_count = 0
        self.ema_baseline: float | None = None
        self.critic_accuracy: float | None = None  # running pairwise accuracy of the critic
        self.rng = random.Random(config.seed + distributed.rank())  # junk negatives
        self.rows: list[dict] = []
        self.sample_rows: list[dict] = []
        self.nonfinite_in_a_row = 0  # steps in a row that skipped an update (lab.runtime.guards.finite_update)
        self.stop_reason: str | None = None  # why the last run() ended early: "request", "SIGTERM" ...
        self._stop = False
        distributed.agree((sum(p.numel() for p in self.model.parameters()), len(self.examples)), "model size, examples")
        distributed.seed_process(config.seed)  # several processes: each samples its own stream (seed + rank)

    # --- data -------------------------------------------------------------------------
    def batch(self, step: int) -> list[Example]:
        """The ``B`` examples of ``step`` (1-based) from the fixed dataset: a seeded shuffle per
        epoch, so any step's batch is known from the step number alone (exact resume)."""
        size, n = self.config.prompts_per_step, len(self.examples)
        picked = []
        for position in range((step - 1) * size, step * size):
            epoch, index = divmod(position, n)
            order = list(range(n))
            random.Random(self.config.seed * 100_003 + epoch).shuffle(order)
            picked.append(self.examples[order[index]])
        return picked

    def feed(self, examples: list[Example]) -> None:
        """Queue new examples (online learning): each is trained on once, in arrival order,
        taking up to ``1 - replay_ratio`` of a batch; the rest replays the fixed dataset."""
        self.queue.extend(examples)

    def _next_batch(self, row: dict) -> list[Example]:
        """This step's examples: the fixed dataset's batch, or queued rows (``feed``, the
        ``stream`` file) mixed with replayed anchors from it."""
        if self.stream is not None:
            self.queue.extend(distributed.from_main(self.stream.poll))  # every process queues the same rows
        anchors = self.batch(self.step_count)
        fresh_room = len(anchors) - round(len(anchors) * self.config.replay_ratio)
        fresh = [self.queue.popleft() for _ in range(min(len(self.queue), fresh_room))]
        if self.stream is not None or fresh:
            row.update(streamed=len(fresh), queued=len(self.queue))
        return fresh + anchors[:len(anchors) - len(fresh)]

    # --- one step ---------------------------------------------------------------------
    def step(self) -> dict:
        """One training step; returns (and records) its history row."""
        cfg, row, times = self.config, {}, {}
        self.step_count += 1
        row["step"], row["mode"] = self.step_count, cfg.mode
        batch = distributed.shard(self._next_batch(row))  # several processes: this one's prompts of the batch
        prompts = [e.prompt for e in batch]
        references = [e.completion for e in batch]
        self.model.train()
        samples = advantage = sft_mask = shared = None

        if cfg.mode != "sft":
            # 1. sample B prompts x k responses in one batched decode (self-play: both players)
            t0 = time.perf_counter()
            self.model.set_adapter("generator")
            options = dict(k=cfg.samples_per_prompt, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                           top_p=cfg.top_p, max_prompt_tokens=cfg.max_prompt_tokens, sampler=cfg.sampler,
                           num_beams=cfg.num_beams)
            samples = generator.sample(self.model, self.tokenizer, prompts, **options)
            if cfg.reference_in_group:  # LUFFY: the reference is one more (off-policy) member
                samples = generator.with_references(samples, self.tokenizer, references, cfg.max_new_tokens)
            texts = samples.prompts, samples.completions  # (N,) each
            if cfg.mode == "selfplay":
                opponent = selfplay.opponent_sample(self.model, self.tokenizer, prompts, **options)
                texts = samples.prompts + opponent.prompts, samples.completions + opponent.completions  # (2N,)
            times["time_sample"] = time.perf_counter() - t0

            # 2. score: reward parts and the weighted total, on the completions only; with a KL penalty
            #    the frozen base reads the samples ONCE, for the KL reference and the perplexity reward
            t0 = time.perf_counter()
            if cfg.kl_coef > 0:
                shared = objective.base_pass(self.model, samples, cfg.temperature, self.tokenizer)
            refs = [r for r in references for _ in range(samples.k)]  # (N,)
            with rewards.reading(self.reward, shared, self.model):  # its perplexity part reads the shared pass
                scored = self.reward(*texts, references=refs * (len(texts[0]) // len(refs)))
            reward = torch.tensor(scored.total, dtype=torch.float32)  # (N,) or (2N,) in self-play
            times["time_reward"] = time.perf_counter() - t0
            if not distributed.all_finite(bool(torch.isfinite(reward).all())):  # nothing learns: skip the updates
                row.update(reward=float("nan"), nonfinite="reward", skipped_updates=1)
                return self._finish(row, times, self._lambda())

            # 3. discriminator update: regress the reward (+ rank reference above junk, + side task);
            #    skipped when nothing reads its scores (config.discriminator_used)
            critic = torch.full_like(reward, float("nan"))  # (N,) or (2N,)
            if cfg.discriminator_used:
                t0 = time.perf_counter()
                critic = self._discriminator_update(*texts, reward, prompts, references, row)
                times["time_disc"] = time.perf_counter() - t0

            # 4. advantages: what phase B maximises, minus the baseline
            self.critic_accuracy = distributed.mean_value(self.critic_accuracy)  # one running state everywhere
            n = len(samples.completions)
            if cfg.mode == "selfplay":  # the referee's preference for the generator's answer
                target = discriminator.preference(critic[:n], critic[n:])  # (N,)
                row["selfplay_preference"] = float(target.mean())
                scored.total, reward, critic = scored.total[:n], reward[:n], critic[:n]
                scored.parts = {name: values[:n] for name, values in scored.parts.items()}
            else:
                target = self._rl_target(reward, critic)  # (N,)
            everyone = distributed.gather(target)  # (W * N,) every process's: the EMA is state shared by all
            ema = float(everyone.mean()) if self.ema_baseline is None else self.ema_baseline  # first step: batch mean
            advantage, base = adv.advantages(target, cfg.baseline, samples.k, ema=ema, critic=critic,
                                             scale=cfg.scale_rewards)
            self.ema_baseline = adv.ema_update(self.ema_baseline, everyone, cfg.ema_decay)
            if cfg.per_prompt_switch:  # HPT: imitate the prompts the policy fails, explore the others
                sft_mask = mixing.sft_prompts(reward, samples.k, cfg.switch_threshold)  # (B,)
                row["sft_prompt_share"] = float(sft_mask.float().mean())
            self._record_rewards(row, scored, reward, critic, base, advantage, samples, cfg.reference_in_group)

        # 5-6. generator update: SFT + lambda * (policy loss + beta * KL - eta * entropy), clipped
        t0 = time.perf_counter()
        lam, mu = self._lambda(), self._mu()
        gen_batch = self._generator_batch(prompts, references, samples, advantage, lam, sft_mask)
        if shared is not None and gen_batch.responses is not None:
            gen_batch.ref_logprobs = shared.at_temperature  # (N, T') the KL's reference, already computed
        row.update(objective.update(self.model, self.opt_gen, self.gen_params, gen_batch, cfg, lam,
                                    self.tokenizer.pad_token_id, mu))
        if cfg.mode == "selfplay" and self.step_count % cfg.selfplay_refresh == 0:
            selfplay.refresh(self.model)  # the opponent catches up
        times["time_gen"] = time.perf_counter() - t0
        return self._finish(row, times, lam)

    def _finish(self, row: dict, times: dict, lam: float) -> dict:
        """7. one history row; counts steps in a row that skipped an update (non-finite values)."""
        row.update(times)
        row["lambda"] = lam
        row["step_time"] = sum(times.values())
        row = distributed.mean_row(row)  # several processes: the mean over them, the same row everywhere
        if row.get("d_skipped"):
            row["nonfinite"] = row.get("nonfinite") or "discriminator"
        if row.get("skipped_updates"):
            row["nonfinite"] = row.get("nonfinite") or "generator"
        self.nonfinite_in_a_row = self.nonfinite_in_a_row + 1 if row.get("nonfinite") else 0
        self.rows.append(row)
        return row

    def _discriminator_update(self, prompts, completions, reward, batch_prompts, references, row):
        """One optimizer step of the discriminator (:func:`lab.discriminator.train_step`):
        regress the samples' reward, with ``mse+contrastive`` rank each reference above a junk
        answer, with ``discriminator_aux_weight`` also predict each response's perplexity.
        Returns its pre-update predictions for the samples (N,)."""
        cfg = self.config
        if cfg.freeze_discriminator_after and self.step_count > cfg.freeze_discriminator_after:
            with torch.no_grad(), eval_mode(self.disc, self.disc.backbone):  # frozen: it only judges
                critic = self.disc(prompts, completions).float().cpu()  # (N,)
            row.update(d_pred=float(critic.mean()), d_frozen=1,
                       d_accuracy=adv.pairwise_accuracy(critic, reward, k=cfg.samples_per_prompt))
            return critic
        self.disc.train()
        aux = None
        if cfg.discriminator_aux_weight > 0:  # side task: the response's mean NLL under the base model
            aux = self._perplexity.nll(prompts, completions)  # (N,), NaN for empty answers
        junk, ranked = None, 0
        if cfg.discriminator_loss == "mse+contrastive":  # references first: junk[i] ranks below row i
            junk, ranked = discriminator.junk_for(references, self.rng), len(references)
            prompts, completions = list(batch_prompts) + list(prompts), list(references) + list(completions)
            reward = torch.cat([torch.full((ranked,), float("nan")), reward])  # (B + N,) NaN: ranked only
            aux = None if aux is None else torch.cat([torch.full((ranked,), float("nan")), aux])
        out = discriminator.train_step(self.disc, self.opt_disc, prompts, completions, reward, junk=junk,
                                       contrastive_weight=cfg.contrastive_weight, aux_targets=aux,
                                       aux_weight=cfg.discriminator_aux_weight)
        critic, reward = out["scores"][ranked:].float().cpu(), reward[ranked:]  # (N,) the samples' rows
        accuracy = adv.pairwise_accuracy(critic, reward, k=cfg.samples_per_prompt)  # within each prompt
        if accuracy == accuracy:
            prev = self.critic_accuracy
            self.critic_accuracy = accuracy if prev is None else 0.8 * prev + 0.2 * accuracy
        row.update(d_loss=out["loss"], d_mse=out["mse"], d_contrastive=out["contrastive"],
                   d_accuracy=accuracy, d_pred=float(critic.mean()), d_skipped=int(out["skipped"]))
        if aux is not None:
            row["d_aux_mse"] = out["aux_mse"]
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
        """The RL weight: 0 in SFT, 1 in RL and self-play and under an ``sft_schedule`` (whose
        ``mu`` then sets the mix), else the lambda schedule."""
        cfg = self.config
        if cfg.mode == "sft":
            return 0.0
        if cfg.mode in ("rl", "selfplay") or cfg.sft_schedule != "none":
            return 1.0
        return adv.lambda_at(self.step_count, cfg.lambda_schedule, cfg.lambda_rl,
                             cfg.lambda_warmup_steps, self.critic_accuracy)

    def _mu(self) -> float | None:
        """The SFT weight of an ``sft_schedule`` (``srft``: computed in the objective from the
        policy's entropy), else None."""
        cfg = self.config
        if cfg.sft_schedule in ("none", "srft"):
            return None
        return mixing.mu_at(self.step_count, cfg.sft_schedule, cfg.mu, cfg.mu_min, cfg.mu_warmup_steps,
                            cfg.mu_decay_steps)

    def _generator_batch(self, prompts, references, samples, advantage, lam, sft_mask) -> objective.GeneratorBatch:
        """What the generator update reads: the prompts exactly as the sampler saw them, the
        SFT targets (modes with SFT), the sampled responses and their advantages."""
        cfg = self.config
        self.model.set_adapter("generator")
        use_rl = samples is not None and lam > 0
        if samples is not None:
            prompt_ids, prompt_mask = samples.prompt_tensors()  # (B, P) each
        else:
            prompt_ids, prompt_mask = encode(self.tokenizer, prompts, cfg.max_prompt_tokens, self.device)  # (B, P)
        responses = samples.responses() if use_rl else None
        targets = generator.answer_tokens(self.tokenizer, references) if cfg.mode in ("sft", "hybrid") else None
        return objective.GeneratorBatch(prompt_ids, prompt_mask, targets, responses, advantage,
                                        k=samples.k if use_rl else 1, sft_mask=sft_mask)

    def _record_rewards(self, row, scored, reward, critic, base, advantage, samples, with_reference) -> None:
        """History entries of the RL phase and one samples-log row per response. With LUFFY's
        reference member in each group, ``reward`` (and the text statistics) cover the sampled
        responses only, ``reward_reference`` the references, so arms stay comparable."""
        k = samples.k
        sampled = torch.ones(len(reward), dtype=torch.bool)  # (N,)
        if with_reference:
            sampled = (torch.arange(len(reward)) % k) != k - 1  # each group's last row is the reference
            row["reward_reference"] = float(reward[~sampled].mean())
        texts = [c for c, s in zip(samples.completions, sampled.tolist()) if s]
        row["reward"], row["reward_std"] = float(reward[sampled].mean()), float(reward[sampled].std(unbiased=False))
        for name, values in scored.parts.items():
            row[f"reward_{name}"] = float(torch.tensor(values)[sampled].mean())
        row.update(baseline=float(base.mean()), adv_mean=float(advantage.mean()),
                   adv_std=float(advantage.std(unbiased=False)),
                   response_len=float(samples.lengths[sampled].float().mean()),
                   distinct_1=distinct_n(texts, 1), distinct_2=distinct_n(texts, 2), sample=texts[0])
        rows = []
        for i, (prompt, completion) in enumerate(zip(samples.prompts, samples.completions)):
            parts = {f"reward_{n}": v[i] for n, v in scored.parts.items()}
            extra = {"is_reference": not bool(sampled[i])} if with_reference else {}
            rows.append(dict(step=self.step_count, prompt=prompt, completion=completion,
                             reward=float(reward[i]), d_pred=float(critic[i]), **parts, **extra))
        self.sample_rows.extend(distributed.gather_objects(rows))  # every process's, in batch order

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
        with stop_on_signals(self.request_stop), tqdm(total=steps, disable=not (progress and distributed.is_main()),
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
                if distributed.any_true(self._stop):  # several processes stop after the same step
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


def _check_context(model, config: HybridConfig) -> None:
    """A prompt plus the longest continuation the trainer scores (a sample of ``max_new_tokens``,
    or a reference answer of up to ``lab.generator.MAX_ANSWER_TOKENS``) must fit the model's
    positions; else one ``ValueError`` naming the knob, instead of an index error mid-step."""
    context = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    answer = max(config.max_new_tokens, generator.MAX_ANSWER_TOKENS)
    if context and config.max_prompt_tokens + answer > context:
        raise ValueError(f"max_prompt_tokens={config.max_prompt_tokens} + up to {answer} answer tokens exceed the "
                         f"model's context of {context} positions; set max_prompt_tokens <= {context - answer}")
