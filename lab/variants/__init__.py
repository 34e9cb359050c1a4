"""Variants of the step the trainer calls as small functions: self-play, online learning on
a growing stream of rows, and the SFT + RL mixes of 2025-26 (CHORD, SRFT, LUFFY, HPT).
"""

from lab import lazy_submodules

__getattr__ = lazy_submodules(__name__)
