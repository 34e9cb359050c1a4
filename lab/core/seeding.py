"""Explicit seeding: one call seeds python, numpy and torch (all devices)."""

import random

import numpy as np


def set_seed(seed: int) -> None:
    """Seed python's ``random``, numpy and torch (CPU and every CUDA device).

    >>> set_seed(0); a = random.random(); set_seed(0); a == random.random()
    True
    """
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
