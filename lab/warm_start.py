"""The discriminator's warm start: notebook 03's recipe before the loop, cached.

A discriminator that starts from scratch inside the loop stays near chance for a CPU-sized run,
so before the first step :func:`warm_start` trains it on training references, their junk and the
untrained generator's own answers, with its own optimizer and random streams. The result
depends only on the settings and texts in its key, so :func:`cached_warm_start` keeps it in the
kit's cache (safetensors weights and a report) and a second run with the same key loads it and
continues exactly as if it had computed it. :func:`warm_start_for` is what the trainer calls.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lab.advantages import pairwise_accuracy
from lab.core.tensors import model_device
from lab.discriminator import Discriminator, judge, junk_for, ranking_accuracy, reference_pairs, train_step
from lab.generator import MAX_ANSWER_TOKENS, sample
from lab.models import adapter_state
from lab.runtime import hub
from lab.runtime.distributed import OneProcess


def warm_start(disc: Discriminator, model, tokenizer, reward, examples: list, steps: int, batch_size: int,
               k: int, lr: float, seed: int, contrastive_weight: float = 1.0, loss: str = "mse",
               **sample_options) -> dict:
    """Train ``disc`` for ``steps`` steps before the loop, so that its first scores already mean
    something: on ``4 * batch_size`` training prompts (a quarter held out), the reference answer
    and ``k`` answers of the untrained generator regress their true reward (``reward``, TRL's
    signature), and each reference ranks above a junk answer (:func:`train_step`); with
    ``loss="bradley_terry"`` (GAD) nothing is regressed and each reference ranks above its
    samples and a junk answer. Its own
    optimizer (AdamW, ``lr``) and random streams (seeded by ``seed``, the caller's untouched), so a
    run that loads a cached warm start continues exactly as one that computed it. Returns the
    held-out prompts' ranking accuracies: reference above junk (``ref_vs_junk``) and the samples of
    a prompt in the reward's order (``sample_ranking``), and the first and last losses."""
    rng, pool = random.Random(seed), list(examples[:4 * batch_size])
    n_train = len(pool) - len(pool) // 4 if len(pool) > 1 else 1  # the first prompts train, the rest are held out
    with torch.random.fork_rng(devices=_devices(model)):
        torch.manual_seed(seed)
        samples = sample(model, tokenizer, [e.prompt for e in pool], k=k, **sample_options)
    prompts = [e.prompt for e in pool]
    answers = [tokenizer.decode(ids[:MAX_ANSWER_TOKENS]) for ids in  # as SFT cuts them: within the context
               tokenizer([e.completion for e in pool], add_special_tokens=False)["input_ids"]]
    references = [e.completion for e in pool] + [e.completion for e in pool for _ in range(k)]  # (U + U * k,)
    true = torch.tensor(reward(prompts + samples.prompts, answers + samples.completions, references=references).total)
    ref_true, sample_true = true[:len(pool)], true[len(pool):].view(len(pool), k)  # (U,), (U, k)
    optimizer, losses = torch.optim.AdamW(disc.parameters_to_train(), lr=lr), []
    disc.train()
    for step in range(steps):
        picked = [(step * batch_size + i) % n_train for i in range(min(batch_size, n_train))]  # prompt indices
        references = [answers[i] for i in picked]
        junk = junk_for(references, rng, wrong=[pool[i].wrong for i in picked])
        rows = [i * k + j for i in picked for j in range(k)]  # their samples
        targets, pairs = torch.cat([ref_true[picked], sample_true[picked].flatten()]), None  # (b + b * k,)
        if loss == "bradley_terry":  # each reference above its k samples and its junk; no reward regressed
            b = len(picked)
            pairs = reference_pairs(b, k) + [(i, b + b * k + i) for i in range(b)]  # junk rows follow the samples
            targets = torch.full_like(targets, float("nan"))
        out = train_step(disc, optimizer, [prompts[i] for i in picked] + [samples.prompts[r] for r in rows],
                         references + [samples.completions[r] for r in rows], targets, junk=junk,
                         contrastive_weight=contrastive_weight,  # references (ranked above junk), then samples
                         processes=OneProcess(), pairs=pairs)  # every process warms up alone: no collective
        losses.append(out["loss"])
    held = range(n_train, len(pool)) if n_train < len(pool) else range(len(pool))
    rows = [i * k + j for i in held for j in range(k)]
    scores = judge(disc, [samples.prompts[r] for r in rows], [samples.completions[r] for r in rows])  # (H * k,)
    return {"steps": steps, "prompts": n_train, "held_out": len(held), "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None,
            "ref_vs_junk": ranking_accuracy(disc, [prompts[i] for i in held], [answers[i] for i in held],
                                            junk_for([answers[i] for i in held], rng, wrong=[pool[i].wrong for i in held])),
            "sample_ranking": pairwise_accuracy(scores, sample_true[list(held)].flatten(), k=k)}


def _devices(model) -> list[int]:
    """The CUDA devices whose random streams a forked block must restore."""
    device = model_device(model)
    return [device.index or 0] if device.type == "cuda" else []


def weights(disc: Discriminator) -> dict[str, torch.Tensor]:
    """Its trainable state as named tensors (adapter + heads), for a safetensors file."""
    tensors = {f"adapter.{k}": v for k, v in adapter_state(disc.backbone, disc.adapter).items()}
    return {**tensors, **{f"heads.{k}": v for k, v in disc.state_dict().items()}}


def load_weights(disc: Discriminator, tensors: dict[str, torch.Tensor]) -> None:
    """Set the adapter and heads from :func:`weights`' tensors."""
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(disc.backbone, {k[8:]: v for k, v in tensors.items() if k.startswith("adapter.")},
                              adapter_name=disc.adapter)
    disc.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("heads.")})


