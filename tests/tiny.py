"""The tiny trainer the trainer tests share: tiny-gpt2 on CPU, 2 prompts x 2 samples, 6 new tokens;
and a tiny random Llama for the paths GPT-2 does not take (nn.Linear layers, RMSNorm, rotary, GQA).

``LAB_TEST_DEVICE=cuda`` runs these trainers on a GPU instead (benchmarks/gpu_path.sh).
"""

import os

from lab.config import HybridConfig
from lab.trainer import HybridTrainer

BASE = dict(model="tiny-gpt2", device=os.environ.get("LAB_TEST_DEVICE", "cpu"), prompts_per_step=2,
            samples_per_prompt=2, max_new_tokens=6, lr=1e-2, lr_discriminator=1e-2, seed=0,
            discriminator_warmup_steps=0)  # the warm start has tests of its own (tests/test_warm_start.py)


def make(examples, reward=None, **changes) -> HybridTrainer:
    """A ``HybridTrainer`` with ``BASE`` and ``changes`` on ``examples`` (the conftest fixture)."""
    return HybridTrainer(HybridConfig(**{**BASE, **changes}), examples=examples, reward=reward, verbose=False)


def llama(dtype, attn: str = "sdpa"):
    """A 2-layer random Llama (SmolLM2's architecture) in ``dtype`` with attention ``attn``, and its tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lab import models

    tok = models.load_tokenizer("tiny-gpt2")
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, attn_implementation=attn)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(dtype).eval(), tok
