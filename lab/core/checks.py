"""Value checks with messages that say how to fix the value: the config's validation rules.

Each raises one ``ValueError`` naming the field, the value and what it must be.

>>> choice("mode", "hybird", ("sft", "hybrid"))
Traceback (most recent call last):
...
ValueError: mode='hybird' is not valid; choose one of sft, hybrid
>>> in_range("top_p", 1.5, low=0.0, high=1.0, low_open=True)
Traceback (most recent call last):
...
ValueError: top_p=1.5 is out of range; it must be a finite number in (0.0, 1.0]
"""

from __future__ import annotations

import math


def choice(name: str, value, choices: tuple[str, ...]) -> None:
    """``value`` must be one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {', '.join(choices)}")


def whole(name: str, value, minimum: int, most: int | None = None) -> None:
    """``value`` must be an int (not a bool) >= ``minimum`` (and <= ``most``: larger is a typo)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} must be a whole number >= {minimum}")
    if most is not None and value > most:
        raise ValueError(f"{name}={value!r} is absurdly large; it must be at most {most}")


def in_range(name: str, value, low: float, high: float | None = None, low_open: bool = False,
             high_open: bool = False) -> None:
    """``value`` must be a finite number between ``low`` and ``high`` (open or closed ends)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low)
    ok = ok and (high is None or (value < high if high_open else value <= high))
    if not ok:
        bounds = (f"{'(' if low_open else '['}{low}, {high if high is not None else 'inf'}"
                  f"{')' if high_open or high is None else ']'}")
        raise ValueError(f"{name}={value!r} is out of range; it must be a finite number in {bounds}")


def weights(name: str, value, known: tuple[str, ...]) -> None:
    """``value`` must be a non-empty ``{known name: finite number}`` dict, not all zero."""
    if not isinstance(value, dict) or not value:
        raise ValueError(f"{name} must be a non-empty dict such as {{'semantic': 0.7, 'perplexity': 0.3}}")
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValueError(f"{name} has unknown reward(s) {unknown}; known: {', '.join(known)}")
    if any(not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w) for w in value.values()):
        raise ValueError(f"{name} values must be numbers, got {value}")
    if not any(value.values()):
        raise ValueError(f"{name} are all zero; give at least one reward a nonzero weight")
