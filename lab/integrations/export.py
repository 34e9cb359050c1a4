"""Hand a trained generator to other tools: its LoRA adapter in PEFT's format with a model card,
optionally merged into plain transformers weights, optionally pushed to the Hugging Face Hub.

``python -m lab export RUN --out DIR [--merge] [--push-to-hub USER/NAME]``; every ``lab train``
run also leaves ``RUN/adapter/`` (the final adapter and its card). Someone with plain ``peft``
then loads it in one step::

    base = AutoModelForCausalLM.from_pretrained(BASE)
    model = PeftModel.from_pretrained(base, "DIR")
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd

from lab import checkpoint, evaluate, models
from lab.config import HybridConfig
from lab.runtime import hub

HUB_IDS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}  # the kit's offline copies, by origin
CARD_FIELDS = ("mode", "lambda_rl", "baseline", "reward_source", "reward_weights", "lr", "lora_r", "lora_alpha",
               "prompts_per_step", "samples_per_prompt", "max_new_tokens", "temperature", "kl_coef", "seed")


def base_model_id(config: HybridConfig) -> str:
    """The Hub id a user loads as the base: the model's own, or the origin of a bundled copy."""
    choice = models.resolve(config.model)
    return HUB_IDS.get(choice.name, choice.name)


def model_card(run: Path, config: HybridConfig, steps: int) -> str:
    """README.md of an exported adapter: base model, training config, data, the run's held-out
    metrics (``RUN/eval.csv`` from ``lab eval --run RUN``, when it exists) and how to load it."""
    base = base_model_id(config)
    lines = ["---", "library_name: peft", f"base_model: {base}", "tags: [lora, lora-gan-lab, sft, reinforce]", "---",
             f"# {run.name}: a LoRA adapter trained with LoRA-GAN Lab", "",
             f"A LoRA adapter (rank {config.lora_r}) for **{base}**, trained for {steps} steps in mode "
             f"`{config.mode}` (SFT on reference answers + lambda x REINFORCE on the model's own samples).", ""]
    if models.resolve(config.model).source == "bundled":
        lines += [f"Trained on the kit's offline copy of {base} (de-quantized from its Q8 GGUF file), so the "
                  "Hub weights differ slightly from the ones it was trained on.", ""]
    lines += ["## Training", "", "| setting | value |", "|---|---|",
              *(f"| {name} | `{json.dumps(getattr(config, name))}` |" for name in CARD_FIELDS),
              f"| dataset | `{config.dataset}` |", ""]
    eval_file = run / "eval.csv"
    if eval_file.is_file():
        summary = evaluate.summarize(pd.read_csv(eval_file, keep_default_na=False, na_values=[""]))
        lines += ["## Held-out metrics", "", f"From `{eval_file.name}` (`python -m lab eval --run RUN`):", "",
                  *_markdown(summary), ""]
    else:
        lines += ["## Held-out metrics", "", "Not measured: run `python -m lab eval --run RUN`, then export again.", ""]
    lines += ["## How to load", "", "```python", "from peft import PeftModel",
              "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
              f'base = AutoModelForCausalLM.from_pretrained("{base}")',
              f'tokenizer = AutoTokenizer.from_pretrained("{base}")',
              'model = PeftModel.from_pretrained(base, "path/to/this/folder")',
              'prompt = "### Prompt:\\nName the largest planet.\\n\\n### Response:\\n"',
              "```", "", "Prompts use the kit's template: `### Prompt:\\n{instruction}\\n\\n### Response:\\n`"
              + (" (through the tokenizer's chat template)." if config.chat_template else "."), ""]
    return "\n".join(lines)


def _markdown(summary: pd.DataFrame) -> list[str]:
    """A metrics frame (decodings x metrics) as Markdown table lines."""
    head = ["decoding", *map(str, summary.columns)]
    rows = [[str(i), *(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row)]
            for i, row in zip(summary.index, summary.to_numpy().tolist())]
    return ["| " + " | ".join(r) + " |" for r in [head, ["---"] * len(head), *rows]]


def write_adapter(run: Path, out: Path) -> Path:
    """Copy the latest checkpoint's generator adapter of ``run`` to ``out`` (PEFT's files) with
    its model card; returns ``out``. An existing ``out`` is replaced only when complete."""
    ckpt = checkpoint.find(run)
    config = HybridConfig.load(ckpt / "config.json")
    steps = json.loads((ckpt / "state.json").read_text()).get("step", 0)
    staging = out.with_name(f".{out.name}-staging")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(ckpt / "generator", staging)
    (staging / "README.md").write_text(model_card(run, config, steps))
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out


def export(run: str | Path, out: str | Path, merge: bool = False, push_to_hub: str | None = None) -> Path:
    """The adapter of ``run`` in ``out`` (PEFT format + model card); with ``merge`` also
    ``out/merged/`` (the adapter folded into full transformers weights, safetensors, with the
    tokenizer); with ``push_to_hub`` the folder uploaded to that Hub repo (an unreachable Hub is
    one ``ValueError`` before anything is written). Returns ``out``."""
    run, out = Path(run), Path(out)
    if push_to_hub and not hub.hub_reachable():
        raise ValueError(f"--push-to-hub {push_to_hub}: the Hugging Face Hub is unreachable from here; export "
                         "without it, copy the folder to a machine with internet and run "
                         f"`huggingface-cli upload {push_to_hub} FOLDER`")
    write_adapter(run, out)
    if merge:
        model, tokenizer, _ = checkpoint.load_generator(run, device="cpu")
        merged = model.merge_and_unload()
        merged.save_pretrained(out / "merged", safe_serialization=True)
        tokenizer.save_pretrained(out / "merged")
    if push_to_hub:
        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(push_to_hub, exist_ok=True)
        api.upload_folder(repo_id=push_to_hub, folder_path=str(out))
    return out
