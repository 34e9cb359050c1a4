"""Self-play: the generator against a frozen snapshot of itself, refereed by the discriminator.

The snapshot is a third LoRA adapter, ``"snapshot"``, on the shared backbone (no second
model), a copy of the generator's adapter refreshed every ``selfplay_refresh`` steps. Both
players answer each prompt (:func:`both_players`); the discriminator, trained on the true
reward of both, judges, and the generator is rewarded by the referee's preference for its
answer (:func:`referee_target`).
"""

from __future__ import annotations

import torch

from lab import discriminator, generator
from lab.models import add_lora
from lab.rewards import RewardOutput

SNAPSHOT = "snapshot"


def add_snapshot(model, source: str = "generator", **lora) -> None:
    """Add the frozen ``snapshot`` adapter (``lora``: the generator's LoRA keywords) as a copy
    of ``source``; the generator's adapter stays active."""
    add_lora(model, SNAPSHOT, **lora)
    model.set_adapter(source)
    refresh(model, source)


@torch.no_grad()
def refresh(model, source: str = "generator") -> None:
    """Copy the ``source`` adapter's LoRA weights into the snapshot and freeze it."""
    params = dict(model.named_parameters())
    for name, p in params.items():
        if "lora_" in name and f".{source}." in name:
            params[name.replace(f".{source}.", f".{SNAPSHOT}.")].copy_(p)
    freeze(model)


def freeze(model) -> None:
    """The snapshot takes no gradient (peft marks an adapter trainable when it is activated)."""
    for name, p in model.named_parameters():
        if f".{SNAPSHOT}." in name:
            p.requires_grad_(False)


def opponent_sample(model, tokenizer, prompts: list[str], **options) -> generator.Samples:
    """The snapshot's answers (:func:`lab.generator.sample` with its ``options``), then the
    generator's adapter active again and the snapshot frozen."""
    previous = model.active_adapter
    model.set_adapter(SNAPSHOT)
    try:
        return generator.sample(model, tokenizer, prompts, **options)
    finally:
        model.set_adapter(previous)
        freeze(model)


def both_players(model, tokenizer, samples: generator.Samples, prompts: list[str],
                 **options) -> tuple[list[str], list[str]]:
    """The texts a self-play step scores, ``(prompts, completions)``: the generator's ``N``
    ``samples``, then the snapshot's ``N`` answers to the same ``prompts`` (2N,) each."""
    opponent = opponent_sample(model, tokenizer, prompts, **options)
    return samples.prompts + opponent.prompts, samples.completions + opponent.completions  # (2N,) each


def referee_target(critic: torch.Tensor) -> torch.Tensor:
    """The generator's RL target (N,): the referee's preference for its answer over the
    snapshot's (:func:`lab.discriminator.preference`). ``critic``: the referee's scores (2N,),
    the generator's rows first (:func:`both_players`).

    >>> [round(p, 3) for p in referee_target(torch.tensor([1.0, 0.0, 0.0, 0.0])).tolist()]
    [0.731, 0.5]
    """
    n = len(critic) // 2
    return discriminator.preference(critic[:n], critic[n:])  # (N,)


def generator_rows(scored: RewardOutput) -> RewardOutput:
    """The generator's half (its first N rows) of a self-play step's 2N scores, a new value.

    >>> generator_rows(RewardOutput(total=[1.0, 2.0], parts={"length": [0.5, 0.7]}))
    RewardOutput(total=[1.0], parts={'length': [0.5]})
    """
    n = len(scored.total) // 2
    return RewardOutput(total=scored.total[:n], parts={name: values[:n] for name, values in scored.parts.items()})
