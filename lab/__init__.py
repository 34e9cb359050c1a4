"""LoRA-GAN Lab: a teaching kit for hybrid SFT + REINFORCE training of small language models.

Submodules load lazily, so ``import lab`` is fast and ``lab.models``, ``lab.data`` ...
import on first use.
"""

import importlib
import os

from lab.seeding import set_seed

_SUBMODULES = (
    "ablation", "advantages", "arms", "checkpoint", "config", "config_text", "data", "diagnostics",
    "discriminator", "distributed", "evaluate", "evidence", "factual", "folding", "generator", "guards", "knobs",
    "metrics", "mixing", "models", "objective", "plots", "quantization", "report", "rewards", "runs", "sampling",
    "seeding", "selfplay", "sources", "stats", "stream", "tensors", "trainer", "trl", "truthfulness",
    "widgets",
)
__all__ = [*_SUBMODULES, "quick_mode", "set_seed"]
__version__ = "0.1.0"


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"lab.{name}")
    raise AttributeError(f"module 'lab' has no attribute {name!r}")


def quick_mode() -> bool:
    """True when ``LAB_QUICK=1``: notebooks and demos shrink step counts and sample sizes."""
    return os.environ.get("LAB_QUICK", "0").lower() in ("1", "true", "yes")
