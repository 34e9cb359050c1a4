"""Atomic checkpoints of a :class:`lab.trainer.HybridTrainer`, and exact resume.

A run folder holds ``checkpoints/step-000010/`` ... Each checkpoint is written into a
temporary folder and renamed into place only when complete, so a run killed mid-write
leaves the previous checkpoint intact. A checkpoint holds:

| file | what |
| --- | --- |
| ``generator/``, ``discriminator/`` | LoRA adapters in PEFT format (``adapter_model.safetensors``) |
| ``head.safetensors`` | the discriminator's scalar head |
| ``optimizers.pt`` | both optimizer states (``torch.load(weights_only=True)``) |
| ``rng.pt``, ``state.json`` | RNG states, step count, EMA baseline, critic accuracy |
| ``config.json``, ``history.jsonl``, ``history.csv``, ``samples.csv`` | config and history |

Adapters load with plain ``peft.PeftModel.from_pretrained(base, ".../generator")``
(:func:`load_generator`).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

KEEP = 2  # complete checkpoints kept per run
_NAME = re.compile(r"^step-(\d+)$")


def _write_adapter(peft_model, adapter: str, folder: Path) -> None:
    """Save one adapter in PEFT's own layout at ``folder`` (config + safetensors)."""
    staging = folder.parent / f".{adapter}-staging"
    peft_model.save_pretrained(staging, selected_adapters=[adapter])
    saved = staging / adapter if (staging / adapter).is_dir() else staging
    saved.rename(folder)
    shutil.rmtree(staging, ignore_errors=True)


def save(trainer, out_dir: Path) -> Path:
    """Write the trainer's state to ``out_dir/checkpoints/step-NNNNNN``; returns that folder."""
    root = out_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{trainer.step_count:06d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    disc = trainer.disc
    _write_adapter(trainer.model, "generator", tmp / "generator")
    _write_adapter(disc.backbone, disc.adapter, tmp / "discriminator")
    save_file({k: v.contiguous() for k, v in disc.head.state_dict().items()}, tmp / "head.safetensors")
    torch.save({"generator": trainer.opt_gen.state_dict(),
                "discriminator": trainer.opt_disc.state_dict()}, tmp / "optimizers.pt")
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, tmp / "rng.pt")
    state = {
        "step": trainer.step_count, "ema_baseline": trainer.ema_baseline,
        "critic_accuracy": trainer.critic_accuracy,
        "python_random": _jsonable(random.getstate()), "junk_random": _jsonable(trainer.rng.getstate()),
        "numpy_random": _jsonable(np.random.get_state(legacy=True)),
    }
    (tmp / "state.json").write_text(json.dumps(state))
    trainer.config.save(tmp / "config.json")
    write_history(trainer, tmp)
    if final.exists():  # re-saving the same step (e.g. at the end of a run)
        shutil.rmtree(final)
    tmp.rename(final)  # the atomic moment: the checkpoint now exists, complete
    write_history(trainer, out_dir)
    trainer.config.save(out_dir / "config.json")
    for old in complete_checkpoints(out_dir)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def write_history(trainer, folder: Path) -> None:
    """history.jsonl (exact, for resume), history.csv and samples.csv (for people)."""
    rows = "".join(json.dumps(row) + "\n" for row in trainer.rows)
    _atomic_write(folder / "history.jsonl", rows)
    _atomic_write(folder / "history.csv", trainer.history.to_csv(index=False))
    _atomic_write(folder / "samples.csv", trainer.samples.to_csv(index=False))


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _jsonable(value):
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _tupled(value):
    return tuple(_tupled(v) for v in value) if isinstance(value, list) else value


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """A run's complete checkpoints, oldest first (temporary folders are ignored)."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def find(path: Path) -> Path:
    """The checkpoint folder for ``path``: itself, or a run folder's latest checkpoint."""
    if (path / "state.json").is_file():
        return path
    found = complete_checkpoints(path)
    if not found:
        raise ValueError(f"No checkpoint in {path}: expected {path}/checkpoints/step-NNNNNN/ "
                         f"(written by `python -m lab train --out {path}`)")
    return found[-1]


def load(trainer_cls, path: Path, **kwargs):
    """Rebuild a trainer from a checkpoint so that it continues exactly where it stopped."""
    from peft import set_peft_model_state_dict

    from lab.config import HybridConfig

    ckpt = find(path)
    trainer = trainer_cls(HybridConfig.load(ckpt / "config.json"), **kwargs)
    disc = trainer.disc
    for model, adapter, folder in ((trainer.model, "generator", "generator"),
                                   (disc.backbone, disc.adapter, "discriminator")):
        weights = load_file(ckpt / folder / "adapter_model.safetensors")
        set_peft_model_state_dict(model, weights, adapter_name=adapter)
    disc.head.load_state_dict(load_file(ckpt / "head.safetensors"))
    optimizers = torch.load(ckpt / "optimizers.pt", weights_only=True)
    trainer.opt_gen.load_state_dict(optimizers["generator"])
    trainer.opt_disc.load_state_dict(optimizers["discriminator"])
    state = json.loads((ckpt / "state.json").read_text())
    trainer.step_count, trainer.ema_baseline = state["step"], state["ema_baseline"]
    trainer.critic_accuracy = state["critic_accuracy"]
    random.setstate(_tupled(state["python_random"]))
    trainer.rng.setstate(_tupled(state["junk_random"]))
    kind, keys, pos, has_gauss, gauss = state["numpy_random"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    rng = torch.load(ckpt / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    lines = (ckpt / "history.jsonl").read_text().splitlines()
    trainer.rows = [json.loads(line) for line in lines if line]
    samples = ckpt / "samples.csv"
    if samples.stat().st_size > 1:
        import pandas as pd

        trainer.sample_rows = pd.read_csv(samples, keep_default_na=False).to_dict("records")
    trainer.model.set_adapter("generator")
    return trainer


def load_generator(run: Path, device: str = "auto"):
    """``(peft_model, tokenizer, config)`` from a run or checkpoint folder, loading the
    adapter with plain ``peft.PeftModel.from_pretrained`` (what a user outside the kit does)."""
    from peft import PeftModel

    from lab import models
    from lab.config import HybridConfig

    ckpt = find(Path(run))
    config = HybridConfig.load(ckpt / "config.json")
    base, tokenizer = models.load(config.model, device, verbose=False)
    model = PeftModel.from_pretrained(base, ckpt / "generator", adapter_name="generator")
    return model.eval(), tokenizer, config
