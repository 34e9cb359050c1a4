"""Quantized frozen backbones (the LoRA adapters on top always train in full precision).

| ``quantization`` | what | where |
| --- | --- | --- |
| ``none`` | the backbone in its ``dtype`` | anywhere |
| ``8bit`` / ``4bit`` | bitsandbytes' LLM.int8() / NF4 with double quantization, prepared for k-bit training (QLoRA) | CUDA GPUs |
| ``int8`` | torchao's int8 weight-only linear layers (per-channel scales; matmuls in the activations' dtype) | CPUs and CUDA GPUs |

:func:`lab.models.load` applies them (``HybridConfig.quantization``).
"""

from __future__ import annotations

import torch

QUANTIZATIONS = ("none", "8bit", "4bit", "int8")  # the choices of HybridConfig.quantization


def quantize_int8(model):
    """The frozen backbone's ``nn.Linear`` layers as int8 weight-only (torchao's
    ``Int8WeightOnlyConfig``: per-channel int8 weights, matmuls in the activations' dtype), on
    any device; the LM head stays in its dtype (it is often tied to the embeddings). LoRA
    adapters added afterwards train in full precision on top (checked: SmolLM2-135M's SFT loss
    follows the bf16 run's). Raises a ``ValueError`` when torchao is missing or the model has no
    ``nn.Linear`` to quantize (GPT-2's ``Conv1D``)."""
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
    except ImportError as err:
        raise ValueError("quantization='int8' needs torchao: pip install torchao") from err
    head = model.get_output_embeddings()
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head]
    if not layers:
        raise ValueError(f"quantization='int8' quantizes nn.Linear layers and {type(model).__name__} has none "
                         "(GPT-2 uses Conv1D): use a Llama-style model (e.g. smollm2-135m), or '8bit'/'4bit' on a GPU")
    quantize_(model, Int8WeightOnlyConfig(), filter_fn=lambda module, name: module in layers)
    return model


def bnb_config(quantization: str, device: torch.device, dtype: torch.dtype):
    """A ``BitsAndBytesConfig`` for ``8bit`` / ``4bit`` (NF4, double quantization: QLoRA), or
    None for ``none`` and ``int8`` (torchao, applied after loading: :func:`quantize_int8`).
    bitsandbytes' k-bit layers need a CUDA GPU; on other devices this raises a ``ValueError``
    that says so and points to ``int8``."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization={quantization!r} is not valid; choose one of {', '.join(QUANTIZATIONS)}")
    if quantization == "int8" and device.type not in ("cpu", "cuda"):
        raise ValueError(f"quantization='int8' runs on a CPU or a CUDA GPU, not on {device.type}")
    if quantization in ("none", "int8"):
        return None
    if device.type != "cuda":
        raise ValueError(f"quantization={quantization!r} needs a CUDA GPU (bitsandbytes' k-bit layers); this run is "
                         f"on {device.type}: use quantization='int8' (torchao, CPU too, models with nn.Linear layers "
                         "such as SmolLM2, not GPT-2) or 'none', or run on a GPU (e.g. Colab)")
    try:
        from transformers import BitsAndBytesConfig
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise ValueError(f"quantization={quantization!r} needs bitsandbytes: pip install bitsandbytes") from err
    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=dtype)
