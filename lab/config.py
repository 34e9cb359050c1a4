"""``HybridConfig``: every knob of a hybrid SFT + REINFORCE run, documented and validated.

Each field has a default that runs on a laptop CPU and a comment with its meaning and
typical range. ``__post_init__`` rejects bad values with a ``ValueError`` that names the
field and says how to fix it. Presets (``PRESETS``) change only what differs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

MODES = ("sft", "rl", "hybrid")
SCHEDULES = ("constant", "linear", "adaptive")
BASELINES = ("ema", "discriminator", "loo")
REWARD_SOURCES = ("reward", "discriminator", "mix")
DISCRIMINATOR_LOSSES = ("mse", "mse+contrastive")
REWARD_NAMES = ("semantic", "perplexity", "rouge", "bleu", "repetition", "length")


@dataclass
class HybridConfig:
    """Configuration of :class:`lab.trainer.HybridTrainer` (and the CLI, widgets, ablation)."""

    # --- models -----------------------------------------------------------------------
    model: str = "auto"  # "auto", "smollm2-135m", "tiny-gpt2" or any Hub causal-LM id
    discriminator_model: str | None = None  # None: share the generator's backbone; a name: own model
    device: str = "auto"  # "auto" (cuda > mps > cpu), "cpu", "cuda", "cuda:1" ...
    # --- LoRA (both adapters) -----------------------------------------------------------
    lora_r: int = 8  # adapter rank; 2-64
    lora_alpha: int = 16  # scaling numerator; usually 2 * lora_r
    lora_dropout: float = 0.0  # dropout on the adapter input, 0-0.1; 0 scores the samples under
    # exactly the policy that drew them (TRL turns dropout off for RL too)
    # --- optimisation -------------------------------------------------------------------
    lr: float = 1e-4  # generator (LoRA) learning rate; 1e-5 - 1e-3
    lr_discriminator: float = 3e-4  # discriminator (LoRA + head) learning rate
    max_grad_norm: float = 1.0  # gradient clipping of the generator; 0 disables
    # --- sampling (phase B) -------------------------------------------------------------
    prompts_per_step: int = 4  # B: prompts a step
    samples_per_prompt: int = 2  # k: responses per prompt; "loo" needs k >= 2
    max_new_tokens: int = 32  # response length cap; 16-128
    temperature: float = 0.7  # sampling temperature; 0.5-1.2
    top_p: float = 0.9  # nucleus sampling; 0.8-1.0
    max_prompt_tokens: int = 256  # longer prompts are cut from the left
    # --- objective ----------------------------------------------------------------------
    mode: str = "hybrid"  # "sft" (phase A only), "rl" (phase B only) or "hybrid" (both)
    lambda_rl: float = 0.5  # weight of the RL terms against SFT; 0-2
    lambda_schedule: str = "constant"  # "constant", "linear" warm-up, "adaptive" (discriminator accuracy)
    lambda_warmup_steps: int = 20  # "linear": steps to ramp lambda from 0 to lambda_rl
    reward_weights: dict[str, float] = field(
        default_factory=lambda: {"semantic": 0.7, "perplexity": 0.3})  # names: REWARD_NAMES
    baseline: str = "ema"  # "ema", "discriminator" (critic) or "loo" (leave-one-out over k)
    ema_decay: float = 0.9  # "ema" baseline: b <- decay*b + (1-decay)*mean reward
    reward_source: str = "reward"  # what phase B maximises: "reward", "discriminator", or a "mix"
    reward_mix: float = 0.5  # "mix": weight of the discriminator's score (0-1)
    kl_coef: float = 0.0  # KL penalty to the base model (adapters off); 0-0.2
    entropy_coef: float = 0.0  # entropy bonus; 0-0.05
    # --- discriminator ------------------------------------------------------------------
    discriminator_loss: str = "mse"  # "mse" or "mse+contrastive" (reference vs junk)
    discriminator_top_layers: int = 8  # its LoRA on the top N blocks only (0: all); backward stops there
    contrastive_weight: float = 1.0  # weight of the contrastive term
    # --- data and run -------------------------------------------------------------------
    dataset: str = "bundled"  # "bundled", "alpaca", "auto", or a local JSON/JSONL/CSV path
    chat_template: bool = False  # format prompts with the tokenizer's chat template
    seed: int = 0  # seeds python, numpy, torch and the data order
    checkpoint_every: int = 0  # save a checkpoint every N steps (0: only at the end)

    def __post_init__(self):
        self._check_choice("mode", MODES)
        self._check_choice("lambda_schedule", SCHEDULES)
        self._check_choice("baseline", BASELINES)
        self._check_choice("reward_source", REWARD_SOURCES)
        self._check_choice("discriminator_loss", DISCRIMINATOR_LOSSES)
        for name in ("lora_r", "lora_alpha", "prompts_per_step", "samples_per_prompt",
                     "max_new_tokens", "max_prompt_tokens", "lambda_warmup_steps"):
            self._check_int(name, minimum=1)
        self._check_int("checkpoint_every", minimum=0)
        self._check_int("discriminator_top_layers", minimum=0)
        self._check_int("seed", minimum=0)
        for name in ("lr", "lr_discriminator", "temperature"):
            self._check_range(name, low=0.0, low_open=True)
        for name in ("lora_dropout", "ema_decay"):
            self._check_range(name, low=0.0, high=1.0, high_open=True)
        for name in ("top_p", "reward_mix"):
            self._check_range(name, low=0.0, high=1.0, low_open=name == "top_p")
        for name in ("lambda_rl", "kl_coef", "entropy_coef", "max_grad_norm", "contrastive_weight"):
            self._check_range(name, low=0.0)
        self._check_weights()
        if self.baseline == "loo" and self.samples_per_prompt < 2:
            raise ValueError("baseline='loo' needs samples_per_prompt >= 2 (leave-one-out over the "
                             f"k samples of a prompt); got samples_per_prompt={self.samples_per_prompt}")
        if self.baseline == "discriminator" and self.reward_source == "discriminator":
            raise ValueError("baseline='discriminator' with reward_source='discriminator' makes every "
                             "advantage zero; use baseline='ema' or 'loo' in the adversarial mode")
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError("model must be a model name such as 'auto', 'smollm2-135m', 'tiny-gpt2' or 'gpt2'")

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
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
        ok = ok and (value > low if low_open else value >= low)
        ok = ok and (high is None or (value < high if high_open else value <= high))
        if not ok:
            bounds = f"{'(' if low_open else '['}{low}, {high if high is not None else 'inf'}{')' if high_open or high is None else ']'}"
            raise ValueError(f"{name}={value!r} is out of range; it must lie in {bounds}")

    def _check_weights(self) -> None:
        weights = self.reward_weights
        if not isinstance(weights, dict) or not weights:
            raise ValueError("reward_weights must be a non-empty dict such as "
                             "{'semantic': 0.7, 'perplexity': 0.3}")
        unknown = sorted(set(weights) - set(REWARD_NAMES))
        if unknown:
            raise ValueError(f"reward_weights has unknown reward(s) {unknown}; "
                             f"known: {', '.join(REWARD_NAMES)}")
        if any(not isinstance(w, (int, float)) or w != w for w in weights.values()):
            raise ValueError(f"reward_weights values must be numbers, got {weights}")
        if not any(weights.values()):
            raise ValueError("reward_weights are all zero; give at least one reward a nonzero weight")

    # --- derived values and I/O -----------------------------------------------------------
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
        """Build from a dict; unknown keys raise a ``ValueError`` listing the known fields."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown config field(s) {unknown}; known fields: {', '.join(sorted(known))}")
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> "HybridConfig":
        """Read a JSON or YAML file (``.json``, ``.yaml``, ``.yml``)."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"Config file {path} does not exist")
        text = path.read_text()
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                values = yaml.safe_load(text) or {}
            else:
                values = json.loads(text)
        except Exception as err:
            raise ValueError(f"Config file {path} could not be parsed: {err}") from err
        if not isinstance(values, dict):
            raise ValueError(f"Config file {path} must hold a mapping of field: value")
        return cls.from_dict(values)


# Presets change only what differs from the defaults (nanoGPT style).
PRESETS: dict[str, dict] = {
    "default": {},
    # CI / classroom: tiny batches, short answers.
    "quick": {"prompts_per_step": 2, "samples_per_prompt": 2, "max_new_tokens": 16},
    # the benchmark's shape: B x k = 8 samples a step, 32 new tokens.
    "bench": {"prompts_per_step": 4, "samples_per_prompt": 2, "max_new_tokens": 32},
    # a GPU run: larger batches and longer answers.
    "gpu": {"prompts_per_step": 16, "samples_per_prompt": 4, "max_new_tokens": 64},
}


def preset(name: str, **overrides) -> HybridConfig:
    """``HybridConfig`` from a preset plus overrides: ``preset("quick", mode="sft")``."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return HybridConfig.from_dict({**PRESETS[name], **overrides})
