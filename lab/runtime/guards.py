"""Guards that keep a run's state safe: updates that skip non-finite values, and SIGINT /
SIGTERM that end a run after its current step instead of in the middle of it."""

from __future__ import annotations

import math
import signal
import threading
from contextlib import contextmanager
from typing import Callable, NamedTuple

import torch

from lab.runtime import distributed, precision


class Update(NamedTuple):
    """What :func:`finite_update` did."""

    stepped: bool  # the weights moved
    grad_norm: float  # before clipping; inf / nan when not finite
    overflow: bool = False  # fp16's gradient scaler overflowed and backed off: its routine, not a failure


def finite_update(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], loss: torch.Tensor,
                  max_norm: float = 0.0, processes: distributed.OneProcess | None = None) -> Update:
    """Backward, clip to ``max_norm`` (0: no clipping) and step, unless the loss or the
    gradient is not finite: then the gradients are dropped and neither the weights nor the
    optimizer's moments move. Under several processes (``processes``, by default this launch's
    :func:`lab.runtime.distributed.hooks`) the gradients are averaged across them before
    clipping, and a non-finite loss on any process makes all of them skip. An optimizer with a
    gradient scaler (:mod:`lab.runtime.precision`, fp16 weights) backs off its scale instead, and
    says so (``overflow``): a skipped step that is no failure of the run. Returns an :class:`Update`.

    >>> w = torch.nn.Parameter(torch.ones(2))
    >>> opt = torch.optim.SGD([w], lr=0.1)
    >>> finite_update(opt, [w], (w * float("nan")).sum())
    Update(stepped=False, grad_norm=nan, overflow=False)
    >>> w.tolist()
    [1.0, 1.0]
    """
    processes = distributed.hooks() if processes is None else processes
    scaler = precision.scaler_for(optimizer)  # fp16 weights: the loss scaled up, the gradients down
    optimizer.zero_grad(set_to_none=True)
    finite = math.isfinite(loss.item())
    if finite:
        (loss if scaler is None else scaler.scale(loss)).backward()
    if not processes.all_finite(finite):  # several processes skip together: none waits alone below
        optimizer.zero_grad(set_to_none=True)
        return Update(False, float("nan"))
    params = list(params)
    processes.average_gradients(params)  # several processes: the mean gradient, before clipping
    if scaler is not None:
        scaler.unscale_(optimizer)  # the true gradients, for the norm and the clip
    norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else math.inf))
    if not math.isfinite(norm):
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.update()  # an overflow: the scale backs off
        return Update(False, norm, overflow=scaler is not None)
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    return Update(True, norm)


def skipped_part(row: dict) -> str | None:
    """Which part of a step skipped its update for non-finite values, from its history row:
    ``row["nonfinite"]`` when set (``"reward"``), else ``"discriminator"`` or ``"generator"``.

    >>> skipped_part({"d_skipped": 0, "skipped_updates": 1}), skipped_part({"skipped_updates": 0})
    ('generator', None)
    """
    if row.get("nonfinite"):
        return row["nonfinite"]
    return "discriminator" if row.get("d_skipped") else "generator" if row.get("skipped_updates") else None


@contextmanager
def stop_on_signals(request_stop: Callable[[str], None]):
    """Within the block, SIGINT (Ctrl-C, a notebook's interrupt) and SIGTERM call
    ``request_stop(name)`` instead of killing the process, so the step in progress finishes
    and its state can be saved. A second SIGINT interrupts at once. Only the main thread can
    take signals; elsewhere (a widget's background run) the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    seen: list[str] = []

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if seen and signum == signal.SIGINT:
            raise KeyboardInterrupt
        seen.append(name)
        request_stop(name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
