"""quantization='int8' (torchao) against the bf16 backbone, on this CPU: the linear layers'
bytes, LoRA-SFT losses on the same rows, and the time of default hybrid steps.

    python benchmarks/int8_cpu.py --json reports/int8-cpu-2026-11-26/int8.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a clone

from lab import generator, models  # noqa: E402
from lab.config import HybridConfig  # noqa: E402
from lab.data import load_examples  # noqa: E402
from lab.trainer import HybridTrainer  # noqa: E402


def linear_mib(model) -> float:
    """MiB of the backbone's nn.Linear weights (int8 data + scales once quantized), the LM head excepted."""
    head = model.get_output_embeddings()
    total = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module is not head:
            w = module.weight
            total += w.qdata.nbytes + w.scale.nbytes if hasattr(w, "qdata") else w.nbytes
    return total / 2**20


def sft_losses(quantization: str, rows, steps: int) -> tuple[float, list[float]]:
    model, tok = models.load("smollm2-135m", "cpu", "bfloat16", verbose=False, quantization=quantization)
    size = linear_mib(model)
    torch.manual_seed(0)
    model = models.add_lora(model, "generator")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(steps):
        loss = generator.sft_loss(model, tok, [e.prompt for e in rows], [e.completion for e in rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(round(loss.item(), 4))
    return size, losses


def step_seconds(quantization: str, steps: int) -> float:
    config = HybridConfig(model="smollm2-135m", device="cpu", dtype="bfloat16", quantization=quantization, seed=0)
    trainer = HybridTrainer(config, examples=load_examples("bundled", "train"), verbose=False)
    trainer.step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sft-steps", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed hybrid steps a side, interleaved")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = load_examples("bundled", "train")[:4]
    report = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    for q in ("none", "int8"):
        report[f"{q}_linear_mib"], report[f"{q}_sft_losses"] = sft_losses(q, rows, args.sft_steps)
    times = {"none": [], "int8": []}
    for _ in range(2):  # two turns each, so that the machine's drift falls on both
        for q in times:
            times[q].append(round(step_seconds(q, args.steps), 3))
    report.update({f"{q}_s_per_step": t for q, t in times.items()})
    print(json.dumps(report))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
