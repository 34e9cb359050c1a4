"""Ablation arms: each one a one-line description and the config fields it changes.

An arm is the variable under study; everything else is the experiment's setting, the same for
every arm. Adding an experiment is one entry in :data:`ARMS` (or one entry in a YAML file given
to ``python -m lab ablate --arms-file``, read by :func:`read_arms_file`).

An arm's :class:`~lab.config.HybridConfig` is built in layers, lowest first:

1. the ablation preset's config (``lab.experiments.ablation.ABLATION_PRESETS``);
2. ``--set key=value`` (repeatable; ``--model``, ``--dataset`` are shortcuts): the experiment's
   setting, the same for every arm, read by the field's type (:func:`lab.readers.config_text.coerce`);
3. the arm's changes;
4. ``--set ARM.key=value``: changes one arm (e.g. which model ``larger_d``'s critic is).

A ``--set key`` that an arm in the run also changes is an error, never resolved silently:
either the arm would not be the experiment its description says, or the "setting for every
arm" would not hold for every arm. Use ``--set ARM.key=value`` to change that arm, or leave
the arm out. The seed is never set here: ``--seeds`` gives each run its own.

A change may be :class:`Derived` from the experiment (its steps, its common config), e.g.
``curriculum`` ramps lambda over the run's steps and ``larger_d`` takes the next size of the
generator's model family; what an arm really ran is saved in ``ablation.json`` and the report.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lab.config import HybridConfig
from lab.data import check_source, data_dir
from lab.models import resolve
from lab.readers.config_text import coerce

FIELDS = tuple(f.name for f in dataclasses.fields(HybridConfig))
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+-]*$")  # a folder name, no '.' (that is --set ARM.key)


@dataclass(frozen=True)
class Derived:
    """A change computed from the experiment: ``fn(config, steps)``, where ``config`` is the
    common config dict (preset < ``--set``); ``text`` says what it is in ``--list``."""

    text: str
    fn: Callable[[dict, int], object]

    def __str__(self) -> str:
        return f"<{self.text}>"


@dataclass(frozen=True)
class Arm:
    """One arm: ``changes`` to the experiment's config; ``None``: the untrained model.
    ``steps_factor``: the arm trains ``round(steps_factor * steps)`` steps instead of the
    experiment's ``steps`` (a number, or :class:`Derived` from the experiment's config: the
    matched-compute SFT arm's ``1 + samples_per_prompt``). ``match_time``: the arm trains as long
    (wall time) as that arm did at the same seed, its steps set then from the ``sft`` arm's
    measured seconds a step, CPU seconds on a CPU (:func:`lab.experiments.ablation.time_matched_steps`)."""

    description: str
    changes: dict | None = None
    steps_factor: float | Derived = 1.0
    match_time: str | None = None

    @property
    def trained(self) -> bool:
        return self.changes is not None

    def steps(self, steps: int, config: dict | None = None) -> int:
        """The steps this arm trains in an experiment of ``steps`` on the common ``config``."""
        factor = self.steps_factor
        factor = factor.fn(config or {}, steps) if isinstance(factor, Derived) else factor
        return max(1, int(round(factor * steps)))


# The next size of a model family, for the larger-discriminator arm. tiny-gpt2 (the random test
# model) -> the bundled SmolLM2-135M keeps the arm runnable offline; the rest need the Hub once.
NEXT_SIZE = {
    "tiny-gpt2": "smollm2-135m",
    "smollm2-135m": "HuggingFaceTB/SmolLM2-360M-Instruct",
    "HuggingFaceTB/SmolLM2-135M-Instruct": "HuggingFaceTB/SmolLM2-360M-Instruct",
    "HuggingFaceTB/SmolLM2-135M": "HuggingFaceTB/SmolLM2-360M",
    "HuggingFaceTB/SmolLM2-360M-Instruct": "HuggingFaceTB/SmolLM2-1.7B-Instruct",
    "HuggingFaceTB/SmolLM2-360M": "HuggingFaceTB/SmolLM2-1.7B",
    "distilgpt2": "gpt2", "gpt2": "gpt2-medium", "gpt2-medium": "gpt2-large", "gpt2-large": "gpt2-xl",
}


def next_size(config: dict, steps: int) -> str:
    """The next size of the generator's family (``auto`` resolved first): ``gpt2`` -> ``gpt2-medium``."""
    name = config.get("model", "auto")
    name = resolve(name).name if name == "auto" else name
    name = name.removeprefix("openai-community/")
    if name not in NEXT_SIZE:
        raise ValueError(f"arm 'larger_d': no known larger model for {name!r}; name one with "
                         "--set larger_d.discriminator_model=NAME")
    return NEXT_SIZE[name]


