"""The CUDA path, checked on a GPU machine: hybrid and RL steps in bf16 and fp32, the speed and
memory at growing batch sizes, and the fast SFT path against the plain one in bf16.

The device machines reach no network and carry at most 64 MiB, so the bundled SmolLM2-135M
weights (540 MB) cannot travel: the model is the same architecture randomly initialised from
its config and tokenizer (``--model-dir``, e.g. a copy of ``~/.cache/lora-gan-lab/smollm2-135m``
without ``model.safetensors``). Step times and memory depend on the shapes, not on the values.

    python benchmarks/gpu_check.py --model-dir .gpu/smollm2-135m --out gpu_check.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from lab.config import HybridConfig
from lab.data import data_dir, to_example
from lab.trainer import HybridTrainer

REWARD = {"perplexity": 0.5, "length": 0.3, "repetition": 0.2}  # no Hub-only embedder needed


def random_model(model_dir: str, dtype: torch.dtype, device: str):
    """SmolLM2-135M's architecture, random weights (seed 0), and its tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from lab.models import _prepare_tokenizer

    tokenizer = _prepare_tokenizer(AutoTokenizer.from_pretrained(model_dir))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir), dtype=dtype)
    return model.to(device).eval(), tokenizer


def timed_run(model_dir: str, dtype: torch.dtype, examples, mode: str, prompts: int, k: int, steps: int) -> dict:
    model, tokenizer = random_model(model_dir, dtype, "cuda")
    config = HybridConfig(model="smollm2-135m", device="cuda", mode=mode, prompts_per_step=prompts,
                          samples_per_prompt=k, max_new_tokens=32, reward_weights=REWARD)
    trainer = HybridTrainer(config, examples=examples, model=model, tokenizer=tokenizer, verbose=False)
    trainer.step()  # warm-up: kernels, allocator
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    rows = [trainer.step() for _ in range(steps)]
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    phases = {key: sum(r.get(key, 0.0) for r in rows) / steps
              for key in ("time_sample", "time_reward", "time_disc", "time_gen")}
    finite = all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    return dict(dtype=str(dtype).removeprefix("torch."), mode=mode, prompts=prompts, k=k, s_per_step=round(seconds, 3),
                samples_per_s=round(prompts * k / seconds, 2), peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2),
                finite_losses=finite, **{key: round(v, 3) for key, v in phases.items()})


def quantized_run(quantization: str, examples, steps: int) -> dict:
    """A hybrid run of 4 x 2 samples with the backbone loaded through ``lab.models.load`` in
    ``quantization`` (``none``: bf16 weights; ``4bit``/``8bit``: bitsandbytes, QLoRA preparation):
    step time, peak memory, the backbone's footprint, and whether the LoRA weights moved."""
    config = HybridConfig(model="smollm2-135m", device="cuda", dtype="bfloat16", quantization=quantization,
                          mode="hybrid", prompts_per_step=4, samples_per_prompt=2, max_new_tokens=32,
                          reward_weights=REWARD)
    torch.cuda.reset_peak_memory_stats()
    trainer = HybridTrainer(config, examples=examples, verbose=False)
    footprint = trainer.model.get_memory_footprint() / 2**30
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.step()  # warm-up
    torch.cuda.synchronize()
    start = time.perf_counter()
    rows = [trainer.step() for _ in range(steps)]
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    moved = sum(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters() if n in before)
    kbit = sorted({type(m.weight).__name__ for m in trainer.model.modules()
                   if type(getattr(m, "weight", None)).__name__ in ("Params4bit", "Int8Params")})
    return dict(quantization=quantization, s_per_step=round(seconds, 3), samples_per_s=round(8 / seconds, 2),
                peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 3), footprint_gib=round(footprint, 3),
                kbit_weights=kbit, trained_tensors_moved=f"{moved}/{len(before)}",
                finite_losses=all(torch.isfinite(torch.tensor(r["loss"])) for r in rows),
                loss_sft=[round(r["loss_sft"], 4) for r in rows])


def sft_parity(model_dir: str, examples) -> dict:
    """bf16 on CUDA: the shared-prompt SFT loss vs the plain per-row computation."""
    from lab import generator, losses
    from lab.models import add_lora

    model, tokenizer = random_model(model_dir, torch.bfloat16, "cuda")
    model = add_lora(model, "generator")
    rows = examples[:8]
    prompts, answers = [e.prompt for e in rows], [e.completion for e in rows]
    with torch.no_grad():
        fast = generator.sft_loss(model, tokenizer, prompts, answers)
        batch = generator.sft_batch(tokenizer, prompts, answers, device="cuda")
        trained = batch["labels"] != generator.IGNORE
        plain = generator.response_logprobs(model, batch["input_ids"], batch["attention_mask"], trained)
        plain = losses.mean_nll(plain.tokens, trained[:, 1:])
    return dict(sft_fast=round(float(fast), 5), sft_plain=round(float(plain), 5),
                abs_diff=round(abs(float(fast) - float(plain)), 5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--shapes", choices=("all", "none"), default="all", help="the timed shapes (none: skip)")
    parser.add_argument("--quantized", action="store_true",
                        help="also the backbone in bf16, 8-bit and 4-bit through lab.models.load (needs bitsandbytes "
                             "and the stand-ins of benchmarks/gpu_stand_ins.py in LAB_CACHE)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this script checks the GPU path")
    lines = (data_dir() / "train.jsonl").read_text().splitlines()  # no `datasets` on the GPU image
    examples = [to_example(json.loads(line)) for line in lines if line.strip()]
    report = dict(device=torch.cuda.get_device_name(0), torch=torch.__version__, python=platform.python_version(),
                  bf16_supported=torch.cuda.is_bf16_supported(), runs=[])
    report["sft_parity_bf16"] = sft_parity(args.model_dir, examples)
    print(json.dumps(report["sft_parity_bf16"]), flush=True)
    shapes = [("float32", "hybrid", 4, 2), ("bfloat16", "hybrid", 4, 2), ("bfloat16", "rl", 4, 2),
              ("bfloat16", "hybrid", 16, 4), ("float32", "hybrid", 64, 4), ("bfloat16", "hybrid", 64, 4)]
    for dtype, mode, prompts, k in shapes if args.shapes == "all" else []:
        row = timed_run(args.model_dir, getattr(torch, dtype), examples, mode, prompts, k, args.steps)
        report["runs"].append(row)
        print(json.dumps(row), flush=True)
    if args.quantized:
        report["quantized"] = []
        for quantization in ("none", "8bit", "4bit"):
            try:
                row = quantized_run(quantization, examples, args.steps)
            except Exception as err:  # report it and go on: one failure must not hide the others
                row = dict(quantization=quantization, error=f"{type(err).__name__}: {err}")
            report["quantized"].append(row)
            print(json.dumps(row), flush=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
