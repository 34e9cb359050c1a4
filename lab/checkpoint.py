"""Atomic checkpoints of a :class:`lab.trainer.HybridTrainer`, and exact resume.

A run folder holds ``checkpoints/step-000010/`` ... Each checkpoint is written into a
temporary folder and renamed into place only when complete, so a run killed mid-write
leaves the previous checkpoint intact. It stores what the trainer hands over, its
``adapters()`` and the groups of its ``state_dict()``, and reads no trainer attribute itself:

| file | what |
| --- | --- |
| ``generator/``, ``discriminator/`` (``snapshot/``) | LoRA adapters in PEFT format (``adapter_model.safetensors``) |
| ``head.safetensors`` ... | group ``weights``: the discriminator's head(s) |
| ``optimizers.pt``, ``rng.pt`` | groups ``optimizers`` and ``rng`` (every random stream), read ``weights_only`` |
| ``state.json``, ``config.json`` | groups ``state`` (step count, EMA baseline, critic accuracy ...) and ``config`` |
| ``history.jsonl``, ``history.csv``, ``samples.csv`` | groups ``history`` and ``samples`` (with ``history_window``: the last steps', :mod:`lab.runtime.row_log`) |

Adapters load with plain ``peft.PeftModel.from_pretrained(base, ".../generator")``
(:func:`load_generator`).
"""

from __future__ import annotations

import errno
import json
import os
import pickle  # only for its error type: nothing is unpickled here
import re
import shutil
from pathlib import Path

import pandas as pd
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lab import models
from lab.config import HybridConfig
from lab.runtime import distributed, row_log

KEEP = 2  # complete checkpoints kept per run
TORCH_GROUPS = ("optimizers", "rng")  # state_dict() groups of tensors and numbers: GROUP.pt, read weights_only
_NAME = re.compile(r"^step-(\d+)$")
_DAMAGE = (OSError, ValueError, RuntimeError, KeyError, TypeError, IndexError, AttributeError, EOFError,
           pickle.UnpicklingError, SafetensorError)  # what reading a damaged or foreign checkpoint raises
_LEFTOVER = re.compile(r"^\.(?:tmp|trash)-step-\d+-(\d+)$")  # a writer's temporary folders, by pid


def _write_adapter(peft_model, adapter: str, folder: Path) -> None:
    """Save one adapter in PEFT's own layout at ``folder`` (config + safetensors)."""
    staging = folder.parent / f".{adapter}-staging"
    # save_embedding_layers=False: as lab.models.adapter_state, which check_adapter compares with
    peft_model.save_pretrained(staging, selected_adapters=[adapter], save_embedding_layers=False)
    saved = staging / adapter if (staging / adapter).is_dir() else staging
    saved.rename(folder)
    shutil.rmtree(staging, ignore_errors=True)


def save(trainer, out_dir: Path) -> Path:
    """Write the trainer's state to ``out_dir/checkpoints/step-NNNNNN``; returns that folder.

    A write that fails (full disk, no permission) removes its temporary files and raises an
    ``OSError`` whose message names the folder and the fix; the previous checkpoints stay intact.
    Several processes (:mod:`lab.runtime.distributed`) all call it: each hands its own random
    streams to ``state_dict()``; the main one writes, the others write nothing.
    """
    state = trainer.state_dict()
    step = state["state"]["step"]
    root = out_dir / "checkpoints"
    final = root / f"step-{step:06d}"
    if not distributed.is_main():
        return final
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(root)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        _write_checkpoint(trainer.adapters(), state, tmp)
        if final.exists():  # re-saving the same step (e.g. at the end of a run): set the old aside
            _discard(final)
        tmp.rename(final)  # the atomic moment: the checkpoint now exists, complete
        if state["config"].get("history_window"):  # the rows not yet in the run's files; the rest are
            row_log.append_after(out_dir, row_log.last_step(out_dir), state["history"], state["samples"])
        else:
            write_history(state, out_dir)
        _atomic_write(out_dir / "config.json", _config_text(state["config"]))
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        for name in ("history.jsonl", "history.csv", "samples.csv", "config.json"):
            (out_dir / f".{name}.tmp").unlink(missing_ok=True)
        raise _write_error(err, f"could not write the checkpoint of step {step} in {root}") from err
    for old in complete_checkpoints(out_dir)[:-KEEP]:
        _discard(old)
    return final