EXTRA_REWARDS = {"rouge": 0.2, "bleu": 0.2, "repetition": 0.2, "length": 0.1}
LARGER_D = Derived("next size of the generator's family: gpt2 -> gpt2-medium, smollm2-135m -> "
                   "HuggingFaceTB/SmolLM2-360M-Instruct, tiny-gpt2 -> smollm2-135m", next_size)
WHOLE_RUN = Derived("the run's steps: lambda reaches lambda_rl at the last step", lambda config, steps: steps)
MORE_REWARDS = Derived("the experiment's weights + " + ", ".join(f"{k} {v}" for k, v in EXTRA_REWARDS.items()),
                       lambda config, steps: {**config.get("reward_weights", HybridConfig().reward_weights),
                                              **EXTRA_REWARDS})
HYBRID = {"mode": "hybrid"}  # the default hybrid: the discriminator, warm-started, as its critic baseline
D_FREE = {"mode": "hybrid", "baseline": "ema", "discriminator_warmup_steps": 0}  # --preset fast
# A hybrid step trains on B reference answers (SFT) and B x k samples (RL) of about the same
# length: (1 + k) times the tokens of an SFT step on the same B prompts. Its wall time is larger
# still on a CPU (sampling is sequential): each report's train_seconds show the real ratio.
HYBRID_TOKENS = Derived("1 + samples_per_prompt: the hybrid's trained tokens a step (B answers + B x k samples) "
                        "over SFT's (B answers)",
                        lambda config, steps: 1 + int(config.get("samples_per_prompt",
                                                                 HybridConfig().samples_per_prompt)))


def stream_source(config: dict, steps: int) -> str:
    """The training rows as a stream file: the bundled ``train.jsonl``, or the local dataset file."""
    dataset = config.get("dataset", "bundled")
    if dataset == "bundled":
        return str(data_dir() / "train.jsonl")
    if Path(dataset).is_file() and Path(dataset).suffix == ".jsonl":
        return dataset
    raise ValueError(f"arm 'stream_replay' streams a local JSONL file; dataset {dataset!r} is not one: name a "
                     "file with --set stream_replay.stream=FILE")


