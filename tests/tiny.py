"""The tiny trainer the trainer tests share: tiny-gpt2 on CPU, 2 prompts x 2 samples, 6 new tokens.

``LAB_TEST_DEVICE=cuda`` runs these trainers on a GPU instead (benchmarks/gpu_path.sh).
"""

import os

from lab.config import HybridConfig
from lab.trainer import HybridTrainer

BASE = dict(model="tiny-gpt2", device=os.environ.get("LAB_TEST_DEVICE", "cpu"), prompts_per_step=2,
            samples_per_prompt=2, max_new_tokens=6, lr=1e-2, lr_discriminator=1e-2, seed=0)


def make(examples, reward=None, **changes) -> HybridTrainer:
    """A ``HybridTrainer`` with ``BASE`` and ``changes`` on ``examples`` (the conftest fixture)."""
    return HybridTrainer(HybridConfig(**{**BASE, **changes}), examples=examples, reward=reward, verbose=False)