def _write_error(err: OSError, what: str) -> OSError:
    """``err`` (same errno, so the same ``OSError`` subclass) with one line saying what failed and
    how to fix it."""
    fix = {errno.ENOSPC: "free some disk space or choose another --out",
           errno.EDQUOT: "free some of your disk quota or choose another --out",
           errno.EACCES: "make the folder writable or choose another --out",
           errno.EPERM: "make the folder writable or choose another --out",
           errno.EROFS: "the disk is read-only; choose another --out"}.get(err.errno, "choose another --out")
    message = f"{what}: {err.strerror or err}; {fix} (the previous checkpoints are intact)"
    return OSError(err.errno, message) if err.errno is not None else OSError(message)


def _discard(folder: Path) -> None:
    """Delete a checkpoint folder so that no half-deleted one can pass as complete: rename it to
    a hidden name first (atomic), then delete."""
    trash = folder.with_name(f".trash-{folder.name}-{os.getpid()}")
    shutil.rmtree(trash, ignore_errors=True)
    folder.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)


def _remove_leftovers(root: Path) -> None:
    """Delete the ``.tmp-*`` / ``.trash-*`` folders of writers that were killed (their process
    is gone) or interrupted in this process (a save starts after the last one ended); another
    live writer's are kept."""
    for path in root.iterdir():
        match = _LEFTOVER.match(path.name)
        if match and (int(match.group(1)) == os.getpid() or not _alive(int(match.group(1)))):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def _write_checkpoint(adapters: dict, state: dict, tmp: Path) -> None:
    """Every file of a checkpoint, into the (temporary) folder ``tmp``: the ``adapters``
    (folder -> (peft model, adapter name)) and each group of ``state`` (``state_dict()``)."""
    for folder, (model, adapter) in adapters.items():
        _write_adapter(model, adapter, tmp / folder)
    for name, tensors in state["weights"].items():
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp / f"{name}.safetensors")
    for group in TORCH_GROUPS:
        torch.save(state[group], tmp / f"{group}.pt")
    (tmp / "state.json").write_text(json.dumps(state["state"]))
    (tmp / "config.json").write_text(_config_text(state["config"]))
    write_history(state, tmp)


def write_history(state: dict, folder: Path) -> None:
    """history.jsonl (exact, for resume), history.csv and samples.csv (for people)."""
    _atomic_write(folder / "history.jsonl", "".join(json.dumps(row) + "\n" for row in state["history"]))
    _atomic_write(folder / "history.csv", pd.DataFrame(state["history"]).to_csv(index=False))
    _atomic_write(folder / "samples.csv", pd.DataFrame(state["samples"]).to_csv(index=False))


def _config_text(config: dict) -> str:
    return json.dumps(config, indent=2) + "\n"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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
    """Rebuild a trainer from a checkpoint so that it continues exactly where it stopped: build
    it from ``config.json``, load its ``adapters()``, then ``load_state_dict`` the rest.

    A damaged checkpoint (a truncated or edited file, a missing one) or one that does not fit
    its ``config.json`` (an adapter from another model or config) raises one ``ValueError``
    naming the file and the way out; nothing on disk is changed. Weights are read only as
    safetensors or with ``torch.load(weights_only=True)``, never unpickled.
    """
    ckpt = find(path)
    config = _config(ckpt)
    trainer = trainer_cls(config, **kwargs)
    where = "state.json"
    try:
        state = {"state": json.loads((ckpt / where).read_text(encoding="utf-8")), "config": config.to_dict()}
        step = _check_state(state["state"], ckpt)
        for folder, (model, adapter) in trainer.adapters().items():
            where = f"{folder}/adapter_model.safetensors"
            _load_adapter(model, adapter, ckpt / where, config)
        state["weights"] = {}
        for file in sorted(ckpt.glob("*.safetensors")):
            where = file.name
            state["weights"][file.stem] = load_file(file)
        for group in TORCH_GROUPS:
            where = f"{group}.pt"
            state[group] = torch.load(ckpt / where, weights_only=True)
        where = "history.jsonl"
        lines = (ckpt / where).read_text(encoding="utf-8").splitlines()
        state["history"] = [json.loads(line) for line in lines if line]
        steps = [row.get("step") for row in state["history"]]
        first = steps[0] if steps and config.history_window else 1  # a window: the last steps' rows
        if steps != list(range(first, step + 1)):
            raise ValueError(f"it does not hold steps {first}..{step} once each")
        where = "samples.csv"
        samples = ckpt / where
        state["samples"] = pd.read_csv(samples, keep_default_na=False).to_dict("records") \
            if samples.stat().st_size > 1 else []
        where = "the state its files hold"
        trainer.load_state_dict(state)
        if config.history_window and ckpt.parent.name == "checkpoints":  # the run's files: back to this step
            row_log.truncate(ckpt.parent.parent, step)
    except _DAMAGE as err:
        raise ValueError(_damaged(ckpt, where, err)) from err
    return trainer


