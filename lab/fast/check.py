"""A fast path serves a model only where it gives the plain path's result.

At a model's first use, :func:`pick` runs a check (for the decoder, :func:`same_greedy_tokens`:
both decoders' greedy tokens on a tiny input). The verdict is kept for that model for the rest
of the process. Where the check fails, or the fast path raises later, one warning says why
and the plain path serves that model from then on. The check decodes greedily, so it draws
no random numbers: a run's samples do not depend on whether it ran.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable

import torch

from lab.core.tensors import model_device

_why_not: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {path: None (fast is fine) or why not}


def pick(model, name: str, fast: Callable, plain: Callable, check: Callable[[], str | None]) -> Callable:
    """``fast`` where ``check()`` (run at the first call for ``model``) returned None, else
    ``plain``; both are called with the same arguments. The function returned falls back to
    ``plain`` for this call and every later one when ``fast`` raises (out of memory excepted),
    with the random state of before the call restored."""
    verdicts = _why_not.setdefault(model, {})
    if name not in verdicts:
        try:
            verdicts[name] = check()
        except Exception as error:  # noqa: BLE001 (any failure of the fast path means: do not use it)
            verdicts[name] = f"its check raised {type(error).__name__}: {error}"
        if verdicts[name] is not None:
            _warn(name, verdicts[name])
    if verdicts[name] is not None:
        return plain

    def guarded(*args, **kwargs):
        cpu, device = torch.get_rng_state(), model_device(model)
        gpu = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        try:
            return fast(*args, **kwargs)
        except torch.cuda.OutOfMemoryError:  # not the fast path's fault: the plain one would not fit either
            raise
        except Exception as error:  # noqa: BLE001
            verdicts[name] = f"it raised {type(error).__name__}: {error}"
            _warn(name, verdicts[name])
        torch.set_rng_state(cpu)
        if gpu is not None:
            torch.cuda.set_rng_state(gpu, device)
        return plain(*args, **kwargs)

    return guarded


def same_greedy_tokens(model, fast: Callable, plain: Callable, eos_id: int, pad_id: int,
                       max_new_tokens: int = 4) -> str | None:
    """None when the decoders ``fast`` and ``plain`` (the arguments of :func:`lab.generator.decode`)
    give ``model`` the same greedy tokens on two tiny prompts, one left padded, 2 samples each;
    else what differed."""
    device = model_device(model)
    ids = torch.tensor([[pad_id, 11, 12, 13], [21, 22, 23, 24]], device=device)  # (2, 4)
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]], device=device)  # (2, 4) the first row left padded
    args = (model, ids, mask, 2, max_new_tokens, eos_id, pad_id)
    want = plain(*args, do_sample=False)  # (4, T)
    got = fast(*args, do_sample=False)  # (4, T')
    if got.shape != want.shape or not torch.equal(got.cpu(), want.cpu()):
        return f"its greedy tokens {got.tolist()} differ from the plain loop's {want.tolist()}"
    return None


def _warn(name: str, why: str) -> None:
    warnings.warn(f"lab.fast: the fast {name} is off for this model, the plain path serves it instead: {why}. "
                  "Results stay correct, only slower; please report it with your torch and transformers "
                  "versions.", RuntimeWarning, stacklevel=3)
