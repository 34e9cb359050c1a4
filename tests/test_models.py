"""Model resolution, loading, device choice and LoRA wrapping."""

import time

import pytest
import torch

import lab
from lab import models
from lab.runtime import hub, quantization
import tiny


def test_auto_offline_picks_bundled_model_without_waiting(no_network, monkeypatch):
    monkeypatch.setattr(hub, "in_hf_cache", lambda repo_id: False)
    start = time.perf_counter()
    choice = models.resolve("auto")
    elapsed = time.perf_counter() - start
    assert choice.name == "smollm2-135m" and choice.source == "bundled"
    assert "unreachable" in choice.reason
    assert elapsed < hub.HUB_PROBE_TIMEOUT_S  # no retry loop: a blocked network fails at once


def test_auto_prefers_cached_gpt2(monkeypatch):
    monkeypatch.setattr(hub, "in_hf_cache", lambda repo_id: repo_id == "gpt2")
    assert models.resolve("auto") == models.ModelChoice(
        "gpt2", "hf-cache", "gpt2", "auto: gpt2 is in the local Hugging Face cache")


def test_hub_probe_false_when_blocked(no_network):
    assert hub.hub_reachable() is False


@pytest.mark.parametrize("name", ["no-such-model-xyz", "", "gpt2-medium"])
def test_unknown_or_unreachable_name_lists_known_names(no_network, monkeypatch, name):
    monkeypatch.setattr(hub, "in_hf_cache", lambda repo_id: False)
    with pytest.raises(ValueError, match="Known names: auto, gpt2, smollm2-135m, tiny-gpt2"):
        models.resolve(name)


def test_tiny_gpt2_generates(tiny):
    model, tokenizer = tiny
    assert model.config.model_type == "gpt2" and model.config.n_layer == 2
    batch = tokenizer(["Hello", "A longer prompt here"], return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=4, do_sample=False)  # (2, P + 4)
    assert out.shape == (2, batch["input_ids"].shape[1] + 4)
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None


def test_tiny_gpt2_weights_are_reproducible():
    a, _ = models.load("tiny-gpt2", device="cpu", verbose=False)
    b, _ = models.load("tiny-gpt2", device="cpu", verbose=False)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_smollm2_loads_from_safetensors_cache_and_generates():
    model, tokenizer = models.load("smollm2-135m", device="cpu", verbose=False)
    assert (models.smollm2_dir() / "model.safetensors").is_file()
    assert not hasattr(model.config, "quantization_config")
    batch = tokenizer(["### Prompt:\nName a primary colour.\n\n### Response:\n"], return_tensors="pt")
    out = model.generate(**batch, max_new_tokens=6, do_sample=False)
    text = tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    assert text.strip()
    # as the GGUF declares (and the Hub's tokenizer does): no <|im_start|> before the text, on
    # transformers 4.x too, whose GGUF reader builds a Llama tokenizer that would prepend it
    assert tokenizer("Hi")["input_ids"] == tokenizer("Hi", add_special_tokens=False)["input_ids"]


def test_device_and_dtype(monkeypatch):
    cpu = torch.device("cpu")
    assert models.pick_device("cpu") == cpu
    monkeypatch.delenv("LAB_DTYPE", raising=False)
    assert models.pick_dtype(cpu) == (torch.bfloat16 if models.cpu_has_bf16() else torch.float32)
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: True)
    assert models.pick_dtype(cpu, "auto") == torch.bfloat16  # native bf16 units: bf16
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: False)
    assert models.pick_dtype(cpu, None) == torch.float32  # emulated bf16 is slower: fp32
    monkeypatch.setenv("LAB_DTYPE", "bfloat16")
    assert models.pick_dtype(cpu) == torch.bfloat16 and models.pick_dtype(cpu, "float32") == torch.float32
    for bad in ("float16", "fp8"):
        with pytest.raises(ValueError, match="dtype="):
            models.pick_dtype(cpu, bad)
    assert models.pick_device("auto").type in ("cuda", "mps", "cpu")