def _config(ckpt: Path) -> HybridConfig:
    """The checkpoint's config; a missing or bad ``config.json`` is a one-line ``ValueError``."""
    try:
        return HybridConfig.load(ckpt / "config.json")
    except _DAMAGE as err:
        raise ValueError(_damaged(ckpt, "config.json", err)) from err


def _check_state(state, ckpt: Path) -> int:
    """The step ``state.json`` holds: a whole number, the one its folder is named after."""
    step = state.get("step") if isinstance(state, dict) else None
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"'step' must be a whole number >= 0, got {step!r}")
    match = _NAME.match(ckpt.name)
    if match and int(match.group(1)) != step:
        raise ValueError(f"it says step {step}, but the folder is {ckpt.name}")
    return step


def _load_adapter(model, adapter: str, file: Path, config) -> None:
    """Load one adapter's safetensors into ``model``, first checking that every tensor is there,
    with its shape (PEFT alone skips missing ones silently)."""
    from peft import set_peft_model_state_dict

    weights = load_file(file)
    check_adapter(model, adapter, weights, config)
    set_peft_model_state_dict(model, weights, adapter_name=adapter)


def check_adapter(model, adapter: str, weights: dict, config) -> None:
    """``ValueError`` unless ``weights`` are exactly the tensors (names, shapes) of ``adapter`` in
    ``model``: an adapter saved from another model or LoRA config does not fit."""
    expected = models.adapter_state(model, adapter)
    missing, unexpected = set(expected) - set(weights), set(weights) - set(expected)
    shaped = sorted(k for k in set(expected) & set(weights) if tuple(expected[k].shape) != tuple(weights[k].shape))
    if missing or unexpected or shaped:
        detail = (f"{len(missing)} tensor(s) missing, {len(unexpected)} unexpected, {len(shaped)} of another shape"
                  + (f" (e.g. {shaped[0]}: {tuple(weights[shaped[0]].shape)} saved, "
                     f"{tuple(expected[shaped[0]].shape)} expected)" if shaped else ""))
        raise ValueError(f"the {adapter} adapter does not fit model={config.model!r}, lora_r={config.lora_r} "
                         f"of config.json: {detail}; was it copied from another model or config?")


def _damaged(ckpt: Path, where: str, err: BaseException) -> str:
    """One line: which checkpoint file is wrong, why, and how to carry on."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()] or [""]
    text = " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]  # "Error(s) in ...:" says nothing alone
    text = text[:300] + ("…" if len(text) > 300 else "")
    why = text if isinstance(err, ValueError) and not isinstance(err, json.JSONDecodeError) \
        else f"{type(err).__name__}: {text}"
    earlier = [p for p in complete_checkpoints(ckpt.parent.parent) if p != ckpt] if _NAME.match(ckpt.name) else []
    fix = (f"move {ckpt} out of the way to fall back to {earlier[-1].name}, or start a new run with another --out"
           if earlier else "start a new run with another --out")
    return f"checkpoint {ckpt} is damaged or does not fit its config: {where}: {why}; {fix}"


def load_generator(run: Path, device: str = "auto"):
    """``(peft_model, tokenizer, config)`` from a run or checkpoint folder, loading the
    adapter with plain ``peft.PeftModel.from_pretrained`` (what a user outside the kit does)."""
    from peft import PeftModel

    ckpt = find(Path(run))
    config = _config(ckpt)
    base, tokenizer = models.load(config.model, device, config.dtype, verbose=False)
    where = "generator/adapter_model.safetensors"
    try:
        weights = load_file(ckpt / where)
        where = "generator/"
        model = PeftModel.from_pretrained(base, ckpt / "generator", adapter_name="generator")
        check_adapter(model, "generator", weights, config)  # PEFT skips missing tensors silently
    except _DAMAGE as err:
        raise ValueError(_damaged(ckpt, where, err)) from err
    return model.eval(), tokenizer, config