WARM_START_KEYS = ("model", "discriminator_model", "quantization", "lora_r", "lora_alpha", "lora_dropout",
                   "discriminator_lora_r", "discriminator_top_layers", "discriminator_aux_weight", "contrastive_weight",
                   "discriminator_loss", "lr_discriminator", "discriminator_warmup_steps", "prompts_per_step",
                   "samples_per_prompt", "max_new_tokens", "temperature", "top_p", "max_prompt_tokens", "seed")  # what its result depends on


def warm_start_for(config, disc: Discriminator, model, tokenizer, reward, examples: list, write: bool = True) -> dict:
    """The warm start a :class:`lab.config.HybridConfig` asks for, on the first ``4 B`` of
    ``examples``, through the cache (:func:`cached_warm_start`)."""
    pool = examples[:4 * config.prompts_per_step]
    key = {**{name: getattr(config, name) for name in WARM_START_KEYS}, "reward": repr(reward),
           "dtype": str(next(model.parameters()).dtype), "device": model_device(model).type,
           "texts": [(e.prompt, e.completion, list(e.wrong)) for e in pool]}
    return cached_warm_start(disc, key, write=write, model=model, tokenizer=tokenizer, reward=reward, examples=pool,
                             steps=config.discriminator_warmup_steps, batch_size=config.prompts_per_step,
                             k=config.samples_per_prompt, lr=config.lr_discriminator, seed=config.seed,
                             contrastive_weight=config.contrastive_weight, max_new_tokens=config.max_new_tokens,
                             loss="bradley_terry" if config.discriminator_loss == "bradley_terry" else "mse",
                             temperature=config.temperature, top_p=config.top_p,
                             max_prompt_tokens=config.max_prompt_tokens)


def warm_start_dir() -> Path:
    """Where warm starts are cached: ``discriminator-warm-start/`` in the kit's cache."""
    return hub.cache_dir() / "discriminator-warm-start"


def cached_warm_start(disc: Discriminator, key: dict, write: bool = True, **options) -> dict:
    """:func:`warm_start`, or its cached result: ``key`` (every setting and text it depends on)
    names a folder in the kit's cache (:func:`lab.runtime.hub.cache_dir`) holding the trained
    weights (safetensors) and the report; ``write=False`` (another process writes) only reads.
    The report says whether it was ``cached``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    folder = warm_start_dir() / digest
    if (folder / "report.json").is_file():
        load_weights(disc, load_file(folder / "weights.safetensors"))
        return {**json.loads((folder / "report.json").read_text()), "cached": True}
    report = warm_start(disc, **options)
    if write:  # written aside, then renamed: a reader never sees half a folder
        staging = folder.with_name(f".{digest}-{os.getpid()}")
        staging.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in weights(disc).items()}, staging / "weights.safetensors")
        (staging / "report.json").write_text(json.dumps(report))
        try:
            staging.rename(folder)
        except OSError:  # another run wrote it first
            shutil.rmtree(staging, ignore_errors=True)
    return {**report, "cached": False}
