"""fp16 training on GPUs without bf16 (Colab's free T4): a gradient scaler per optimizer.

With fp16 weights the backward's small gradients can underflow to 0. A
``torch.amp.GradScaler`` multiplies the loss before the backward and divides the gradients
after it, backing off when they overflow; :func:`lab.runtime.guards.finite_update` applies the
scaler of its optimizer, if one is attached (:func:`attach`), and reports its overflows apart
(they are not failures of the run). bf16 and fp32 need none.
"""

from __future__ import annotations

import weakref

import torch

INIT_SCALE = 2.0 ** 12  # LoRA gradients are small; 2**16 (torch's default) overflows the first steps
_SCALERS: "weakref.WeakKeyDictionary[torch.optim.Optimizer, torch.amp.GradScaler]" = weakref.WeakKeyDictionary()


def needs_scaler(dtype: torch.dtype, device: torch.device) -> bool:
    """fp16 weights on a CUDA GPU train with a gradient scaler.

    >>> needs_scaler(torch.float16, torch.device("cuda")), needs_scaler(torch.bfloat16, torch.device("cuda"))
    (True, False)
    """
    return dtype == torch.float16 and device.type == "cuda"


def attach(optimizer: torch.optim.Optimizer, model) -> torch.amp.GradScaler | None:
    """Give ``optimizer`` a gradient scaler when ``model``'s weights are fp16 on CUDA; returns it (or None)."""
    weight = next(p for p in model.parameters())
    if not needs_scaler(weight.dtype, weight.device):
        return None
    if hasattr(torch.amp, "GradScaler"):
        return register(optimizer, torch.amp.GradScaler(weight.device.type, init_scale=INIT_SCALE))
    return register(optimizer, torch.cuda.amp.GradScaler(init_scale=INIT_SCALE))  # torch < 2.3: CUDA's own


def attach_all(parts: dict[str, tuple]) -> dict[str, torch.amp.GradScaler]:
    """:func:`attach` for each ``name: (optimizer, model)``; returns ``{"<name>_scaler": scaler}`` of
    those that got one (a checkpoint keeps their state beside the optimizers')."""
    attached = {name: attach(optimizer, model) for name, (optimizer, model) in parts.items()}
    return {f"{name}_scaler": scaler for name, scaler in attached.items() if scaler is not None}


def register(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> torch.amp.GradScaler:
    """Attach ``scaler`` to ``optimizer`` (what :func:`attach` does; tests attach a CPU one)."""
    _SCALERS[optimizer] = scaler
    return scaler


def scaler_for(optimizer: torch.optim.Optimizer) -> torch.amp.GradScaler | None:
    """The scaler attached to ``optimizer``, or None."""
    return _SCALERS.get(optimizer)
