"""``HybridTrainer``: each step an SFT phase on the reference answers and a REINFORCE phase
on the generator's own samples, with a discriminator as critic, baseline or adversary.

One frozen backbone serves three roles: the generator (LoRA adapter ``generator``), the
reference model for the perplexity reward and the KL penalty (adapters disabled), and the
discriminator (adapter ``discriminator`` + a scalar head), unless the config names a
separate discriminator model. The trainer knows no reward internals: any callable that
returns a :class:`lab.rewards.RewardOutput` can be passed in.

A step is the seed's phases, a method each: ``_sample -> _score -> _critic -> _advantages -> _update``;
they call the variants as small functions (:mod:`lab.variants`) and the collectives through
``self.processes`` (one process: the identity). The trainer owns its state; :mod:`lab.checkpoint` stores it.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from tqdm.auto import tqdm

from lab import advantages as adv
from lab import checkpoint, discriminator, generator, models, objective, rewards
from lab.config import HybridConfig
from lab.core.seeding import set_seed
from lab.core.tensors import encode
from lab.data import Example, check_source, epoch_batch, load_examples
from lab.discriminator import Discriminator
from lab.rewards import Perplexity, Reward, RewardOutput
from lab.runtime import distributed, precision, rng, row_log, tracking
from lab.runtime.history import reward_entries, sample_log, timed
from lab.runtime.guards import skipped_part, stop_on_signals
from lab.variants import distill, mixing, selfplay
from lab.variants.stream import JsonlStream, mix_in
from lab.warm_start import warm_start_for

Callback = Callable[["HybridTrainer", dict], None]


@dataclass
class Rollout:
    """What a step sampled (phase 1) and scores (phase 2)."""

    samples: generator.Samples  # the generator's B x k responses (LUFFY: + each prompt's reference)
    prompts: list[str]  # (N,) the rows scored; self-play (2N,): the snapshot's N answers follow
    completions: list[str]  # (N,) or (2N,)
    references: list[str]  # (N,) or (2N,) each row's reference answer


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
        self.processes = distributed.hooks()  # the collectives of several processes; in one, the identity
        self.processes.check_share(config.prompts_per_step, config.ppo_minibatches  # each process's prompts, and
                                   if config.loss_type != "reinforce" else 1)  # the clipped losses' minibatches
        if examples is None:
            check_source(config.dataset, config.dataset_columns)  # a bad dataset fails before the model loads
        if model is None:
            model, tokenizer = models.load(config.model, self.device, config.dtype, quantization=config.quantization,
                                           verbose=verbose and self.processes.is_main)
        objective.check_model(model, config)
        lora = dict(r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout)
        self.model = models.add_lora(model, "generator", **lora)
        models.disable_dropout(self.model)  # train mode then differs from eval only by LoRA dropout
        self.tokenizer = tokenizer
        self.disc = Discriminator.for_config(config, self.model, tokenizer, self.device)  # the critic
        self.model.set_adapter("generator")
        if config.mode == "selfplay":  # the frozen opponent: a third adapter on the same backbone
            selfplay.add_snapshot(self.model, **lora)
        chat = tokenizer if config.chat_template else None
        self.examples = examples or load_examples(config.dataset, "train", columns=config.dataset_columns,
                                                  tokenizer=chat)
        self.reward = reward if reward is not None else Reward(
            config.reward_weights, model=self.model, tokenizer=tokenizer, corpus=config.truthfulness_corpus,
            form=config.perplexity_form)
        self.warm_start = warm_start_for(  # the critic's first scores already mean something
            config, self.disc, self.model, tokenizer, self.reward, self.examples, write=self.processes.is_main) \
            if config.discriminator_used and config.discriminator_warmup_steps and config.mode != "sft" else None
        self.teacher = distill.Teacher.for_config(config, self.model, tokenizer, self.device) \
            if config.mode == "distill" else None  # on-policy distillation's teacher (SDFT: the generator itself)
        self._perplexity = Perplexity(self.model, tokenizer, max_prompt_tokens=config.max_prompt_tokens) \
            if config.discriminator_aux_weight > 0 else None  # the critic's side task: the base's perplexity
        self.queue: deque[Example] = deque()  # fed or streamed examples not trained on yet
        self.stream = JsonlStream(config.stream, tokenizer=chat) if config.stream else None
        self.gen_params = generator.generator_parameters(self.model)
        self.opt_gen = torch.optim.AdamW(self.gen_params, lr=config.lr)
        self.opt_disc = torch.optim.AdamW(self.disc.parameters_to_train(), lr=config.lr_discriminator)
        self.scalers = precision.attach_all({"generator": (self.opt_gen, self.model),  # fp16 weights (a T4)
                                             "discriminator": (self.opt_disc, self.disc.backbone)})
        self.step_count, self.ema_baseline = 0, None  # steps done; the EMA baseline (None: not seen a reward yet)
        self.critic_accuracy: float | None = None  # running pairwise accuracy of the critic
        self.rng = random.Random(config.seed + self.processes.rank)  # junk negatives
        self.rows, self.sample_rows = [], []  # one history row per step; one samples-log row per response
        self.nonfinite_in_a_row = 0  # steps in a row that skipped an update (lab.runtime.guards.finite_update)
        self.stop_reason, self._stop = None, False  # why the last run() ended early: "request", "SIGTERM" ...
        self.processes.agree((sum(p.numel() for p in self.model.parameters()), len(self.examples)), "model, data")
        self.processes.seed_own_stream(config.seed)  # several processes: each samples its own stream

    # --- data -------------------------------------------------------------------------
    def batch(self, step: int) -> list[Example]:
        """The ``B`` examples of ``step`` (1-based) from the fixed dataset (:func:`lab.data.epoch_batch`)."""
        return epoch_batch(self.examples, step, self.config.prompts_per_step, self.config.seed)

    def feed(self, examples: list[Example]) -> None:
        """Queue new examples (online learning): each is trained on once, in arrival order,
        taking up to ``1 - replay_ratio`` of a batch; the rest replays the fixed dataset."""
        self.queue.extend(examples)

    def _next_batch(self, row: dict) -> list[Example]:
        """This step's examples: the fixed dataset's batch, or queued rows (``feed``, the
        ``stream`` file) mixed with replayed anchors from it."""
        if self.stream is not None:
            self.queue.extend(self.processes.from_main(self.stream.poll))  # every process queues the same rows
        waiting = len(self.queue)
        batch = mix_in(self.queue, self.batch(self.step_count), self.config.replay_ratio)
        if self.stream is not None or len(self.queue) < waiting:
            row.update(streamed=waiting - len(self.queue), queued=len(self.queue))
        return batch

    # --- one step ---------------------------------------------------------------------
    def step(self) -> dict:
        """One training step; returns (and records) its history row."""
        self.step_count += 1
        row, times = {"step": self.step_count, "mode": self.config.mode}, {}
        batch = self.processes.shard_batch(self._next_batch(row))  # this process's prompts of the batch
        self.model.train()
        rollout = advantage = sft_mask = base = None
        if self.config.mode != "sft":
            with timed(times, "time_sample"):
                rollout = self._sample(batch)  # 1. B prompts x k responses
            with timed(times, "time_reward"):
                scored, reward, base = self._score(rollout)  # 2. reward parts and their weighted total
            if not self.processes.all_finite(bool(torch.isfinite(reward).all())):  # NaN/inf: skip the updates
                row.update(reward=float("nan"), nonfinite="reward", skipped_updates=1)
                return self._finish(row, times)
            critic = torch.full_like(reward, float("nan"))  # (N,) or (2N,): no critic, no scores
            if self.config.discriminator_used:
                with timed(times, "time_disc"):
                    critic = self._critic(rollout, reward, batch, row)  # 3. the discriminator's update
            advantage, sft_mask = self._advantages(rollout.samples, scored, reward, critic, row)  # 4. advantages
        with timed(times, "time_gen"):
            row.update(self._update(batch, rollout, advantage, sft_mask, base))  # 5-6. the generator's update
        return self._finish(row, times)

    def _sample(self, batch: list[Example]) -> Rollout:
        """1. ``k`` responses to each prompt in one batched decode. LUFFY: each prompt's
        reference joins its group; self-play: the frozen snapshot answers too."""
        cfg = self.config
        prompts, references = [e.prompt for e in batch], [e.completion for e in batch]
        self.model.set_adapter("generator")
        options = dict(k=cfg.samples_per_prompt, temperature=cfg.temperature, top_p=cfg.top_p, num_beams=cfg.num_beams,
                       sampler=cfg.sampler, max_new_tokens=cfg.max_new_tokens, max_prompt_tokens=cfg.max_prompt_tokens)
        samples = generator.sample(self.model, self.tokenizer, prompts, **options)
        if cfg.reference_in_group:  # LUFFY: the reference is one more (off-policy) member
            samples = generator.with_references(samples, self.tokenizer, references, cfg.max_new_tokens)
        texts = samples.prompts, samples.completions  # (N,) each
        if cfg.mode == "selfplay":
            texts = selfplay.both_players(self.model, self.tokenizer, samples, prompts, **options)  # (2N,) each
        refs = [r for r in references for _ in range(samples.k)]  # (N,)
        return Rollout(samples, *texts, references=refs * (len(texts[0]) // len(refs)))

    def _score(self, rollout: Rollout) -> tuple[RewardOutput, torch.Tensor, rewards.BasePass | None]:
        """2. The reward parts and their weighted total (N,) or (2N,), on the completions only.
        With a KL penalty the frozen base reads the samples ONCE, for the KL's reference and the
        perplexity reward; returns that pass too (None without)."""
        shared = None
        if self.config.kl_coef > 0:
            shared = rewards.base_pass(self.model, rollout.samples, self.config.temperature, self.tokenizer)
        scored = self.reward(rollout.prompts, rollout.completions, references=rollout.references, base_pass=shared)
        return scored, torch.tensor(scored.total, dtype=torch.float32), shared

    def _critic(self, rollout: Rollout, reward: torch.Tensor, batch: list[Example], row: dict) -> torch.Tensor:
        """3. One step of the discriminator (:func:`lab.discriminator.train_step`) on the rows its loss
        reads (:func:`lab.discriminator.critic_rows`: the samples' rewards; references above junk;
        or GAD's references above the samples); with ``discriminator_aux_weight`` it also predicts
        each response's perplexity; frozen after ``freeze_discriminator_after`` steps it only judges.
        Returns its pre-update scores of the samples (N,) or (2N,)."""
        cfg, prompts, completions = self.config, rollout.prompts, rollout.completions
        frozen = cfg.freeze_discriminator_after and self.step_count > cfg.freeze_discriminator_after
        relative = cfg.discriminator_loss == "bradley_terry"  # its scores are relative to the reference's
        aux = self._perplexity.nll(prompts, completions) if self._perplexity is not None and not frozen else None
        rows = discriminator.critic_rows("mse" if frozen and not relative else cfg.discriminator_loss, batch,
                                         prompts, completions, reward, aux, self.rng)
        if frozen:
            critic = rows.critic(discriminator.judge(self.disc, rows.prompts, rows.completions))  # (N,) it only judges
            row.update(d_pred=float(critic.mean()), d_frozen=1,
                       d_accuracy=adv.pairwise_accuracy(critic, reward, k=cfg.samples_per_prompt))
            return critic
        self.disc.train()
        for update in range(cfg.discriminator_steps):  # the first update's scores are the critic's (pre-update)
            step = discriminator.train_step(self.disc, self.opt_disc, rows.prompts, rows.completions, rows.targets,
                                            junk=rows.junk, contrastive_weight=cfg.contrastive_weight,
                                            aux_targets=rows.aux, aux_weight=cfg.discriminator_aux_weight,
                                            pairs=rows.pairs)
            out = step if update == 0 else {**step, "scores": out["scores"]}
        critic = rows.critic(out["scores"].float().cpu())  # (N,) the samples' rows
        accuracy = adv.pairwise_accuracy(critic, reward, k=cfg.samples_per_prompt)  # within each prompt
        if accuracy == accuracy:  # a running mean: 0.8 * the previous one + 0.2 * this step's
            prev = self.critic_accuracy
            self.critic_accuracy = accuracy if prev is None else 0.8 * prev + 0.2 * accuracy
        row.update(d_loss=out["loss"], d_mse=out["mse"], d_contrastive=out["contrastive"],
                   d_accuracy=accuracy, d_pred=float(critic.mean()), d_skipped=int(out["skipped"]))
        if relative:  # the GAN's score: how often a sample passes for its reference
            row["d_fooled"] = float((critic > 0).float().mean())
        if aux is not None:
            row["d_aux_mse"] = out["aux_mse"]
        return critic

    def _advantages(self, samples: generator.Samples, scored: RewardOutput, reward: torch.Tensor,
                    critic: torch.Tensor, row: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """4. What the RL phase maximises minus the baseline, (N,); with HPT's switch also the
        prompts to imitate (B,) bool, else None. Records the rewards: history entries (LUFFY's
        references apart) and one samples-log row per response."""
        cfg = self.config
        self.critic_accuracy = self.processes.mean_value(self.critic_accuracy)  # one running state everywhere
        if cfg.mode == "selfplay":  # the referee's preference for the generator's answer; its rows go on
            target = selfplay.referee_target(critic)  # (N,)
            row["selfplay_preference"] = float(target.mean())
            scored, reward, critic = selfplay.generator_rows(scored), reward[:len(target)], critic[:len(target)]
        else:
            target = objective.rl_target(cfg, reward, critic)  # the reward, the critic's score, or a mix
        everyone = self.processes.gather(target)  # (W * N,) every process's: the EMA is state shared by all
        ema = float(everyone.mean()) if self.ema_baseline is None else self.ema_baseline  # first step: batch mean
        advantage, base = adv.advantages(target, "ema" if cfg.mode == "distill" else cfg.baseline, samples.k,
                                         ema=ema, critic=critic, scale=cfg.scale_rewards)  # distill: only logged
        self.ema_baseline = adv.ema_update(self.ema_baseline, everyone, cfg.ema_decay)
        sft_mask = None
        if cfg.per_prompt_switch:  # HPT: imitate the prompts the policy fails, explore the others
            sft_mask = mixing.sft_prompts(reward, samples.k, cfg.switch_threshold)  # (B,)
            row["sft_prompt_share"] = float(sft_mask.float().mean())
        sampled = mixing.sampled_rows(len(reward), samples.k, cfg.reference_in_group)  # (N,) LUFFY: not the reference
        row.update(reward_entries(reward, scored.parts, sampled, samples.completions, samples.lengths),
                   baseline=float(base.mean()), adv_mean=float(advantage.mean()),
                   adv_std=float(advantage.std(unbiased=False)))
        self.sample_rows.extend(self.processes.gather_rows(sample_log(  # every process's, in batch order
            self.step_count, samples.prompts, samples.completions, reward, critic, scored.parts, sampled)))
        return advantage, sft_mask

    def _update(self, batch: list[Example], rollout: Rollout | None, advantage: torch.Tensor | None,
                sft_mask: torch.Tensor | None, base: rewards.BasePass | None) -> dict:
        """5-6. The generator's update, SFT + lambda * (policy loss + beta * KL - eta * entropy),
        clipped (:func:`lab.objective.update`); returns its history entries. Self-play: the
        snapshot catches up every ``selfplay_refresh`` steps."""
        cfg, lam = self.config, objective.rl_weight(self.config, self.step_count, self.critic_accuracy)
        self.model.set_adapter("generator")
        samples = rollout.samples if rollout is not None else None
        use_rl = samples is not None and lam > 0
        prompt_ids, prompt_mask = samples.prompt_tensors() if samples is not None else encode(
            self.tokenizer, [e.prompt for e in batch], cfg.max_prompt_tokens, self.device)  # (B, P) each, as sampled
        targets = generator.answer_tokens(self.tokenizer, [e.completion for e in batch]) \
            if cfg.mode in ("sft", "hybrid") else None
        gen_batch = objective.GeneratorBatch(
            prompt_ids, prompt_mask, targets, samples.responses() if use_rl else None, advantage,
            k=samples.k if use_rl else 1, sft_mask=sft_mask,
            ref_logprobs=base.at_temperature if use_rl and base is not None else None,  # (N, T') the KL's, computed
            teacher_logprobs=self.teacher.logprobs(prompt_ids, prompt_mask, [e.completion for e in batch],
                                                   samples.responses()) if self.teacher and use_rl else None)
        logs = objective.update(self.model, self.opt_gen, self.gen_params, gen_batch, cfg, lam,
                                self.tokenizer.pad_token_id, objective.sft_weight(cfg, self.step_count), self.processes)
        if cfg.mode == "selfplay" and self.step_count % cfg.selfplay_refresh == 0:
            selfplay.refresh(self.model)  # the opponent catches up
        return logs

    def _finish(self, row: dict, times: dict) -> dict:
        """7. One history row; counts steps in a row that skipped an update (non-finite values)."""
        row.update({**times, "lambda": objective.rl_weight(self.config, self.step_count, self.critic_accuracy),
                    "step_time": sum(times.values())})
        row = self.processes.mean_row(row)  # several processes: the mean over them, the same row everywhere
        if part := skipped_part(row):  # which part skipped its update: reward, discriminator, generator
            row["nonfinite"] = part
        self.nonfinite_in_a_row = self.nonfinite_in_a_row + 1 if row.get("nonfinite") else 0
        self.rows.append(row)
        return row

    # --- the run loop -------------------------------------------------------------------
    def run(self, steps: int | None, callbacks: list[Callback] = (), out_dir: str | Path | None = None,
            progress: bool = True) -> pd.DataFrame:
        """Run ``steps`` more steps (``None``: until stopped); returns the history (:attr:`history`).

        Each callback is called as ``callback(trainer, row)`` after every step. :meth:`request_stop`
        (e.g. a widget's Stop button), SIGINT (Ctrl-C, a notebook interrupt) and SIGTERM end the run
        after the current step (``stop_reason`` says which). With ``out_dir``, checkpoints go there
        every ``checkpoint_every`` steps and at the end. After ``max_nonfinite_steps`` steps in a row
        that skipped an update (non-finite reward, loss or gradient) the run saves the last good
        state and raises ``FloatingPointError``."""
        self._stop, self.stop_reason = False, None
        every, limit = self.config.checkpoint_every, self.config.max_nonfinite_steps
        track = tracking.RunTracker(self.config, out_dir, self.processes.is_main)  # report_to: TensorBoard ...
        window = row_log.Window(self.config.history_window, out_dir if self.processes.is_main else None)
        callbacks = [*callbacks, track, window]  # window: history_window's rows to disk, the last N kept
        with stop_on_signals(self.request_stop), tqdm(total=steps, disable=not (progress and self.processes.is_main),
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
                if self.processes.any_true(self._stop):  # several processes stop after the same step
                    break
        track.close()
        if out_dir is not None:
            self.save(out_dir)
        return self.history

    def request_stop(self, reason: str = "request") -> None:
        """Ask :meth:`run` to return after the step in progress (thread-safe)."""
        self.stop_reason, self._stop = reason, True

    @property
    def history(self) -> pd.DataFrame:
        """One row per step so far (``history_window`` N: the last N; the run folder's files keep all)."""
        return pd.DataFrame(self.rows)

    @property
    def samples(self) -> pd.DataFrame:
        """Every sampled response with its reward parts and the critic's prediction (as :attr:`history`)."""
        return pd.DataFrame(self.sample_rows)

    # --- state and checkpoints ----------------------------------------------------------
    def adapters(self) -> dict[str, tuple]:
        """The LoRA adapters a checkpoint keeps in PEFT's format: folder -> (peft model, adapter)."""
        found = {"generator": (self.model, "generator"), "discriminator": (self.disc.backbone, self.disc.adapter)}
        if selfplay.SNAPSHOT in self.model.peft_config:  # self-play's frozen opponent
            found[selfplay.SNAPSHOT] = (self.model, selfplay.SNAPSHOT)
        return found

    def state_dict(self) -> dict:
        """All a run needs to continue exactly, besides its adapters (:meth:`adapters`), grouped
        by how :mod:`lab.checkpoint` stores each: ``state`` and ``config`` plain values (JSON),
        ``optimizers`` and ``rng`` (every random stream) tensors and numbers
        (``torch.load(weights_only=True)``), ``weights`` the critic's heads (safetensors),
        ``history`` and ``samples`` rows. Several processes: a collective (each one's streams)."""
        streams = dict(rng.streams(), junk=self.rng.getstate(), processes=self.processes.own_streams(self.rng))
        state = {"step": self.step_count, "ema_baseline": self.ema_baseline, "critic_accuracy": self.critic_accuracy,
                 "nonfinite_in_a_row": self.nonfinite_in_a_row, "queue": [asdict(e) for e in self.queue],
                 "stream": self.stream.state_dict() if self.stream is not None else None}
        modules = {group: {name: part.state_dict() for name, part in parts.items()}
                   for group, parts in self._modules().items()}  # optimizers, weights
        return {"state": state, "config": self.config.to_dict(), "rng": streams, **modules,
                "history": self.rows, "samples": self.sample_rows}

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (:meth:`state_dict`'s, its adapters already loaded)."""
        if selfplay.SNAPSHOT in self.model.peft_config:
            selfplay.freeze(self.model)
        for group, parts in self._modules().items():
            for name, part in parts.items():
                if name in state[group]:  # a scaler absent from an older (or not fp16) checkpoint starts fresh
                    part.load_state_dict(state[group][name])
        plain = state["state"]
        self.step_count, self.ema_baseline = plain["step"], plain["ema_baseline"]
        self.critic_accuracy, self.nonfinite_in_a_row = plain["critic_accuracy"], int(plain["nonfinite_in_a_row"])
        if self.stream is not None and plain["stream"]:
            self.stream.load_state_dict(plain["stream"])
        self.queue = deque(Example(**row) for row in plain["queue"])
        self.rows, self.sample_rows = list(state["history"]), list(state["samples"])
        rng.restore(state["rng"])
        self.rng.setstate(state["rng"]["junk"])
        self.processes.restore_own_streams(state["rng"]["processes"], self.rng,
                                           seed=self.config.seed + self.step_count * self.processes.count)
        self.model.set_adapter("generator")

    def _modules(self) -> dict[str, dict]:
        """What keeps its own ``state_dict``: the optimizers (and fp16's scalers), the critic's heads (``weights``)."""
        heads = {"head": self.disc.head, "aux_head": self.disc.aux}
        return {"optimizers": {"generator": self.opt_gen, "discriminator": self.opt_disc, **self.scalers},
                "weights": {name: head for name, head in heads.items() if head is not None}}

    def save(self, out_dir: str | Path) -> Path:
        """Write a checkpoint atomically under ``out_dir/checkpoints``; returns its folder."""
        return checkpoint.save(self, Path(out_dir))

    @classmethod
    def resume(cls, path: str | Path, **kwargs) -> "HybridTrainer":
        """Rebuild a trainer from a run folder (its latest checkpoint) or a checkpoint folder."""
        return checkpoint.load(cls, Path(path), **kwargs)
