"""Atomic checkpoints of a :class:`lab.trainer.HybridTrainer`, and exact resume.

A run folder holds ``checkpoints/step-000010/`` ... Each checkpoint is written into a
temporary folder and renamed into place only when complete, so a run killed mid-write
leaves the previous checkpoint intact. A checkpoint holds:

| file | what |
| --- | --- |
| ``generator/``, ``discriminator/`` | LoRA adapters in PEFT format (``adapter_model.safetensors``) |
| ``head.safetensors`` | the discriminator's scalar head |
| ``optimizers.pt`` | both optimizer states (``torch.load(weights_only=True)``) |
| ``rng.pt``, ``state.json`` | RNG states (several processes: each one's too), step count, EMA baseline, critic accuracy |
| ``config.json``, ``history.jsonl``, ``history.csv``, ``samples.csv`` | config and history |

Adapters load with plain ``peft.PeftModel.from_pretrained(base, ".../generator")``
(:func:`load_generator`).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import pickle  # only for its error type: nothing is unpickled here
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lab.runtime import distributed
from lab.data import Example
from lab.variants.selfplay import SNAPSHOT, freeze

KEEP = 2  # complete checkpoints kept per run
_NAME = re.compile(r"^step-(\d+)$")
_DAMAGE = (OSError, ValueError, RuntimeError, KeyError, TypeError, IndexError, AttributeError, EOFError,
           pickle.UnpicklingError, SafetensorError)  # what reading a damaged or foreign checkpoint raises
_LEFTOVER = re.compile(r"^\.(?:tmp|trash)-step-\d+-(\d+)$")  # a writer's temporary folders, by pid


def _write_adapter(peft_model, adapter: str, folder: Path) -> None:
    """Save one adapter in PEFT's own layout at ``folder`` (config + safetensors)."""
    staging = folder.parent / f".{adapter}-staging"
    peft_model.save_pretrained(staging, selected_adapters=[adapter])
    saved = staging / adapter if (staging / adapter).is_dir() else staging
    saved.rename(folder)
    shutil.rmtree(staging, ignore_errors=True)


def save(trainer, out_dir: Path) -> Path:
    """Write the trainer's state to ``out_dir/checkpoints/step-NNNNNN``; returns that folder.

    A write that fails (full disk, no permission) removes its temporary files and raises an
    ``OSError`` whose message names the folder and the fix; the previous checkpoints stay intact.
    Several processes (:mod:`lab.runtime.distributed`) all call it: the main one writes, with every
    process's RNG streams; the others write nothing.
    """
    root = out_dir / "checkpoints"
    final = root / f"step-{trainer.step_count:06d}"
    processes = distributed.gather_objects([_process_rng(trainer)]) if distributed.world_size() > 1 else []
    if not distributed.is_main():
        return final
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(root)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        _write_checkpoint(trainer, tmp, processes)
        if final.exists():  # re-saving the same step (e.g. at the end of a run): set the old aside
            _discard(final)
        tmp.rename(final)  # the atomic moment: the checkpoint now exists, complete
        write_history(trainer, out_dir)
        trainer.config.save(out_dir / "config.json")
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        for name in ("history.jsonl", "history.csv", "samples.csv"):
            (out_dir / f".{name}.tmp").unlink(missing_ok=True)
        raise _write_error(err, f"could not write the checkpoint of step {trainer.step_count} in {root}") from err
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


def _process_rng(trainer) -> dict:
    """This process's own random streams: torch (sampling), its GPU's, the junk negatives'."""
    own = {"torch": torch.get_rng_state(), "junk": _jsonable(trainer.rng.getstate())}
    if torch.cuda.is_available():
        own["cuda"] = torch.cuda.get_rng_state()
    return own


def _restore_process_rng(trainer, processes: list[dict] | None) -> None:
    """Several processes: each takes back its own streams when the checkpoint holds one per
    process; else (another process count) fresh ones, so that the shards still differ."""
    if distributed.world_size() == 1:
        return
    if processes is not None and len(processes) == distributed.world_size():
        own = processes[distributed.rank()]
        torch.set_rng_state(own["torch"])
        trainer.rng.setstate(_tupled(own["junk"]))
        if "cuda" in own and torch.cuda.is_available():
            torch.cuda.set_rng_state(own["cuda"])
        return
    seed = trainer.config.seed + trainer.step_count * distributed.world_size()
    distributed.seed_process(seed)
    trainer.rng.seed(seed + distributed.rank())