HALF_RUN = Derived("half the run's steps", lambda config, steps: max(1, steps // 2))
QUARTER_RUN = Derived("a quarter of the run's steps", lambda config, steps: max(1, steps // 4))
TENTH_RUN = Derived("a tenth of the run's steps", lambda config, steps: max(1, steps // 10))
STEPS = Derived("the run's steps", lambda config, steps: steps)
TRAIN_STREAM = Derived("the training file, read as a growing stream", stream_source)
CHORD = {**HYBRID, "sft_schedule": "chord", "mu_warmup_steps": TENTH_RUN, "mu_decay_steps": STEPS}  # mu: 0.5

GAD = {"reward_source": "discriminator", "discriminator_loss": "bradley_terry"}  # arXiv 2511.10643
ARMS: dict[str, Arm] = {
    "base": Arm("the untrained model (generation settings only)"),
    "sft": Arm("SFT only: cross-entropy on the reference answers (the reference arm)", {"mode": "sft"}),
    "sft_matched": Arm("SFT at matched compute: (1 + k)x the steps, as many trained tokens as the hybrid (so a "
                       "hybrid win is not 'trained longer')", {"mode": "sft"}, steps_factor=HYBRID_TOKENS),
    "rl": Arm("REINFORCE only, no SFT term (the default critic baseline)", {"mode": "rl"}),
    "hybrid": Arm("the default: SFT + lambda * REINFORCE, the warm-started discriminator as critic baseline",
                  dict(HYBRID)),
    "sft_walltime": Arm("SFT at matched wall time: trains as long as the hybrid did at the same seed on this "
                        "machine (steps = the hybrid's training seconds / SFT's seconds a step; on a CPU, CPU seconds)",
                        {"mode": "sft"}, match_time="hybrid"),
    "hybrid_no_d": Arm("the D-free hybrid (--preset fast): EMA baseline, no discriminator trained or read",
                       dict(D_FREE)),
    "hybrid_critic_cold": Arm("hybrid, the critic without its warm start (it starts from scratch in the loop)",
                              {**HYBRID, "discriminator_warmup_steps": 0}),
    "sketch_reward": Arm("hybrid with the sketch's perplexity reward 1 / (1 + ppl) instead of exp(-nll / 4)",
                         {**HYBRID, "perplexity_form": "sketch"}),
    "hybrid+kl": Arm("hybrid + KL penalty to the base model", {**HYBRID, "kl_coef": 0.05}),
    "hybrid+entropy": Arm("hybrid + entropy bonus", {**HYBRID, "entropy_coef": 0.01}),
    "hybrid_loo": Arm("hybrid, leave-one-out baseline (mean of the prompt's other samples)",
                      {**HYBRID, "baseline": "loo"}),
    "hybrid_group": Arm("hybrid, group baseline (mean of the prompt's k samples)", {**HYBRID, "baseline": "group"}),
    "hybrid_group_scaled": Arm("hybrid, GRPO-style: group baseline, advantages divided by the group's std",
                               {**HYBRID, "baseline": "group", "scale_rewards": True}),
    "hybrid_disc_baseline": Arm("hybrid, BIASED teaching arm: baseline D(x, y) reads the sample itself",
                                {**HYBRID, "baseline": "discriminator_biased"}),
    "hybrid_ppo": Arm("hybrid, PPO-style clipped update, 2 passes over each step's samples",
                      {**HYBRID, "loss_type": "ppo", "ppo_epochs": 2}),
    "rl_ppo": Arm("RL only, PPO-style clipped update, 2 passes", {"mode": "rl", "loss_type": "ppo", "ppo_epochs": 2}),
    "grpo": Arm("hybrid, TRL's grpo loss: clipped, each response's token mean (short answers' tokens weigh "
                "more), 2 passes", {**HYBRID, "loss_type": "grpo", "ppo_epochs": 2}),
    "dr_grpo": Arm("hybrid, Dr. GRPO: clipped, tokens summed over N x max_new_tokens (no length bias), 2 passes",
                   {**HYBRID, "loss_type": "dr_grpo", "ppo_epochs": 2}),
    "bnpo": Arm("hybrid, BNPO: clipped, every token of the batch alike, 2 passes",
                {**HYBRID, "loss_type": "bnpo", "ppo_epochs": 2}),
    "dapo": Arm("hybrid, DAPO: per token of the whole step, clip-higher (1 + 0.28), 2 passes",
                {**HYBRID, "loss_type": "dapo", "epsilon_high": 0.28, "ppo_epochs": 2}),
    "gspo": Arm("hybrid, GSPO: grpo with one length-normalised ratio per response, 2 passes",
                {**HYBRID, "loss_type": "grpo", "importance_sampling_level": "sequence", "ppo_epochs": 2}),
    "adversarial": Arm("hybrid, the generator maximises the discriminator's score (GAN-style)",
                       {**HYBRID, "reward_source": "discriminator", "baseline": "ema"}),
    "adversarial_frozen_d": Arm("adversarial, but D stops learning after a quarter of the run: a frozen critic "
                                "(compare with adversarial, whose D keeps learning online)",
                                {**HYBRID, "reward_source": "discriminator", "baseline": "ema",
                                 "freeze_discriminator_after": QUARTER_RUN}),
    "gad": Arm("GAD: RL only, the generator maximises a Bradley-Terry D's score, D(x, y) - D(x, reference), "
               "while D learns to rank each reference above the samples", {"mode": "rl", **GAD}),
    "natural": Arm("hybrid, reward + 0.5 x a Bradley-Terry D's odds that the sample passes for its reference "
                   "(naturalness beside the true reward; compare with gad and mix)",
                   {**HYBRID, "baseline": "loo", "discriminator_loss": "bradley_terry", "naturalness_weight": 0.5}),
    "sdft": Arm("SDFT: its own samples, reverse KL to itself shown the reference answer (no reward, no D)",
                {"mode": "distill"}),
    "mix": Arm("hybrid, reward = mix of the true reward and D's score (reward_mix)",
               {**HYBRID, "reward_source": "mix"}),
    "contrastive_d": Arm("mix, D also trained to rank references above junk (compare with mix)",
                         {**HYBRID, "reward_source": "mix", "discriminator_loss": "mse+contrastive"}),
    "larger_d": Arm("mix, D on its own larger model (compare with mix)",
                    {**HYBRID, "reward_source": "mix", "discriminator_model": LARGER_D}),
    "curriculum": Arm("hybrid, lambda ramps linearly from 0 over the whole run (SFT-heavy first)",
                      {**HYBRID, "lambda_schedule": "linear", "lambda_warmup_steps": WHOLE_RUN}),
    "adaptive_lambda": Arm("hybrid, lambda scaled by the critic's pairwise accuracy",
                           {**HYBRID, "lambda_schedule": "adaptive"}),
    "reward_multi": Arm("hybrid, reward adds ROUGE, BLEU, repetition and length terms",
                        {**HYBRID, "reward_weights": MORE_REWARDS}),
    "selfplay": Arm("self-play: the generator against its frozen snapshot, rewarded by the referee's preference",
                    {"mode": "selfplay", "selfplay_refresh": HALF_RUN, "baseline": "ema"}),
    "beam": Arm("hybrid with the k best of 4 beams instead of samples (off-policy: a biased estimate)",
                {**HYBRID, "sampler": "beam"}),
    "chord": Arm("CHORD: mu * SFT + (1 - mu) * RL, mu warmed up then cosine-decayed to 0", CHORD),
    "chord_phi": Arm("CHORD-phi: chord with SFT tokens weighted by p * (1 - p)", {**CHORD, "sft_token_weight": "phi"}),
    "srft": Arm("SRFT: mu * exp(-entropy) * SFT + (1 - mu) * RL (mu 0.5)", {**HYBRID, "sft_schedule": "srft"}),
    "luffy": Arm("LUFFY: RL only, the reference answer joins each group as an off-policy member",
                 {"mode": "rl", "reference_in_group": True, "baseline": "group"}),
    "hpt": Arm("HPT: per prompt, SFT when all its samples fail, RL when one succeeds",
               {**HYBRID, "per_prompt_switch": True}),
    "aux_d": Arm("mix, D also predicts each response's perplexity (auxiliary head; compare with mix)",
                 {**HYBRID, "reward_source": "mix", "discriminator_aux_weight": 0.5}),
    "truthful": Arm("hybrid, reward adds the retrieval-grounded truthfulness score (0.3)",
                    {**HYBRID, "reward_weights": Derived("the experiment's weights + truthfulness 0.3",
                                                         lambda config, steps: {**config.get(
                                                             "reward_weights", HybridConfig().reward_weights),
                                                             "truthfulness": 0.3})}),
    "lora_r32": Arm("hybrid with LoRA rank 32 (alpha 64) instead of 8", {**HYBRID, "lora_r": 32, "lora_alpha": 64}),
    "no_clip": Arm("hybrid without gradient clipping (max_grad_norm 0)", {**HYBRID, "max_grad_norm": 0.0}),
    "stream_replay": Arm("online: the training rows arrive as a stream, half of each batch replays anchors",
                         {**HYBRID, "stream": TRAIN_STREAM, "replay_ratio": 0.5}),
}


def format_changes(changes: dict | None) -> str:
    """``mode=hybrid, kl_coef=0.05``; ``(not trained)`` for ``None``."""
    if changes is None:
        return "(not trained)"
    if not changes:
        return "(none: the experiment's config)"
    return ", ".join(f"{k}={_text(v)}" for k, v in changes.items())


def _text(value) -> str:
    """A value as ``--set`` reads it back: ``sft``, ``0.05``, ``true``, ``{"semantic": 1.0}``."""
    return value if isinstance(value, str) else str(value) if isinstance(value, Derived) else json.dumps(value)


def format_steps(factor) -> str:
    """``""`` for the experiment's steps, else ``"; 3x the steps"`` (``"; steps x <1 + k ...>"``)."""
    if isinstance(factor, Derived):
        return f"; steps x {factor}"
    return "" if factor == 1 else f"; {factor:g}x the steps"


def listing(arms: dict[str, Arm], presets: dict | None = None) -> str:
    """The text of ``ablate --list``: per arm, its name and description, then its config changes."""
    width = max(map(len, arms)) + 2
    lines = [f"{'arm':<{width}}description", f"{'':<{width}}  config changes", ""]
    for name, arm in arms.items():
        lines += [f"{name:<{width}}{arm.description}",
                  f"{'':<{width}}  {format_changes(arm.changes)}{format_steps(arm.steps_factor)}"]
    lines += ["", "config of an arm: preset < --set key=value (every arm) < the arm's changes < --set ARM.key=value;",
              "a --set key that an arm in the run changes is an error."]
    for preset, values in (presets or {}).items():
        lines.append(f"--preset {preset} runs by default: {', '.join(values.get('arms') or ['all built-in arms'])}")
    return "\n".join(lines)


def parse_set(text: str) -> tuple[str | None, str, object]:
    """``"key=value"`` -> ``(None, key, value)``; ``"ARM.key=value"`` -> ``(ARM, key, value)``; the
    value read by the field's type (:func:`lab.readers.config_text.coerce`).

    >>> parse_set("max_new_tokens=4"), parse_set("larger_d.discriminator_model=tiny-gpt2")
    ((None, 'max_new_tokens', 4), ('larger_d', 'discriminator_model', 'tiny-gpt2'))
    """
    target, sep, value = text.partition("=")
    arm, _, key = target.strip().rpartition(".")
    if not sep or not key:
        raise ValueError(f"--set {text!r}: expected key=value or ARM.key=value, e.g. max_new_tokens=16")
    return arm or None, check_field(key, f"--set {text!r}"), coerce(HybridConfig, key, value)


def check_field(key: str, where: str) -> str:
    if key == "seed":
        raise ValueError(f"{where}: the seed is set per run by --seeds, not by an arm or --set")
    if key not in FIELDS:
        raise ValueError(f"{where}: unknown config field {key!r}; known fields: {', '.join(sorted(FIELDS))}")
    return key


def split_sets(sets) -> tuple[dict, dict[str, dict]]:
    """``[(arm | None, key, value), ...]`` -> (common config, {arm: changes}); the same key
    given twice with different values is an error."""
    common: dict = {}
    per_arm: dict[str, dict] = {}
    for arm, key, value in sets:
        target = common if arm is None else per_arm.setdefault(arm, {})
        if key in target and target[key] != value:
            name = key if arm is None else f"{arm}.{key}"
            raise ValueError(f"{name} is set twice, to {target[key]!r} and {value!r} (--set, --model, --dataset)")
        target[key] = value
    return common, per_arm


def read_arms_file(path: str | Path) -> dict[str, Arm]:
    """Custom arms from a YAML/JSON file: ``name: {description: ..., field: value, ...}``
    (``steps_factor: 3``: the arm trains 3x the experiment's steps). Values are read by the
    field's type; an unknown field, a bad value or a built-in name is a ``ValueError`` naming
    the file and the arm."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"arms file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"arms file {path} could not be parsed: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"arms file {path} must map arm names to config changes, e.g. 'fast_lr: {{lr: 1e-3}}'")
    arms = {}
    for name, body in data.items():
        where = f"arms file {path}, arm {name!r}"
        if not isinstance(name, str) or not NAME.match(name):
            raise ValueError(f"{where}: a name is letters, digits, '_', '+', '-' (no '.' or spaces)")
        if name in ARMS:
            raise ValueError(f"{where}: {name!r} is a built-in arm; give yours another name")
        body = dict(body or {}) if isinstance(body, dict) or body is None else None
        if body is None:
            raise ValueError(f"{where}: expected a mapping of config field to value")
        description = body.pop("description", None) or "custom arm from " + path.name
        factor = body.pop("steps_factor", 1.0)
        try:
            factor = float(factor)
            if not factor > 0:
                raise ValueError
        except (TypeError, ValueError):
            raise ValueError(f"{where}: steps_factor={factor!r}: expected a number > 0 (3: 3x the steps)") from None
        try:
            changes = {check_field(key, where): coerce(HybridConfig, key, value) for key, value in body.items()}
            HybridConfig.from_dict(changes)  # a bad value alone, before the combination checks
        except ValueError as err:
            raise ValueError(str(err) if str(err).startswith(where) else f"{where}: {err}") from None
        arms[name] = Arm(str(description), changes, factor)
    return arms


def define(names: list[str], registry: dict[str, Arm], config: dict, steps: int, common: dict | None = None,
           per_arm: dict[str, dict] | None = None) -> dict[str, dict]:
    """``{arm: {"description", "changes"[, "steps"]}}`` for the arms run, on the experiment's ``config``
    (preset < ``--set``; ``common``: the ``--set`` part; ``"steps"`` only where an arm's
    ``steps_factor`` gives it other steps than ``steps``): derived values computed, ``--set
    ARM.key`` applied, conflicts refused, each arm's whole config validated; errors name the arm."""
    common, per_arm = common or {}, per_arm or {}
    stray = sorted(set(per_arm) - set(names))
    if stray:
        raise ValueError(f"--set {stray[0]}.KEY names an arm that is not in this run; arms: {', '.join(names)}")
    defined = {}
    for name in names:
        arm = registry[name]
        if not arm.trained:
            if name in per_arm:
                raise ValueError(f"arm {name!r} is not trained, so --set {name}.KEY has nothing to change; "
                                 "set generation fields for every arm with --set KEY=VALUE")
            defined[name] = {"description": arm.description, "changes": None}
            continue
        if arm.match_time and not {arm.match_time, "sft"} <= set(names[:names.index(name)]):
            raise ValueError(f"arm {name!r} trains as long as {arm.match_time!r} did at the same seed, at the "
                             f"'sft' arm's measured seconds a step: list both before it (--arms sft "
                             f"{arm.match_time} {name})")
        given, arm_steps = per_arm.get(name, {}), arm.steps(steps, config)
        changes = {key: given[key] if key in given else value.fn(config, arm_steps) if isinstance(value, Derived)
                   else value for key, value in arm.changes.items()}
        changes.update(given)
        clash = sorted(set(changes) & set(common))
        if clash:
            raise ValueError(f"--set {clash[0]}={common[clash[0]]!r} conflicts with arm {name!r}, which changes "
                             f"{clash[0]} (the variable under study); drop it from --set, change the arm with "
                             f"--set {name}.{clash[0]}=VALUE, or leave the arm out")
        try:
            whole = HybridConfig.from_dict({**config, **changes})
            check_source(whole.dataset, whole.dataset_columns)  # its data too, before anything runs
        except ValueError as err:
            raise ValueError(f"arm {name!r}: {err}") from None
        defined[name] = {"description": arm.description, "changes": changes,
                         **({"steps": arm_steps} if arm_steps != steps else {}),
                         **({"match_time": arm.match_time} if arm.match_time else {})}
    return defined


def unavailable(config: HybridConfig) -> tuple[str, str] | None:
    """``(field, why)`` when a model ``config`` names cannot be loaded here (a Hub model
    offline), else None."""
    for key in ("model", "discriminator_model"):
        try:
            if getattr(config, key):
                resolve(getattr(config, key))
        except ValueError as err:
            return key, str(err)
    return None
