"""The playground's controls: one widget per config knob, named as the field, and its tabs.

A control's tab is its field's config section (:meth:`HybridConfig.sections`, the groups of
``python -m lab train --help``): adding a knob is one entry in :func:`controls`.
:mod:`lab.ui.widgets` lays them out and turns their values into a :class:`HybridConfig`.
"""

from __future__ import annotations

import math

import ipywidgets as W

from lab.config import (
    BASELINES, DISCRIMINATOR_LOSSES, DISTILL_TEACHERS, IMPORTANCE_LEVELS, LOSS_TYPES, MODES, PERPLEXITY_FORMS, REWARD_NAMES,
    REWARD_SOURCES, SAMPLERS, SCHEDULES, SFT_SCHEDULES, SFT_TOKEN_WEIGHTS, TRAIN_DISCRIMINATOR, HybridConfig,
)

METRICS = ("reward", *(f"reward_{name}" for name in REWARD_NAMES), "loss", "loss_sft", "loss_rl",
           "kl", "entropy", "d_loss", "d_accuracy", "lambda", "response_len", "distinct_1",
           "distinct_2", "grad_norm", "step_time", "adv_std", "clip_frac", "approx_kl", "mu", "sft_prompt_share",
           "selfplay_preference")
STYLE = {"description_width": "150px"}


def tabs(names) -> dict[str, tuple[str, ...]]:
    """The playground's tabs: each config section with the controls among ``names`` that set
    its fields, in field order; ``steps`` (a run's length, no config field) opens the run tab;
    a section without controls has no tab.

    >>> tabs(["lr", "steps", "mode", "lora_r"])
    {'model': ('lora_r',), 'objective': ('mode',), 'run': ('steps', 'lr')}
    """
    grouped = {section: tuple(name for name in (("steps",) if section == "run" else ()) + fields if name in names)
               for section, fields in HybridConfig.sections().items()}
    return {section: group for section, group in grouped.items() if group}


def make(kind, description: str, tooltip: str, **kwargs) -> W.Widget:
    """A control with the panel's label width; sliders stretch their range to fit the value."""
    if "max" in kwargs and kind is not W.FloatLogSlider:
        kwargs["max"] = max(kwargs["max"], kwargs["value"])
    if kind is W.Checkbox:
        kwargs["indent"] = False
    if kind in (W.IntSlider, W.FloatSlider, W.FloatLogSlider, W.Text):
        kwargs["continuous_update"] = False
    return kind(description=description, tooltip=tooltip, style=STYLE,
                layout=W.Layout(width="420px"), **kwargs)


