"""A process's global random streams (python, numpy, torch, every CUDA device) as plain values
that ``torch.load(weights_only=True)`` reads back: what exact resume needs besides the weights.

>>> saved = streams(); a = torch.rand(1); restore(saved); torch.equal(a, torch.rand(1))
True
"""

from __future__ import annotations

import random

import numpy as np
import torch


def streams() -> dict:
    """The state of every global stream: tuples, lists and tensors only (no numpy array)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state(legacy=True)
    found = {"python": random.getstate(), "numpy": (kind, keys.tolist(), position, has_gauss, gauss),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        found["cuda"] = torch.cuda.get_rng_state_all()
    return found


def restore(saved: dict) -> None:
    """Set every stream back to ``saved`` (:func:`streams`); CUDA's only where there is a GPU."""
    random.setstate(saved["python"])
    kind, keys, position, has_gauss, gauss = saved["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(saved["torch"])
    if "cuda" in saved and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda"])
