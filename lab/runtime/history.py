"""What a step records besides its losses: its phases' wall times, the reward statistics of
its history row, and one samples-log row per response. ``sampled`` (N,) bool marks the rows the policy sampled; the
others (LUFFY's reference in each group) are logged apart, so arms stay comparable.

>>> sampled = torch.tensor([True, False])
>>> reward_entries(torch.tensor([1.0, 0.0]), {}, sampled, ["a b", "ref"], torch.tensor([2, 1]))["reward"]
1.0
>>> [row["is_reference"] for row in sample_log(1, ["p", "p"], ["a b", "ref"], torch.zeros(2), torch.zeros(2), {},
...                                              sampled)]
[False, True]
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch

from lab.core.ngrams import distinct_n


def reward_entries(reward: torch.Tensor, parts: dict[str, list[float]], sampled: torch.Tensor,
                   completions: list[str], lengths: torch.Tensor) -> dict:
    """History entries over the sampled rows: ``reward`` and ``reward_std`` (of ``reward`` (N,)),
    ``reward_<part>`` (each of ``parts``, N values), ``response_len`` (of ``lengths`` (N,)),
    ``distinct_1``, ``distinct_2`` and one ``sample``; where some rows were not sampled, also
    ``reward_reference``, their mean reward."""
    entries = {}
    if not sampled.all():
        entries["reward_reference"] = float(reward[~sampled].mean())
    texts = [c for c, s in zip(completions, sampled.tolist()) if s]
    entries.update(reward=float(reward[sampled].mean()), reward_std=float(reward[sampled].std(unbiased=False)))
    for name, values in parts.items():
        entries[f"reward_{name}"] = float(torch.tensor(values)[sampled].mean())
    entries.update(response_len=float(lengths[sampled].float().mean()),
                   distinct_1=distinct_n(texts, 1), distinct_2=distinct_n(texts, 2), sample=texts[0])
    return entries


def sample_log(step: int, prompts: list[str], completions: list[str], reward: torch.Tensor, critic: torch.Tensor,
               parts: dict[str, list[float]], sampled: torch.Tensor) -> list[dict]:
    """One row per response: ``step``, ``prompt``, ``completion``, ``reward``, the critic's
    prediction ``d_pred``, each ``reward_<part>``; where some rows were not sampled, also
    ``is_reference``."""
    marked = not bool(sampled.all())
    rows = []
    for i, (prompt, completion) in enumerate(zip(prompts, completions)):
        extra = {"is_reference": not bool(sampled[i])} if marked else {}
        rows.append(dict(step=step, prompt=prompt, completion=completion, reward=float(reward[i]),
                         d_pred=float(critic[i]), **{f"reward_{n}": v[i] for n, v in parts.items()}, **extra))
    return rows


@contextmanager
def timed(times: dict, name: str):
    """``times[name]``: the block's wall time in seconds."""
    start = time.perf_counter()
    yield
    times[name] = time.perf_counter() - start
