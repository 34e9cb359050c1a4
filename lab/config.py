"""``HybridConfig``: every knob of a hybrid SFT + REINFORCE run, documented and validated.

Each field has a default that runs on a laptop CPU and, TRL style, a ``help`` text in its
metadata (meaning and typical range) that ``python -m lab train --help`` shows.
``__post_init__`` rejects bad values with a ``ValueError`` that names the field and says how
to fix it. Presets (``PRESETS``) change only what differs.

Values typed by people (CLI flags, YAML/JSON files) go through :func:`lab.readers.config_text.coerce`,
which reads text by the field's type (``"1e-4"`` -> ``0.0001``); :meth:`HybridConfig.from_dict`
and :func:`lab.readers.config_text.read_file` apply it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lab.readers.config_text import coerce, field_kind, known_fields, read_file  # noqa: F401 (the config's text I/O)

LIMITS = {"max_new_tokens": 8192, "max_prompt_tokens": 131072, "prompts_per_step": 4096,
          "samples_per_prompt": 256, "lora_r": 1024, "ppo_epochs": 100}  # larger is a typo, not a run
MODES = ("sft", "rl", "hybrid", "selfplay")
SCHEDULES = ("constant", "linear", "adaptive")
BASELINES = ("ema", "loo", "group", "critic", "discriminator_biased")
POLICY_LOSSES = ("reinforce", "ppo")
SAMPLERS = ("nucleus", "beam")
SFT_SCHEDULES = ("none", "constant", "chord", "srft")
SFT_TOKEN_WEIGHTS = ("uniform", "phi")
REWARD_SOURCES = ("reward", "discriminator", "mix")
DISCRIMINATOR_LOSSES = ("mse", "mse+contrastive")
DTYPES = ("auto", "float32", "bfloat16", "float16")
QUANTIZATIONS = ("none", "8bit", "4bit", "int8")  # lab.runtime.quantization
TRAIN_DISCRIMINATOR = ("auto", "always")
REWARD_NAMES = ("semantic", "perplexity", "rouge", "bleu", "repetition", "length", "truthfulness")


@dataclass
class HybridConfig:
    """Configuration of :class:`lab.trainer.HybridTrainer` (and the CLI, widgets, ablation)."""

    # --- models -----------------------------------------------------------------------
    model: str = field(default="auto", metadata={"help": (
        "generator backbone: 'auto', 'smollm2-135m', 'tiny-gpt2' or any Hub causal-LM id")})
    discriminator_model: str | None = field(default=None, metadata={"help": (
        "None: the discriminator shares the generator's backbone; a model name: its own model")})
    device: str = field(default="auto", metadata={"help": (
        "'auto' (cuda > mps > cpu), 'cpu', 'cuda', 'cuda:1' ...")})
    dtype: str = field(default="auto", metadata={"help": (
        "weights: 'auto' (bf16 where the hardware multiplies it natively: CUDA GPUs with bf16, CPUs "
        "with AVX512-BF16 or AMX; else fp32; the LAB_DTYPE environment variable overrides 'auto'), "
        "'float32', 'bfloat16', or 'float16' (CUDA only); LoRA adapters and heads stay fp32")})
    quantization: str = field(default="none", metadata={"help": (
        "'none'; '8bit' / '4bit' (QLoRA, NF4): the frozen backbone through bitsandbytes, on a CUDA GPU only; "
        "'int8': int8 weight-only linear layers through torchao, on a CPU or a GPU (models with nn.Linear "
        "layers, e.g. SmolLM2; GPT-2's Conv1D gets a clear error)")})
    # --- LoRA (both adapters) -----------------------------------------------------------
    lora_r: int = field(default=8, metadata={"help": "adapter rank; 2-64"})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator; usually 2 * lora_r"})
    lora_dropout: float = field(default=0.0, metadata={"help": (
        "dropout on the adapter input, 0-0.1; 0 scores the samples under exactly the policy that "
        "drew them (TRL turns dropout off for RL too)")})
    # --- optimisation -------------------------------------------------------------------
    lr: float = field(default=1e-4, metadata={"help": "generator (LoRA) learning rate; 1e-5 - 1e-3"})
    lr_discriminator: float = field(default=3e-4, metadata={"help": (
        "discriminator (LoRA + head) learning rate; 1e-5 - 1e-3")})
    max_grad_norm: float = field(default=1.0, metadata={"help": (
        "gradient clipping of the generator (max L2 norm); 0 disables; 0.5-5")})
    # --- sampling (phase B) -------------------------------------------------------------
    prompts_per_step: int = field(default=4, metadata={"help": "B: prompts a step; 2-64"})
    samples_per_prompt: int = field(default=2, metadata={"help": (
        "k: responses per prompt; 'loo' needs k >= 2; 1-8")})
    max_new_tokens: int = field(default=32, metadata={"help": "response length cap in tokens; 16-128"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature, > 0; 0.5-1.2"})
    top_p: float = field(default=0.9, metadata={"help": "nucleus sampling, in (0, 1]; 0.8-1.0"})
    max_prompt_tokens: int = field(default=256, metadata={"help": (
        "longer prompts are cut from the left; 64-1024")})
    # --- objective ----------------------------------------------------------------------
    mode: str = field(default="hybrid", metadata={"help": (
        "'sft' (phase A only), 'rl' (phase B only), 'hybrid' (both), or 'selfplay' (phase B against a "
        "frozen snapshot, rewarded by the discriminator's preference)")})
    lambda_rl: float = field(default=0.5, metadata={"help": (
        "weight of the RL terms against SFT in mode 'hybrid'; 0-2 (mode 'rl' uses 1, 'sft' 0)")})
    lambda_schedule: str = field(default="constant", metadata={"help": (
        "'constant', 'linear' warm-up, or 'adaptive' (scaled by the discriminator's accuracy)")})
    lambda_warmup_steps: int = field(default=20, metadata={"help": (
        "'linear': steps to ramp lambda from 0 to lambda_rl; 10-100")})
    reward_weights: dict[str, float] = field(
        default_factory=lambda: {"semantic": 0.7, "perplexity": 0.3}, metadata={"help": (
            "weight per reward part, a JSON/YAML mapping; names: " + ", ".join(REWARD_NAMES))})
    baseline: str = field(default="ema", metadata={"help": (
        "'ema' (running mean), 'loo' (mean of the prompt's other samples), 'group' (mean of all k, "
        "GRPO), 'critic' (the discriminator's mean score of the prompt's other samples: unbiased), "
        "or 'discriminator_biased' (D(x, y) of the sample itself: biased, a teaching arm)")})
    scale_rewards: bool = field(default=False, metadata={"help": (
        "divide advantages by the std of the prompt's k rewards (GRPO's scale_rewards); needs k >= 2")})
    policy_loss: str = field(default="reinforce", metadata={"help": (
        "'reinforce': -(R - b) log pi(y|x); 'ppo': clipped importance ratio against the sampling "
        "policy, ppo_epochs passes over ppo_minibatches")})
    ppo_epochs: int = field(default=1, metadata={"help": (
        "'ppo': optimizer passes over each step's samples; 1-4 (1: the REINFORCE gradient)")})
    ppo_minibatches: int = field(default=1, metadata={"help": (
        "'ppo': minibatches of prompts per pass (a prompt's k samples stay together); 1-B")})
    clip_range: float = field(default=0.2, metadata={"help": (
        "'ppo': the ratio is clipped to [1 - clip_range, 1 + clip_range]; 0.1-0.3")})
    ema_decay: float = field(default=0.9, metadata={"help": (
        "'ema' baseline: b <- decay*b + (1-decay)*mean reward; in [0, 1), 0.8-0.99")})
    reward_source: str = field(default="reward", metadata={"help": (
        "what phase B maximises: 'reward', 'discriminator' (adversarial), or a 'mix'")})
    reward_mix: float = field(default=0.5, metadata={"help": (
        "'mix': weight of the discriminator's score, 0-1")})
    kl_coef: float = field(default=0.0, metadata={"help": (
        "KL penalty to the base model (adapters off); 0-0.2")})
    entropy_coef: float = field(default=0.0, metadata={"help": "entropy bonus; 0-0.05"})
    # --- SFT + RL mixes of 2025-26 (CHORD, SRFT, LUFFY, HPT) -------------------------------
    sft_schedule: str = field(default="none", metadata={"help": (
        "'none': loss = SFT + lambda * RL; else loss = mu * SFT + (1 - mu) * RL with mu 'constant', "
        "'chord' (warm-up then cosine decay) or 'srft' (mu * exp(-entropy of the policy))")})
    mu: float = field(default=0.5, metadata={"help": "the SFT weight mu (its peak for 'chord'); 0-1"})
    mu_min: float = field(default=0.0, metadata={"help": "'chord': mu after the cosine decay; 0-mu"})
    mu_warmup_steps: int = field(default=5, metadata={"help": "'chord': steps of linear warm-up to mu; 0-50"})
    mu_decay_steps: int = field(default=50, metadata={"help": "'chord': steps of cosine decay to mu_min; 10-1000"})
    sft_token_weight: str = field(default="uniform", metadata={"help": (
        "'uniform', or 'phi': each SFT token weighted by p * (1 - p) (CHORD-phi), so tokens the policy "
        "already knows (p ~ 1) or finds absurd (p ~ 0) pull less")})
    reference_in_group: bool = field(default=False, metadata={"help": (
        "LUFFY: the reference answer joins its prompt's group of samples as an off-policy member, "
        "with its own reward in the baseline and its own policy-gradient term")})
    per_prompt_switch: bool = field(default=False, metadata={"help": (
        "HPT: per prompt, SFT when all its samples score below switch_threshold, else RL")})
    switch_threshold: float = field(default=0.5, metadata={"help": (
        "'per_prompt_switch': the reward a sample must reach for its prompt to count as solved; 0-1")})
    # --- other experiments of the sketch --------------------------------------------------
    sampler: str = field(default="nucleus", metadata={"help": (
        "'nucleus' (temperature + top-p sampling), or 'beam': the k best beams (off-policy: beams are "
        "not draws from the policy, so the REINFORCE estimate is biased)")})
    num_beams: int = field(default=4, metadata={"help": "'beam': beams kept per prompt, >= k; 2-8"})
    selfplay_refresh: int = field(default=10, metadata={"help": (
        "'selfplay': copy the generator into the frozen opponent every N steps; 5-50")})
    stream: str | None = field(default=None, metadata={"help": (
        "a JSONL file of prompt/answer rows that may grow while the run goes on (online learning); "
        "new rows are trained on as they arrive")})
    replay_ratio: float = field(default=0.5, metadata={"help": (
        "'stream': share of each batch replayed from the fixed dataset (anchors); 0-1")})
    # --- discriminator ------------------------------------------------------------------
    discriminator_loss: str = field(default="mse", metadata={"help": (
        "'mse' or 'mse+contrastive' (reference answers ranked above junk)")})
    discriminator_top_layers: int = field(default=8, metadata={"help": (
        "its LoRA on the top N blocks only (0: all); backward stops there")})
    contrastive_weight: float = field(default=1.0, metadata={"help": (
        "weight of the contrastive term; 0.1-2")})
    discriminator_lora_r: int = field(default=0, metadata={"help": (
        "the discriminator's own LoRA rank (0: lora_r); 2-64")})
    freeze_discriminator_after: int = field(default=0, metadata={"help": (
        "stop updating the discriminator after this many steps (0: never); its scores are still used: "
        "a frozen critic vs one trained online, the reward-hacking experiment")})
    discriminator_aux_weight: float = field(default=0.0, metadata={"help": (
        "weight of an auxiliary head that predicts the response's perplexity (mean NLL under the base "
        "model) beside the reward; 0 disables; 0.1-1")})
    train_discriminator: str = field(default="auto", metadata={"help": (
        "'auto': train the discriminator only when the run reads its scores (a critic baseline, a "
        "discriminator reward, self-play, adaptive lambda, the aux head), which saves its pass and "
        "update; 'always': also for its curves and the reward-hacking diagnostics")})
    # --- data and run -------------------------------------------------------------------
    dataset: str = field(default="bundled", metadata={"help": (
        "'bundled', 'factual', 'alpaca', 'dolly', 'oasst', 'truthfulqa', 'arc', 'auto', a local "
        "JSON/JSONL/CSV path (Alpaca layout, or Dolly/OASST/TruthfulQA/ARC by their columns), or a "
        "weighted mix 'bundled:0.7,factual:0.3' (lab/readers/sources.py)")})
    dataset_columns: str | None = field(default=None, metadata={"help": (
        "a local file's column names as a JSON mapping of the kit's fields (instruction, input, output, "
        "category, correct, incorrect), e.g. '{\"instruction\": \"prompt\", \"output\": \"response\"}'")})
    truthfulness_corpus: str | None = field(default=None, metadata={"help": (
        "passages JSONL ({id, title, text} per line) for the truthfulness reward and metric; "
        "None: the bundled data/factual/passages.jsonl")})
    chat_template: bool = field(default=False, metadata={"help": (
        "format prompts with the tokenizer's chat template")})
    seed: int = field(default=0, metadata={"help": "seeds python, numpy, torch and the data order"})
    checkpoint_every: int = field(default=0, metadata={"help": (
        "save a checkpoint every N steps (0: only at the end)")})
    max_nonfinite_steps: int = field(default=3, metadata={"help": (
        "stop (saving the last good state) after this many steps in a row whose reward, loss or "
        "gradient was not finite; each such update is skipped; 1-10")})

    def __post_init__(self):
        self._check_choice("mode", MODES)
        self._check_choice("lambda_schedule", SCHEDULES)
        self._check_choice("baseline", BASELINES)
        self._check_choice("reward_source", REWARD_SOURCES)
        self._check_choice("discriminator_loss", DISCRIMINATOR_LOSSES)
        self._check_choice("policy_loss", POLICY_LOSSES)
        self._check_choice("sampler", SAMPLERS)
        self._check_choice("quantization", QUANTIZATIONS)
        self._check_choice("dtype", DTYPES)
        self._check_choice("train_discriminator", TRAIN_DISCRIMINATOR)
        self._check_choice("sft_schedule", SFT_SCHEDULES)
        self._check_choice("sft_token_weight", SFT_TOKEN_WEIGHTS)
        for name in ("lora_r", "lora_alpha", "prompts_per_step", "samples_per_prompt",
                     "max_new_tokens", "max_prompt_tokens", "lambda_warmup_steps", "ppo_epochs", "ppo_minibatches",
                     "max_nonfinite_steps", "num_beams", "selfplay_refresh", "mu_decay_steps"):
            self._check_int(name, minimum=1)
        self._check_int("checkpoint_every", minimum=0)
        self._check_int("discriminator_top_layers", minimum=0)
        self._check_int("seed", minimum=0)
        self._check_int("mu_warmup_steps", minimum=0)
        self._check_int("discriminator_lora_r", minimum=0)
        self._check_int("freeze_discriminator_after", minimum=0)
        for name, most in LIMITS.items():  # absurd sizes: hours per step or out of memory
            if isinstance(getattr(self, name), int) and not isinstance(getattr(self, name), bool) \
                    and getattr(self, name) > most:
                raise ValueError(f"{name}={getattr(self, name)!r} is absurdly large; it must be at most {most}")
        for name in ("lr", "lr_discriminator"):
            self._check_range(name, low=0.0, high=1.0, low_open=True)
        self._check_range("temperature", low=0.0, low_open=True)
        for name in ("lora_dropout", "ema_decay"):
            self._check_range(name, low=0.0, high=1.0, high_open=True)
        for name in ("top_p", "reward_mix", "clip_range", "mu", "mu_min", "switch_threshold", "replay_ratio"):
            self._check_range(name, low=0.0, high=1.0, low_open=name in ("top_p", "clip_range"))
        for name in ("lambda_rl", "kl_coef", "entropy_coef", "max_grad_norm", "contrastive_weight",
                     "discriminator_aux_weight"):
            self._check_range(name, low=0.0)
        self._check_weights()
        self._check_combinations()
        from lab.data import parse_columns
        from lab.readers.sources import parse_spec

        parse_spec(self.dataset)  # a known source, a file name or a weighted mix; clear error otherwise
        parse_columns(self.dataset_columns)
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError("model must be a model name such as 'auto', 'smollm2-135m', 'tiny-gpt2' or 'gpt2'")

    def _check_combinations(self) -> None:
        k = self.samples_per_prompt
        if (self.baseline in ("loo", "group", "critic") or self.scale_rewards) and k < 2:
            what = "scale_rewards=True" if self.scale_rewards else f"baseline={self.baseline!r}"
            raise ValueError(f"{what} compares the k samples of a prompt and needs samples_per_prompt >= 2; "
                             f"got samples_per_prompt={k}")
        if self.baseline == "discriminator_biased" and self.reward_source == "discriminator":
            raise ValueError("baseline='discriminator_biased' with reward_source='discriminator' makes every "
                             "advantage zero; use baseline='ema', 'loo' or 'critic' in the adversarial mode")
        if self.mode in ("rl", "selfplay") and self.lambda_schedule != "constant":
            raise ValueError(f"lambda_schedule={self.lambda_schedule!r} mixes SFT and RL, but mode={self.mode!r} "
                             "has no SFT term (its RL weight is 1); use mode='hybrid' or lambda_schedule='constant'")
        if self.sft_schedule != "none" and (self.mode != "hybrid" or self.lambda_schedule != "constant"):
            raise ValueError(f"sft_schedule={self.sft_schedule!r} sets the SFT/RL mix itself: use it with "
                             "mode='hybrid' and lambda_schedule='constant'")
        if self.per_prompt_switch and self.mode != "hybrid":
            raise ValueError("per_prompt_switch chooses SFT or RL per prompt and needs mode='hybrid'")
        if (self.reference_in_group or self.sampler == "beam") and self.mode not in ("rl", "hybrid"):
            what = "reference_in_group" if self.reference_in_group else "sampler='beam'"
            raise ValueError(f"{what} shapes the RL phase; use mode='rl' or 'hybrid'")
        if self.sampler == "beam" and self.num_beams < k:
            raise ValueError(f"sampler='beam' returns the k best of num_beams beams: num_beams={self.num_beams} "
                             f"must be >= samples_per_prompt={k}")
        if self.mu_min > self.mu:
            raise ValueError(f"mu_min={self.mu_min} must not exceed mu={self.mu} (the schedule decays from mu)")
        if self.mode == "selfplay" and self.reward_source != "reward":
            raise ValueError("mode='selfplay' is rewarded by the discriminator's preference between the two "
                             "players; leave reward_source='reward' (it trains the referee)")
        if self.ppo_minibatches > self.prompts_per_step:
            raise ValueError(f"ppo_minibatches={self.ppo_minibatches} exceeds prompts_per_step="
                             f"{self.prompts_per_step}; a minibatch holds at least one prompt")

    # --- validation helpers -------------------------------------------------------------
    def _check_choice(self, name: str, choices: tuple[str, ...]) -> None:
        value = getattr(self, name)
        if value not in choices:
            raise ValueError(f"{name}={value!r} is not valid; choose one of {', '.join(choices)}")

    def _check_int(self, name: str, minimum: int) -> None:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name}={value!r} must be a whole number >= {minimum}")

    def _check_range(self, name: str, low: float, high: float | None = None,
                     low_open: bool = False, high_open: bool = False) -> None:
        value = getattr(self, name)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (value > low if low_open else value >= low)
        ok = ok and (high is None or (value < high if high_open else value <= high))
        if not ok:
            bounds = f"{'(' if low_open else '['}{low}, {high if high is not None else 'inf'}{')' if high_open or high is None else ']'}"
            raise ValueError(f"{name}={value!r} is out of range; it must be a finite number in {bounds}")

    def _check_weights(self) -> None:
        weights = self.reward_weights
        if not isinstance(weights, dict) or not weights:
            raise ValueError("reward_weights must be a non-empty dict such as "
                             "{'semantic': 0.7, 'perplexity': 0.3}")
        unknown = sorted(set(weights) - set(REWARD_NAMES))
        if unknown:
            raise ValueError(f"reward_weights has unknown reward(s) {unknown}; "
                             f"known: {', '.join(REWARD_NAMES)}")
        if any(not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w) for w in weights.values()):
            raise ValueError(f"reward_weights values must be numbers, got {weights}")
        if not any(weights.values()):
            raise ValueError("reward_weights are all zero; give at least one reward a nonzero weight")

    # --- derived values and I/O -----------------------------------------------------------
    @property
    def discriminator_used(self) -> bool:
        """True when the run reads the discriminator's scores (so it must be trained), or
        ``train_discriminator='always'`` asks for it anyway."""
        return (self.train_discriminator == "always" or self.mode == "selfplay"
                or self.baseline in ("critic", "discriminator_biased") or self.reward_source != "reward"
                or self.lambda_schedule == "adaptive" or self.discriminator_aux_weight > 0)

    @property
    def samples_per_step(self) -> int:
        """B * k: responses sampled each step."""
        return self.prompts_per_step * self.samples_per_prompt

    def replace(self, **changes) -> "HybridConfig":
        """A validated copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, values: dict) -> "HybridConfig":
        """Build from a dict whose values may be text (see :func:`coerce`); unknown keys raise
        a ``ValueError`` listing the known fields.

        >>> HybridConfig.from_dict({"lr": "2e-4", "chat_template": "no"}).lr
        0.0002
        """
        return cls(**{name: coerce(name, value) for name, value in known_fields(values).items()})

    @classmethod
    def load(cls, path: str | Path) -> "HybridConfig":
        """Read a JSON or YAML file (``.json``, ``.yaml``, ``.yml``); fields it does not name
        keep their defaults."""
        return cls.from_dict(read_file(path))


# Presets change only what differs from the defaults (nanoGPT style).
PRESETS: dict[str, dict] = {
    "default": {},
    # CI / classroom: tiny batches, short answers.
    "quick": {"prompts_per_step": 2, "samples_per_prompt": 2, "max_new_tokens": 16},
    # the benchmark's shape: B x k = 8 samples a step, 32 new tokens.
    "bench": {"prompts_per_step": 4, "samples_per_prompt": 2, "max_new_tokens": 32},
    # a GPU run: larger batches and longer answers.
    "gpu": {"prompts_per_step": 16, "samples_per_prompt": 4, "max_new_tokens": 64},
    # the sketch's suggested scale-up (needs the Hub once): GPT-2 Medium, LoRA r=16, dropout 0.1,
    # its backbone in 8 bits on a GPU.
    "gpt2-medium": {"model": "gpt2-medium", "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.1,
                    "quantization": "8bit", "prompts_per_step": 8, "samples_per_prompt": 4, "max_new_tokens": 64},
}


def preset(name: str, **overrides) -> HybridConfig:
    """``HybridConfig`` from a preset plus overrides: ``preset("quick", mode="sft")``."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return HybridConfig.from_dict({**PRESETS[name], **overrides})
