"""``HybridConfig``: every knob of a hybrid SFT + REINFORCE run, documented and validated.

Each field has a default that runs on a laptop CPU and, TRL style, a ``section`` and a
``help`` text in its metadata (meaning and typical range); ``python -m lab train --help``
shows them, one group per section. ``__post_init__`` rejects bad values with a ``ValueError``
that names the field and says how to fix it; what needs data or a model (does the dataset
exist, does the model load) is checked where they load (:func:`lab.data.check_source`,
:func:`lab.models.load`). Presets (``PRESETS``) change only what differs.

Values typed by people (CLI flags, YAML/JSON files, flat or by section) are read by the field's
type in :mod:`lab.readers.config_text` (``"1e-4"`` -> ``0.0001``): :meth:`HybridConfig.from_dict`
and :meth:`HybridConfig.load` apply it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lab.core import checks
from lab.readers import config_text
from lab.runtime.quantization import QUANTIZATIONS
from lab.runtime.tracking import REPORT_TO

LIMITS = {"max_new_tokens": 8192, "max_prompt_tokens": 131072, "prompts_per_step": 4096,
          "samples_per_prompt": 256, "lora_r": 1024, "ppo_epochs": 100}  # larger is a typo, not a run
MODES, DISTILL_TEACHERS = ("sft", "rl", "hybrid", "selfplay", "distill"), ("policy", "base")
BASELINES = ("ema", "loo", "group", "critic", "discriminator_biased")
LOSS_TYPES = ("reinforce", "ppo", "grpo", "dr_grpo", "dapo", "bnpo")  # TRL's names (lab.losses.policy_loss)
SCHEDULES, IMPORTANCE_LEVELS = ("constant", "linear", "adaptive"), ("token", "sequence")
SAMPLERS, SFT_SCHEDULES, SFT_TOKEN_WEIGHTS = ("nucleus", "beam"), ("none", "constant", "chord", "srft"), ("uniform", "phi")
REWARD_SOURCES, DISCRIMINATOR_LOSSES = ("reward", "discriminator", "mix"), ("mse", "mse+contrastive", "bradley_terry")
RENAMED = {"policy_loss": "loss_type"}  # old field -> new: configs and checkpoints saved before still load
DTYPES, TRAIN_DISCRIMINATOR, PERPLEXITY_FORMS = ("auto", "float32", "bfloat16", "float16"), ("auto", "always"), \
    ("scaled", "sketch")
REWARD_NAMES = ("semantic", "perplexity", "rouge", "bleu", "repetition", "length", "truthfulness")
CHOICES = {"mode": MODES, "lambda_schedule": SCHEDULES, "baseline": BASELINES, "reward_source": REWARD_SOURCES,
           "discriminator_loss": DISCRIMINATOR_LOSSES, "loss_type": LOSS_TYPES, "sampler": SAMPLERS,
           "quantization": QUANTIZATIONS, "dtype": DTYPES, "train_discriminator": TRAIN_DISCRIMINATOR,
           "sft_schedule": SFT_SCHEDULES, "sft_token_weight": SFT_TOKEN_WEIGHTS,
           "perplexity_form": PERPLEXITY_FORMS, "importance_sampling_level": IMPORTANCE_LEVELS,
           "distill_teacher": DISTILL_TEACHERS}  # field -> its valid values
SECTIONS = {  # section -> what its fields set, in the order of the fields (and of a step)
    "model": "the generator's backbone, where it runs, its LoRA adapter",
    "data": "the training rows (a source, a file or a mix) and a stream that grows",
    "sampling": "phase B's samples, B prompts x k responses, and how they are drawn",
    "reward": "what a sample scores, and the baseline its advantage subtracts",
    "discriminator": "the critic's model, adapter and loss, when and how much it trains, its warm start",
    "objective": "the generator's loss (mode, lambda, policy loss, KL, entropy, LUFFY, HPT, self-play)",
    "schedule": "how the SFT / RL mix moves over the steps (lambda's and mu's schedules)",
    "run": "the optimiser step, the seed, checkpoints, the history kept in memory, the non-finite guard, tracking",
}


@dataclass
class HybridConfig:
    """Configuration of :class:`lab.trainer.HybridTrainer` (and the CLI, widgets, ablation).

    Its fields come in sections, in the order of a step: model, data, sampling, reward,
    discriminator, objective, schedule, run (:data:`SECTIONS` says what each holds;
    :meth:`sections` lists their fields). The class stays flat (``config.temperature``); a dict
    or file names the fields flat or by section, ``{"sampling": {"temperature": 0.8}}``.
    """

    # --- model --------------------------------------------------------------------------
    model: str = field(default="auto", metadata={"section": "model", "help": (
        "generator backbone: 'auto', 'smollm2-135m', 'tiny-gpt2' or any Hub causal-LM id")})
    device: str = field(default="auto", metadata={"section": "model", "help": (
        "'auto' (cuda > mps > cpu), 'cpu', 'cuda', 'cuda:1' ...")})
    dtype: str = field(default="auto", metadata={"section": "model", "help": (
        "weights: 'auto' (bf16 where the hardware multiplies it natively: CUDA GPUs with bf16, CPUs "
        "with AVX512-BF16 or AMX; fp16 + a gradient scaler on other CUDA GPUs (T4); else fp32; LAB_DTYPE overrides), "
        "'float32', 'bfloat16', or 'float16' (CUDA only); LoRA adapters and heads stay fp32")})
    quantization: str = field(default="none", metadata={"section": "model", "help": (
        "'none'; '8bit' / '4bit' (QLoRA, NF4): the frozen backbone through bitsandbytes, on a CUDA GPU only; "
        "'int8': int8 weight-only linear layers through torchao, on a CPU or a GPU (models with nn.Linear "
        "layers, e.g. SmolLM2; GPT-2's Conv1D gets a clear error)")})
    lora_r: int = field(default=8, metadata={"section": "model", "help": "adapter rank (both adapters); 2-64"})
    lora_alpha: int = field(default=16, metadata={"section": "model", "help": (
        "LoRA scaling numerator; usually 2 * lora_r")})
    lora_dropout: float = field(default=0.0, metadata={"section": "model", "help": (
        "dropout on the adapter input, 0-0.1; 0 scores the samples under exactly the policy that "
        "drew them (TRL turns dropout off for RL too)")})
    # --- data ---------------------------------------------------------------------------
    dataset: str = field(default="bundled", metadata={"section": "data", "help": (
        "'bundled', 'factual', 'alpaca', 'dolly', 'oasst', 'truthfulqa', 'arc', 'auto', a local "
        "JSON/JSONL/CSV path (Alpaca layout, or Dolly/OASST/TruthfulQA/ARC by their columns), or a "
        "weighted mix 'bundled:0.7,factual:0.3' (lab/readers/sources.py)")})
    dataset_columns: str | None = field(default=None, metadata={"section": "data", "help": (
        "a local file's column names as a JSON mapping of the kit's fields (instruction, input, output, "
        "category, correct, incorrect), e.g. '{\"instruction\": \"prompt\", \"output\": \"response\"}'")})
    chat_template: bool = field(default=False, metadata={"section": "data", "help": (
        "format prompts with the tokenizer's chat template")})
    stream: str | None = field(default=None, metadata={"section": "data", "help": (
        "a JSONL file of prompt/answer rows that may grow while the run goes on (online learning); "
        "new rows are trained on as they arrive")})
    replay_ratio: float = field(default=0.5, metadata={"section": "data", "help": (
        "'stream': share of each batch replayed from the fixed dataset (anchors); 0-1")})
    # --- sampling (phase B) -------------------------------------------------------------
    prompts_per_step: int = field(default=4, metadata={"section": "sampling", "help": "B: prompts a step; 2-64"})
    samples_per_prompt: int = field(default=2, metadata={"section": "sampling", "help": (
        "k: responses per prompt; 'loo' needs k >= 2; 1-8")})
    max_new_tokens: int = field(default=32, metadata={"section": "sampling", "help": (
        "response length cap in tokens; 16-128")})
    max_prompt_tokens: int = field(default=256, metadata={"section": "sampling", "help": (
        "longer prompts are cut from the left; 64-1024")})
    temperature: float = field(default=0.7, metadata={"section": "sampling", "help": (
        "sampling temperature, > 0; 0.5-1.2")})
    top_p: float = field(default=0.9, metadata={"section": "sampling", "help": "nucleus sampling, in (0, 1]; 0.8-1.0"})
    sampler: str = field(default="nucleus", metadata={"section": "sampling", "help": (
        "'nucleus' (temperature + top-p sampling), or 'beam': the k best beams (off-policy: beams are "
        "not draws from the policy, so the REINFORCE estimate is biased)")})
    num_beams: int = field(default=4, metadata={"section": "sampling", "help": (
        "'beam': beams kept per prompt, >= k; 2-8")})
    # --- reward -------------------------------------------------------------------------
    reward_weights: dict[str, float] = field(
        default_factory=lambda: {"semantic": 0.7, "perplexity": 0.3}, metadata={"section": "reward", "help": (
            "weight per reward part, a JSON/YAML mapping; names: " + ", ".join(REWARD_NAMES))})
    perplexity_form: str = field(default="scaled", metadata={"section": "reward", "help": (
        "the perplexity reward: 'scaled', exp(-nll / 4) in (0, 1], or 'sketch', the original sketch's "
        "1 / (1 + ppl), about 0.01-0.05 for fluent text: almost no signal (notebook 01)")})
    truthfulness_corpus: str | None = field(default=None, metadata={"section": "reward", "help": (
        "passages JSONL ({id, title, text} per line) for the truthfulness reward and metric; "
        "None: the bundled data/factual/passages.jsonl")})
    reward_source: str = field(default="reward", metadata={"section": "reward", "help": (
        "what phase B maximises: 'reward', 'discriminator' (adversarial), or a 'mix'")})
    reward_mix: float = field(default=0.5, metadata={"section": "reward", "help": (
        "'mix': weight of the discriminator's score, 0-1")})
    naturalness_weight: float = field(default=0.0, metadata={"section": "reward", "help": (
        "reward + w x sigmoid(D(x, y) - D(x, reference)), the odds a Bradley-Terry discriminator gives the "
        "sample of passing for the reference: a naturalness term beside the true reward; 0-1")})
    baseline: str = field(default="critic", metadata={"section": "reward", "help": (
        "'critic' (the default, the seed's 'predicted reward': the discriminator's mean score of the "
        "prompt's other samples, unbiased; needs k >= 2), 'ema' (running mean: the D-free loop, "
        "--preset fast), 'loo' (mean of the prompt's other samples' rewards), 'group' (mean of all k, "
        "GRPO), or 'discriminator_biased' (D(x, y) of the sample itself: biased, a teaching arm)")})
    ema_decay: float = field(default=0.9, metadata={"section": "reward", "help": (
        "'ema' baseline: b <- decay*b + (1-decay)*mean reward; in [0, 1), 0.8-0.99")})
    scale_rewards: bool = field(default=False, metadata={"section": "reward", "help": (
        "divide advantages by the std of the prompt's k rewards (GRPO's scale_rewards); needs k >= 2")})
    # --- discriminator ------------------------------------------------------------------
    discriminator_model: str | None = field(default=None, metadata={"section": "discriminator", "help": (
        "None: the discriminator shares the generator's backbone; a model name: its own model")})
    discriminator_lora_r: int = field(default=0, metadata={"section": "discriminator", "help": (
        "the discriminator's own LoRA rank (0: lora_r); 2-64")})
    discriminator_top_layers: int = field(default=8, metadata={"section": "discriminator", "help": (
        "its LoRA on the top N blocks only (0: all); backward stops there")})
    discriminator_loss: str = field(default="mse", metadata={"section": "discriminator", "help": (
        "'mse' (regress the reward), 'mse+contrastive' (also reference answers ranked above junk), or "
        "'bradley_terry' (GAD: the reference above each of the prompt's samples; its score of a sample is "
        "D(x, y) - D(x, reference), which reward_source='discriminator' maximises)")})
    contrastive_weight: float = field(default=1.0, metadata={"section": "discriminator", "help": (
        "weight of the ranking term (mse+contrastive: references above junk; bradley_terry: its loss); 0.1-2")})
    discriminator_aux_weight: float = field(default=0.0, metadata={"section": "discriminator", "help": (
        "weight of an auxiliary head that predicts the response's perplexity (mean NLL under the base "
        "model) beside the reward; 0 disables; 0.1-1")})
    train_discriminator: str = field(default="auto", metadata={"section": "discriminator", "help": (
        "'auto': train the discriminator only when the run reads its scores (a critic baseline, a "
        "discriminator reward, self-play, adaptive lambda, the aux head), which saves its pass and "
        "update; 'always': also for its curves and the reward-hacking diagnostics")})
    freeze_discriminator_after: int = field(default=0, metadata={"section": "discriminator", "help": (
        "stop updating the discriminator after this many steps (0: never); its scores are still used: "
        "a frozen critic vs one trained online, the reward-hacking experiment")})
    lr_discriminator: float = field(default=3e-4, metadata={"section": "discriminator", "help": (
        "discriminator (LoRA + head) learning rate; 1e-5 - 1e-3")})
    discriminator_steps: int = field(default=1, metadata={"section": "discriminator", "help": (
        "discriminator updates per generator step, on that step's samples; 1-4")})
    discriminator_warmup_steps: int = field(default=30, metadata={"section": "discriminator", "help": (
        "warm start before the loop (notebook 03's recipe): this many updates on training references, "
        "their junk and the untrained generator's answers, cached per model, data and settings; 0: "
        "start from scratch; 10-100")})
    # --- objective (the generator's loss) -----------------------------------------------
    mode: str = field(default="hybrid", metadata={"section": "objective", "help": (
        "'sft' (phase A only), 'rl' (phase B only), 'hybrid' (both), 'selfplay' (phase B against a "
        "frozen snapshot, rewarded by the discriminator's preference), or 'distill' (its own samples, "
        "reverse KL to a teacher: SDFT, or distill_from)")})
    lambda_rl: float = field(default=0.5, metadata={"section": "objective", "help": (
        "weight of the RL terms against SFT in mode 'hybrid'; 0-2 (mode 'rl' uses 1, 'sft' 0)")})
    loss_type: str = field(default="reinforce", metadata={"section": "objective", "help": (
        "the policy loss (TRL's loss_type): 'reinforce', -(R - b) log pi(y|x); or a clipped ratio against "
        "the sampling policy (ppo_epochs passes over ppo_minibatches) that weighs tokens by: 'ppo' the sum "
        "per response (the kit's), 'grpo' the mean per response, 'dr_grpo' / (N x max_new_tokens), 'bnpo' the "
        "mean per token, 'dapo' per token of the whole step, with epsilon_high (notebook 08)")})
    ppo_epochs: int = field(default=1, metadata={"section": "objective", "help": (
        "clipped losses: optimizer passes over each step's samples; 1-4 (1: the REINFORCE gradient)")})
    ppo_minibatches: int = field(default=1, metadata={"section": "objective", "help": (
        "clipped losses: minibatches of prompts per pass (a prompt's k samples stay together); 1-B")})
    clip_range: float = field(default=0.2, metadata={"section": "objective", "help": (
        "clipped losses: the ratio is clipped to [1 - clip_range, 1 + clip_range]; 0.1-0.3")})
    epsilon_high: float = field(default=0.0, metadata={"section": "objective", "help": (
        "clipped losses: the upper clip 1 + epsilon_high (DAPO's clip-higher: 0.28); 0: clip_range")})
    importance_sampling_level: str = field(default="token", metadata={"section": "objective", "help": (
        "clipped losses: a ratio per 'token', or per 'sequence' (GSPO: exp of the mean token log-ratio)")})
    kl_coef: float = field(default=0.0, metadata={"section": "objective", "help": (
        "KL penalty to the base model (adapters off); 0-0.2")})
    entropy_coef: float = field(default=0.0, metadata={"section": "objective", "help": "entropy bonus; 0-0.05"})
    sft_token_weight: str = field(default="uniform", metadata={"section": "objective", "help": (
        "'uniform', or 'phi': each SFT token weighted by p * (1 - p) (CHORD-phi), so tokens the policy "
        "already knows (p ~ 1) or finds absurd (p ~ 0) pull less")})
    reference_in_group: bool = field(default=False, metadata={"section": "objective", "help": (
        "LUFFY: the reference answer joins its prompt's group of samples as an off-policy member, "
        "with its own reward in the baseline and its own policy-gradient term")})
    per_prompt_switch: bool = field(default=False, metadata={"section": "objective", "help": (
        "HPT: per prompt, SFT when all its samples score below switch_threshold, else RL")})
    switch_threshold: float = field(default=0.5, metadata={"section": "objective", "help": (
        "'per_prompt_switch': the reward a sample must reach for its prompt to count as solved; 0-1")})
    selfplay_refresh: int = field(default=10, metadata={"section": "objective", "help": (
        "'selfplay': copy the generator into the frozen opponent every N steps; 5-50")})
    distill_teacher: str = field(default="policy", metadata={"section": "objective", "help": (
        "'distill' without distill_from (SDFT): the teacher is the generator with its current adapter "
        "('policy') or with adapters off ('base'), shown the reference answer before the prompt")})
    distill_from: str | None = field(default=None, metadata={"section": "objective", "help": (
        "'distill': a larger teacher model (Hub or local, the generator's tokenizer), shown the plain prompt")})
    # --- schedule (the SFT / RL mix over the steps; CHORD, SRFT) -------------------------
    lambda_schedule: str = field(default="constant", metadata={"section": "schedule", "help": (
        "'constant', 'linear' warm-up, or 'adaptive' (scaled by the discriminator's accuracy)")})
    lambda_warmup_steps: int = field(default=20, metadata={"section": "schedule", "help": (
        "'linear': steps to ramp lambda from 0 to lambda_rl; 10-100")})
    sft_schedule: str = field(default="none", metadata={"section": "schedule", "help": (
        "'none': loss = SFT + lambda * RL; else loss = mu * SFT + (1 - mu) * RL with mu 'constant', "
        "'chord' (warm-up then cosine decay) or 'srft' (mu * exp(-entropy of the policy))")})
    mu: float = field(default=0.5, metadata={"section": "schedule", "help": (
        "the SFT weight mu (its peak for 'chord'); 0-1")})
    mu_min: float = field(default=0.0, metadata={"section": "schedule", "help": "'chord': mu after the cosine decay; 0-mu"})
    mu_warmup_steps: int = field(default=5, metadata={"section": "schedule", "help": (
        "'chord': steps of linear warm-up to mu; 0-50")})
    mu_decay_steps: int = field(default=50, metadata={"section": "schedule", "help": (
        "'chord': steps of cosine decay to mu_min; 10-1000")})
    # --- run ----------------------------------------------------------------------------
    lr: float = field(default=1e-4, metadata={"section": "run", "help": "generator (LoRA) learning rate; 1e-5 - 1e-3"})
    max_grad_norm: float = field(default=1.0, metadata={"section": "run", "help": (
        "gradient clipping of the generator (max L2 norm); 0 disables; 0.5-5")})
    seed: int = field(default=0, metadata={"section": "run", "help": "seeds python, numpy, torch and the data order"})
    checkpoint_every: int = field(default=0, metadata={"section": "run", "help": (
        "save a checkpoint every N steps (0: only at the end)")})
    history_window: int = field(default=0, metadata={"section": "run", "help": (
        "history and samples rows kept in memory: the last N steps' (0: all; an output folder keeps every one)")})
    max_nonfinite_steps: int = field(default=3, metadata={"section": "run", "help": (
        "stop (saving the last good state) after this many steps in a row whose reward, loss or "
        "gradient was not finite; each such update is skipped; 1-10")})
    report_to: str = field(default="auto", metadata={"section": "run", "help": (
        "experiment tracking of a run with an output folder (TRL's names): 'auto' (TensorBoard when "
        "installed, into OUT/tensorboard), 'none', 'tensorboard', 'trackio', 'wandb', or a comma-separated list")})

    def __post_init__(self):
        for name, choices in CHOICES.items():
            checks.choice(name, getattr(self, name), choices)
        for name in ("lora_r", "lora_alpha", "prompts_per_step", "samples_per_prompt",
                     "max_new_tokens", "max_prompt_tokens", "lambda_warmup_steps", "ppo_epochs", "ppo_minibatches",
                     "max_nonfinite_steps", "num_beams", "selfplay_refresh", "mu_decay_steps", "discriminator_steps"):
            checks.whole(name, getattr(self, name), 1, LIMITS.get(name))
        for name in ("checkpoint_every", "history_window", "discriminator_top_layers", "seed", "mu_warmup_steps",
                     "discriminator_lora_r", "freeze_discriminator_after", "discriminator_warmup_steps"):
            checks.whole(name, getattr(self, name), 0)
        for name in ("lr", "lr_discriminator"):
            checks.in_range(name, getattr(self, name), low=0.0, high=1.0, low_open=True)
        checks.in_range("temperature", self.temperature, low=0.0, low_open=True)
        for name in ("lora_dropout", "ema_decay"):
            checks.in_range(name, getattr(self, name), low=0.0, high=1.0, high_open=True)
        for name in ("top_p", "reward_mix", "clip_range", "epsilon_high", "mu", "mu_min", "switch_threshold", "replay_ratio"):
            checks.in_range(name, getattr(self, name), low=0.0, high=1.0, low_open=name in ("top_p", "clip_range"))
        for name in ("lambda_rl", "kl_coef", "entropy_coef", "max_grad_norm", "contrastive_weight",
                     "discriminator_aux_weight", "naturalness_weight"):
            checks.in_range(name, getattr(self, name), low=0.0)
        checks.weights("reward_weights", self.reward_weights, REWARD_NAMES)
        for name in str(self.report_to).split(","):
            checks.choice("report_to", name.strip(), REPORT_TO)
        self._check_combinations()
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError("model must be a model name such as 'auto', 'smollm2-135m', 'tiny-gpt2' or 'gpt2'")

    def _check_combinations(self) -> None:
        k = self.samples_per_prompt
        if (self.baseline in ("loo", "group", "critic") or self.scale_rewards) and k < 2:
            what = "scale_rewards=True" if self.scale_rewards else f"baseline={self.baseline!r}"
            fix = "; with one sample a prompt use baseline='ema' (--preset fast)" if self.baseline == "critic" else ""
            raise ValueError(f"{what} compares the k samples of a prompt and needs samples_per_prompt >= 2; "
                             f"got samples_per_prompt={k}{fix}")
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
        relative = self.discriminator_loss == "bradley_terry"  # D's scores: how reference-like, not the reward
        if relative and (self.mode not in ("rl", "hybrid") or self.contrastive_weight == 0 or (
                self.reward_source == "reward" and self.baseline in ("critic", "discriminator_biased"))):
            raise ValueError("discriminator_loss='bradley_terry' (GAD) scores how reference-like a sample is, not its "
                             "reward: use it in mode 'rl' or 'hybrid' with contrastive_weight > 0 (its weight), and "
                             "reward_source='discriminator' or a baseline of the reward ('loo', 'group', 'ema')")
        if self.naturalness_weight > 0 and (not relative or self.reward_source == "discriminator"):
            raise ValueError("naturalness_weight adds D's reference-vs-sample score to the true reward: set "
                             "discriminator_loss='bradley_terry' and reward_source 'reward' or 'mix'")
        if self.mode == "distill" and self.loss_type != "reinforce":
            raise ValueError("mode='distill' minimises a reverse KL, no ratio to clip: leave loss_type='reinforce'")
        if self.importance_sampling_level == "sequence" and self.loss_type == "reinforce":
            raise ValueError("importance_sampling_level='sequence' (GSPO) sets the ratio of a clipped loss; "
                             "choose loss_type='grpo' (GSPO's) or another clipped loss_type")
        if self.ppo_minibatches > self.prompts_per_step:
            raise ValueError(f"ppo_minibatches={self.ppo_minibatches} exceeds prompts_per_step="
                             f"{self.prompts_per_step}; a minibatch holds at least one prompt")

    # --- derived values and I/O -----------------------------------------------------------
    @property
    def discriminator_used(self) -> bool:
        """True when the run reads the discriminator's scores (so it must be trained), or
        ``train_discriminator='always'`` asks for it anyway."""
        if self.mode == "distill":  # the teacher guides it; nothing reads a critic
            return False
        return (self.train_discriminator == "always" or self.mode == "selfplay"
                or self.baseline in ("critic", "discriminator_biased") or self.reward_source != "reward"
                or self.lambda_schedule == "adaptive" or self.discriminator_aux_weight > 0
                or self.naturalness_weight > 0)

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
    def sections(cls) -> dict[str, tuple[str, ...]]:
        """The field names by section, in order: ``--help``'s groups, the README's table, the
        playground's tabs.

        >>> HybridConfig.sections()["run"]
        ('lr', 'max_grad_norm', 'seed', 'checkpoint_every', 'history_window', 'max_nonfinite_steps', 'report_to')
        """
        return config_text.sections(cls)

    @classmethod
    def from_dict(cls, values: dict) -> "HybridConfig":
        """Build from a dict, flat or by section, whose values may be text (read by the field's
        type: :func:`lab.readers.config_text.coerce`); an unknown key raises a ``ValueError``
        listing the known ones.

        >>> HybridConfig.from_dict({"lr": "2e-4", "chat_template": "no"}).lr
        0.0002
        >>> HybridConfig.from_dict({"sampling": {"temperature": 0.8}, "run": {"seed": 3}}).seed
        3
        """
        return cls(**{name: config_text.coerce(cls, name, value)
                      for name, value in config_text.flat(cls, values, renamed=RENAMED).items()})

    @classmethod
    def load(cls, path: str | Path) -> "HybridConfig":
        """Read a JSON or YAML file (.json, .yaml, .yml), flat or by section; the rest stays default."""
        return cls.from_dict(config_text.read_file(cls, path))


# Presets change only what differs from the defaults (nanoGPT style).
PRESETS: dict[str, dict] = {
    "default": {},
    # the D-free hybrid: SFT + REINFORCE, EMA baseline, no discriminator (faster; the seed without its critic)
    "fast": {"baseline": "ema", "discriminator_warmup_steps": 0},
    # CI / classroom: tiny batches, short answers.
    "quick": {"prompts_per_step": 2, "samples_per_prompt": 2, "max_new_tokens": 16},
    # the benchmark's shape: B x k = 8 samples a step, 32 new tokens.
    "bench": {"prompts_per_step": 4, "samples_per_prompt": 2, "max_new_tokens": 32},
    # a GPU run: larger batches and longer answers; t4: Colab's free GPU (16 GB, no bf16: fp16 + gradient scaler)
    "gpu": {"prompts_per_step": 16, "samples_per_prompt": 4, "max_new_tokens": 64},
    "t4": {"prompts_per_step": 8, "samples_per_prompt": 4, "max_new_tokens": 64},
    # the sketch's scale-up (needs the Hub once): GPT-2 Medium, LoRA r=16, dropout 0.1, 8-bit backbone on a GPU
    "gpt2-medium": {"model": "gpt2-medium", "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.1,
                    "quantization": "8bit", "prompts_per_step": 8, "samples_per_prompt": 4, "max_new_tokens": 64},
}


def preset(name: str, **overrides) -> HybridConfig:
    """``HybridConfig`` from a preset plus overrides: ``preset("quick", mode="sft")``."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return HybridConfig.from_dict({**PRESETS[name], **overrides})
