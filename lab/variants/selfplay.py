"""Self-play: the generator against a frozen snapshot of itself, refereed by the discriminator.

The snapshot is a third LoRA adapter, ``"snapshot"``, on the shared backbone (no second
model), a copy of the generator's adapter refreshed every ``selfplay_refresh`` steps. Both
players answer each prompt; the discriminator, trained on the true reward of both, judges,
and the generator is rewarded by the referee's preference for its answer
(:func:`lab.discriminator.preference`).
"""

from __future__ import annotations

import torch

from lab import generator
from lab.models import add_lora

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