def controls(cfg: HybridConfig, steps: int) -> dict[str, W.Widget]:
    """One widget per knob, named as the config field (plus ``steps``), set to ``cfg``'s values."""
    S, F, D, C = W.IntSlider, W.FloatSlider, W.Dropdown, W.Checkbox
    return {
        "mode": make(D, "mode", "sft: phase A only; rl: phase B only; hybrid: both; selfplay: RL against a "
                      "frozen snapshot, rewarded by the discriminator's preference; distill: its own samples, "
                      "reverse KL to a teacher (SDFT: itself shown the reference)", options=MODES, value=cfg.mode),
        "distill_teacher": make(D, "SDFT teacher", "distill: the generator with its adapter (policy) or without "
                                 "(base), shown the reference answer", options=DISTILL_TEACHERS,
                                 value=cfg.distill_teacher),
        "lambda_rl": make(F, "λ (RL weight)", "weight of the RL terms against SFT (hybrid mode)",
                           min=0, max=2, step=0.05, value=cfg.lambda_rl),
        "lambda_schedule": make(D, "λ schedule", "constant; linear warm-up; adaptive (critic accuracy)",
                                 options=SCHEDULES, value=cfg.lambda_schedule),
        "lambda_warmup_steps": make(S, "λ warm-up steps", "linear schedule: steps from 0 to λ",
                                     min=1, max=200, value=cfg.lambda_warmup_steps),
        "baseline": make(D, "baseline", "ema: running mean; loo: the prompt's other samples; group: all k "
                          "(GRPO); critic: D over the other samples (unbiased); discriminator_biased: D(x, y) "
                          "itself (biased, a teaching arm)", options=BASELINES, value=cfg.baseline),
        "reward_source": make(D, "reward source", "what RL maximises: reward, discriminator, or a mix",
                               options=REWARD_SOURCES, value=cfg.reward_source),
        "train_discriminator": make(D, "train D", "auto: only when its score is read (critic baseline, D reward, "
                                    "self-play, adaptive λ); always: also for its curves",
                                    options=TRAIN_DISCRIMINATOR, value=cfg.train_discriminator),
        "discriminator_loss": make(D, "D loss", "mse: regress the reward; mse+contrastive: also rank reference "
                                   "answers above junk; bradley_terry (GAD): rank the reference above each sample",
                                   options=DISCRIMINATOR_LOSSES, value=cfg.discriminator_loss),
        "naturalness_weight": make(F, "naturalness w", "reward + w x the odds a Bradley-Terry D gives a sample of "
                                   "passing for the reference", min=0, max=1, step=0.05,
                                   value=cfg.naturalness_weight),
        "freeze_discriminator_after": make(S, "freeze D after", "stop updating D after this many steps (0: never); "
                                           "the reward-hacking experiment", min=0, max=200,
                                           value=cfg.freeze_discriminator_after),
        "contrastive_weight": make(F, "D contrastive weight", "mse+contrastive: weight of ranking references "
                                   "above junk", min=0, max=2, step=0.05, value=cfg.contrastive_weight),
        "discriminator_aux_weight": make(F, "D aux weight", "an auxiliary head predicting the response's "
                                         "perplexity (0: off)", min=0, max=1, step=0.05,
                                         value=cfg.discriminator_aux_weight),
        "discriminator_lora_r": make(S, "D LoRA rank", "the discriminator's own rank (0: the generator's)",
                                     min=0, max=64, value=cfg.discriminator_lora_r),
        "discriminator_warmup_steps": make(S, "D warm start", "updates before the loop on references, junk and "
                                           "the untrained generator's answers (0: none; cached)", min=0, max=100,
                                           value=cfg.discriminator_warmup_steps),
        "discriminator_steps": make(S, "D updates a step", "discriminator updates per generator step", min=1,
                                    max=4, value=cfg.discriminator_steps),
        "lr_discriminator": make(W.FloatLogSlider, "D learning rate", "discriminator (LoRA + head) learning rate",
                                 base=10, min=-6, max=-2, step=0.1, value=cfg.lr_discriminator, readout_format=".1e"),
        "perplexity_form": make(D, "perplexity form", "scaled: exp(-nll / 4); sketch: the original 1 / (1 + ppl), "
                                "almost no signal", options=PERPLEXITY_FORMS, value=cfg.perplexity_form),
        "max_grad_norm": make(F, "gradient clipping", "max L2 norm of the generator's gradient (0: off)", min=0,
                              max=5, step=0.1, value=cfg.max_grad_norm),
        "temperature": make(F, "temperature", "sampling temperature", min=0.1, max=1.5, step=0.05,
                            value=cfg.temperature),
        "top_p": make(F, "top-p", "nucleus sampling: the smallest set of tokens holding this probability",
                      min=0.05, max=1, step=0.05, value=cfg.top_p),
        "dataset": make(W.Text, "dataset", "bundled, factual, alpaca, dolly, oasst, a local file, or a mix "
                        "'bundled:0.7,factual:0.3'", value=cfg.dataset),
        "reward_mix": make(F, "mix (D share)", "reward source 'mix': weight of the discriminator",
                            min=0, max=1, step=0.05, value=cfg.reward_mix),
        "kl_coef": make(F, "KL coef β", "KL penalty to the base model", min=0, max=0.2, step=0.005,
                         value=cfg.kl_coef, readout_format=".3f"),
        "entropy_coef": make(F, "entropy coef η", "entropy bonus", min=0, max=0.05, step=0.001,
                              value=cfg.entropy_coef, readout_format=".3f"),
        # experiments: the policy update, the SFT + RL mixes, sampling
        "scale_rewards": make(C, "scale rewards (÷ group std)", "divide advantages by the std of the prompt's "
                               "k rewards (GRPO); needs k >= 2", value=cfg.scale_rewards),
        "loss_type": make(D, "policy loss", "reinforce; or a clipped ratio against the sampling policy that "
                          "weighs tokens per response (ppo: sum, grpo: mean), per token (bnpo, dapo) or by "
                          "a constant (dr_grpo); notebook 08", options=LOSS_TYPES, value=cfg.loss_type),
        "ppo_epochs": make(S, "PPO epochs", "clipped losses: passes over each step's samples (1: REINFORCE's "
                            "gradient)", min=1, max=8, value=cfg.ppo_epochs),
        "clip_range": make(F, "clip range ε", "clipped losses: the ratio is clipped to [1 - ε, 1 + ε]",
                            min=0.05, max=0.5, step=0.01, value=cfg.clip_range),
        "epsilon_high": make(F, "clip high (DAPO)", "the upper clip 1 + ε_high (DAPO: 0.28); 0: ε", min=0,
                              max=0.5, step=0.01, value=cfg.epsilon_high),
        "importance_sampling_level": make(D, "ratio per", "token, or sequence (GSPO: one length-normalised "
                                           "ratio per response)", options=IMPORTANCE_LEVELS,
                                           value=cfg.importance_sampling_level),
        "sft_schedule": make(D, "SFT schedule (μ)", "none: SFT + λ RL; else μ SFT + (1 - μ) RL with μ constant, "
                              "chord (warm-up + cosine) or srft (μ exp(-entropy)); needs mode hybrid",
                              options=SFT_SCHEDULES, value=cfg.sft_schedule),
        "mu": make(F, "μ (SFT weight)", "the SFT weight, the peak of chord's schedule", min=0, max=1, step=0.05,
                    value=cfg.mu),
        "sft_token_weight": make(D, "SFT token weight", "uniform; phi: each SFT token weighted by p (1 - p) "
                                  "(CHORD-phi)", options=SFT_TOKEN_WEIGHTS, value=cfg.sft_token_weight),
        "reference_in_group": make(C, "reference in group (LUFFY)", "the reference answer joins its prompt's "
                                    "group as an off-policy member", value=cfg.reference_in_group),
        "per_prompt_switch": make(C, "per-prompt switch (HPT)", "SFT for prompts whose samples all score "
                                   "below the threshold, RL for the others (mode hybrid)",
                                   value=cfg.per_prompt_switch),
        "switch_threshold": make(F, "HPT threshold", "the reward a sample must reach for its prompt to count "
                                  "as solved", min=0, max=1, step=0.05, value=cfg.switch_threshold),
        "sampler": make(D, "sampler", "nucleus: temperature + top-p samples; beam: the k best beams "
                         "(off-policy)", options=SAMPLERS, value=cfg.sampler),
        "num_beams": make(S, "beams", "beam: beams kept per prompt, >= k", min=1, max=8, value=cfg.num_beams),
        "selfplay_refresh": make(S, "self-play refresh", "selfplay: copy the generator into the frozen "
                                  "opponent every N steps", min=1, max=50, value=cfg.selfplay_refresh),
        "lora_r": make(S, "LoRA rank r", "adapter rank (both adapters)", min=1, max=64, value=cfg.lora_r),
        "lora_alpha": make(S, "LoRA alpha", "scaling numerator, usually 2 r", min=1, max=128,
                            value=cfg.lora_alpha),
        "lora_dropout": make(F, "LoRA dropout", "dropout on the adapter input", min=0, max=0.5,
                              step=0.01, value=cfg.lora_dropout),
        "lr": make(W.FloatLogSlider, "learning rate", "generator (LoRA) learning rate", base=10,
                    min=min(-6, math.floor(math.log10(cfg.lr))), max=max(-2, math.ceil(math.log10(cfg.lr))),
                    step=0.1, value=cfg.lr, readout_format=".1e"),
        "model": make(W.Text, "model", "'auto', 'smollm2-135m', 'tiny-gpt2' or a Hub causal-LM id",
                       value=cfg.model),
        "discriminator_model": make(W.Text, "D model", "empty: D shares the generator's backbone; a model name "
                                    "(e.g. a larger one): D on its own model", value=cfg.discriminator_model or ""),
        "steps": make(S, "steps", "training steps of one run", min=1, max=200, value=steps),
        "prompts_per_step": make(S, "prompts a step (B)", "prompts per step", min=1, max=16,
                                  value=cfg.prompts_per_step),
        "samples_per_prompt": make(S, "samples a prompt (k)", "responses per prompt; loo needs k >= 2",
                                    min=1, max=8, value=cfg.samples_per_prompt),
        "max_new_tokens": make(S, "max new tokens", "response length cap", min=4, max=128,
                                value=cfg.max_new_tokens),
        "seed": make(W.BoundedIntText, "seed", "seeds python, numpy, torch and the data order",
                      min=0, max=2**31 - 1, value=cfg.seed),
    }


def fit(widget: W.Widget, value) -> None:
    """Set ``value``, first widening a slider's range to hold it (the config validates it)."""
    if isinstance(widget, W.FloatLogSlider):
        if not value > 0:
            raise ValueError(f"{widget.description} must be > 0, got {value!r}")
        exponent = math.log10(value)
        widget.max, widget.min = max(widget.max, math.ceil(exponent)), min(widget.min, math.floor(exponent))
    elif hasattr(widget, "max") and isinstance(value, (int, float)):
        widget.max, widget.min = max(widget.max, value), min(widget.min, value)
    widget.value = value
