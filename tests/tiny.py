"""The tiny trainer the trainer tests share: tiny-gpt2 on CPU, 2 prompts x 2 samples, 6 new tokens."""

from lab.config import HybridConfig
from lab.trainer import HybridTrainer

BASE = dict(model="tiny-gpt2", device="cpu", prompts_per_step=2, samples_per_prompt=2,
            max_new_tokens=6, lr=1e-2, lr_discriminator=1e-2, seed=0)


def make(examples, reward=None, **changes) -> HybridTrainer:
    """A ``HybridTrainer`` with ``BASE`` and ``changes`` on ``examples`` (the conftest fixture)."""
    return HybridTrainer(HybridConfig(**{**BASE, **changes}), examples=examples, reward=reward, verbose=False)