def _write_checkpoint(trainer, tmp: Path, processes: list[dict]) -> None:
    """Every file of a checkpoint, into the (temporary) folder ``tmp``; ``processes``: each
    process's RNG streams (:func:`_process_rng`) when there are several, else empty."""
    disc = trainer.disc
    _write_adapter(trainer.model, "generator", tmp / "generator")
    _write_adapter(disc.backbone, disc.adapter, tmp / "discriminator")
    save_file({k: v.contiguous() for k, v in disc.head.state_dict().items()}, tmp / "head.safetensors")
    if disc.aux is not None:
        save_file({k: v.contiguous() for k, v in disc.aux.state_dict().items()}, tmp / "aux_head.safetensors")
    if SNAPSHOT in trainer.model.peft_config:  # self-play's frozen opponent
        _write_adapter(trainer.model, SNAPSHOT, tmp / SNAPSHOT)
    torch.save({"generator": trainer.opt_gen.state_dict(),
                "discriminator": trainer.opt_disc.state_dict()}, tmp / "optimizers.pt")
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    if processes:
        rng["processes"] = processes
    torch.save(rng, tmp / "rng.pt")
    state = {
        "step": trainer.step_count, "ema_baseline": trainer.ema_baseline,
        "critic_accuracy": trainer.critic_accuracy,
        "nonfinite_in_a_row": getattr(trainer, "nonfinite_in_a_row", 0),  # the NaN guard's streak
        "python_random": _jsonable(random.getstate()), "junk_random": _jsonable(trainer.rng.getstate()),
        "numpy_random": _jsonable(np.random.get_state(legacy=True)),
        "stream": trainer.stream.state() if trainer.stream is not None else None,  # what was read of it
        "queue": [dataclasses.asdict(e) for e in trainer.queue],  # fed or streamed rows not trained on yet
    }
    (tmp / "state.json").write_text(json.dumps(state))
    trainer.config.save(tmp / "config.json")
    write_history(trainer, tmp)


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
    """Rebuild a trainer from a checkpoint so that it continues exactly where it stopped.

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
        state = json.loads((ckpt / where).read_text(encoding="utf-8"))
        _check_state(state, ckpt)
        disc = trainer.disc
        for model, adapter, folder in ((trainer.model, "generator", "generator"),
                                       (disc.backbone, disc.adapter, "discriminator")):
            where = f"{folder}/adapter_model.safetensors"
            _load_adapter(model, adapter, ckpt / where, config)
        if SNAPSHOT in trainer.model.peft_config:
            where = f"{SNAPSHOT}/adapter_model.safetensors"
            _load_adapter(trainer.model, SNAPSHOT, ckpt / where, config)
            freeze(trainer.model)
        where = "head.safetensors"
        disc.head.load_state_dict(load_file(ckpt / where))
        if disc.aux is not None:
            where = "aux_head.safetensors"
            disc.aux.load_state_dict(load_file(ckpt / where))
        where = "optimizers.pt"
        optimizers = torch.load(ckpt / where, weights_only=True)
        trainer.opt_gen.load_state_dict(optimizers["generator"])
        trainer.opt_disc.load_state_dict(optimizers["discriminator"])
        where = "state.json"
        trainer.step_count, trainer.ema_baseline = state["step"], state["ema_baseline"]
        trainer.critic_accuracy = state["critic_accuracy"]
        trainer.nonfinite_in_a_row = int(state.get("nonfinite_in_a_row", 0))  # older checkpoints: 0
        if trainer.stream is not None and state.get("stream"):
            trainer.stream.offset, trainer.stream.line = state["stream"]["offset"], state["stream"]["line"]
        trainer.queue.extend(Example(**row) for row in state.get("queue", []))
        random.setstate(_tupled(state["python_random"]))
        trainer.rng.setstate(_tupled(state["junk_random"]))
        kind, keys, pos, has_gauss, gauss = state["numpy_random"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
        where = "rng.pt"
        rng = torch.load(ckpt / where, weights_only=True)
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        _restore_process_rng(trainer, rng.get("processes"))
        where = "history.jsonl"
        lines = (ckpt / where).read_text(encoding="utf-8").splitlines()
        trainer.rows = [json.loads(line) for line in lines if line]
        if [row.get("step") for row in trainer.rows] != list(range(1, state["step"] + 1)):
            raise ValueError(f"it does not hold steps 1..{state['step']} once each")
        where = "samples.csv"
        samples = ckpt / where
        if samples.stat().st_size > 1:
            import pandas as pd

            trainer.sample_rows = pd.read_csv(samples, keep_default_na=False).to_dict("records")
    except _DAMAGE as err:
        raise ValueError(_damaged(ckpt, where, err)) from err
    trainer.model.set_adapter("generator")
    return trainer


def _config(ckpt: Path):
    """The checkpoint's config; a missing or bad ``config.json`` is a one-line ``ValueError``."""
    from lab.config import HybridConfig

    try:
        return HybridConfig.load(ckpt / "config.json")
    except _DAMAGE as err:
        raise ValueError(_damaged(ckpt, "config.json", err)) from err


def _check_state(state, ckpt: Path) -> None:
    step = state.get("step") if isinstance(state, dict) else None
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"'step' must be a whole number >= 0, got {step!r}")
    match = _NAME.match(ckpt.name)
    if match and int(match.group(1)) != step:
        raise ValueError(f"it says step {step}, but the folder is {ckpt.name}")


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
    from peft import get_peft_model_state_dict

    expected = get_peft_model_state_dict(model, adapter_name=adapter)
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

    from lab import models

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