def test_lora_wraps_c_attn_on_gpt2(tiny):
    base, _ = models.load("tiny-gpt2", device="cpu", verbose=False)
    peft_model = models.add_lora(base, r=4, alpha=8, dropout=0.0)
    wrapped = {name.rsplit(".", 1)[-1] for name, module in peft_model.named_modules()
               if hasattr(module, "lora_A") and not name.endswith(("lora_A", "lora_B"))}
    assert wrapped == {"c_attn"}
    trainable, total = models.count_parameters(peft_model)
    assert 0 < trainable < total
    assert all("lora_" in n for n, p in peft_model.named_parameters() if p.requires_grad)


def test_lora_targets_llama_style():
    class Llama:
        class config:
            model_type = "llama"

    assert models.lora_targets(Llama) == ["q_proj", "v_proj"]


def test_lora_targets_unknown_architecture():
    class Odd:
        class config:
            model_type = "odd-arch"

    with pytest.raises(ValueError, match="target_modules"):
        models.lora_targets(Odd)


def test_embedder_offline_is_bundled_minilm(no_network, monkeypatch):
    monkeypatch.setattr(hub, "in_hf_cache", lambda repo_id: False)
    embedder = models.load_embedder("auto")
    vectors = embedder.encode(["a cat", "a kitten"], normalize_embeddings=True)
    assert vectors.shape == (2, 384)


def test_set_seed_reproduces_torch_and_numpy():
    import numpy as np

    lab.set_seed(3)
    a = (torch.rand(2), np.random.rand())
    lab.set_seed(3)
    b = (torch.rand(2), np.random.rand())
    assert torch.equal(a[0], b[0]) and a[1] == b[1]


def test_quantization_needs_a_gpu_and_says_so():
    import pytest as _pytest

    from lab.config import HybridConfig

    with _pytest.raises(ValueError, match="needs a CUDA GPU"):
        quantization.bnb_config("4bit", torch.device("cpu"), torch.float32)
    assert quantization.bnb_config("none", torch.device("cpu"), torch.float32) is None
    with _pytest.raises(ValueError, match="quantization"):
        HybridConfig(quantization="3bit")
    from lab.trainer import HybridTrainer

    with _pytest.raises(ValueError, match="needs a CUDA GPU"):
        HybridTrainer(HybridConfig(model="tiny-gpt2", device="cpu", quantization="8bit"), verbose=False)


def _sft_losses(model, tok, steps=6):
    from lab import generator

    model = models.add_lora(model, "generator", r=4, alpha=8, dropout=0.0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    prompts, answers = ["Name a colour.", "Count: one two"], ["Red.", "three four five"]
    losses = []
    for _ in range(steps):
        loss = generator.sft_loss(model, tok, prompts, answers)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return model, losses


def test_int8_backbone_on_a_cpu_trains_lora_like_the_bf16_one():
    pytest.importorskip("torchao")
    from lab import generator

    plain, plain_losses = _sft_losses(*tiny.llama(torch.bfloat16))
    model, tok = tiny.llama(torch.bfloat16)
    quantization.quantize_int8(model)
    linear = model.model.layers[0].mlp.down_proj.weight
    assert type(linear).__name__ == "Int8Tensor" and type(model.lm_head.weight) is torch.nn.Parameter  # head kept
    model, losses = _sft_losses(model, tok)
    assert losses[-1] < losses[0] - 0.3  # LoRA learns on the int8 backbone (a random model: slowly)
    assert losses == pytest.approx(plain_losses, rel=1e-3)  # and follows the bf16 run (measured: within 2e-4)
    assert all(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)
    torch.manual_seed(0)
    samples = generator.sample(model, tok, ["Hi"], k=2, max_new_tokens=4)  # decodes (unfolded: int8 base)
    assert len(samples.completions) == 2


def test_int8_says_what_it_needs():
    pytest.importorskip("torchao")
    from lab.config import HybridConfig
    from lab.trainer import HybridTrainer

    gpt2, _ = models.load("tiny-gpt2", "cpu", verbose=False)
    with pytest.raises(ValueError, match="Conv1D"):
        quantization.quantize_int8(gpt2)
    with pytest.raises(ValueError, match="pretrained model"):
        HybridTrainer(HybridConfig(model="tiny-gpt2", device="cpu", quantization="int8"), verbose=False)
    assert HybridConfig(quantization="int8").quantization == "int8"
