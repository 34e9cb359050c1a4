"""Command line: ``python -m lab train | sample | eval | ablate``.

Every :class:`lab.config.HybridConfig` field is a flag (``--lambda-rl 0.3``,
``--reward-weights '{"semantic": 1.0}'``); ``--config FILE`` (JSON/YAML) and ``--preset``
give the starting values, flags override them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from lab.config import PRESETS, HybridConfig


def _value(text: str):
    """Parse a flag's value as YAML (numbers, booleans, null, dicts), else keep the string."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--field-name`` flag per config field, all defaulting to 'not given'."""
    group = parser.add_argument_group("config fields (see lab/config.py)")
    for field in dataclasses.fields(HybridConfig):
        group.add_argument(f"--{field.name.replace('_', '-')}", dest=f"cfg_{field.name}",
                           type=_value, default=None, metavar="V")


def build_config(args: argparse.Namespace) -> HybridConfig:
    """Preset, then ``--config`` file, then flags."""
    values = dict(PRESETS[args.preset])
    if args.config:
        values.update(HybridConfig.load(args.config).to_dict())
    values.update({k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None})
    return HybridConfig.from_dict(values)


def cmd_train(args) -> int:
    from lab import report
    from lab.trainer import HybridTrainer

    out = Path(args.out)
    if args.resume and (out / "checkpoints").is_dir():
        given = [k[4:] for k, v in vars(args).items() if k.startswith("cfg_") and v is not None]
        if given or args.config:
            print(f"error: --resume continues with the run's saved config; drop "
                  f"{', '.join('--' + g.replace('_', '-') for g in given) or '--config'} "
                  f"or start a new --out", file=sys.stderr)
            return 2
        trainer = HybridTrainer.resume(out)
        print(f"resumed {out} at step {trainer.step_count}")
    else:
        if args.resume:
            print(f"no checkpoint in {out}: starting a new run")
        elif (out / "checkpoints").is_dir():
            print(f"error: {out} already holds a run; pass --resume to continue it, "
                  f"or choose another --out", file=sys.stderr)
            return 2
        trainer = HybridTrainer(build_config(args))
    remaining = max(0, args.steps - trainer.step_count)
    trainer.run(remaining, out_dir=out)
    report.write_run_outputs(trainer, out)
    print(f"outputs written to {out.resolve()}")
    return 0


def cmd_sample(args) -> int:
    from lab import report

    for prompt, completion in report.sample_from_run(Path(args.run), args.prompt, args.n,
                                                     args.max_new_tokens):
        print(f"--- {prompt.strip()}\n{completion}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a generator; writes history, checkpoints, plots")
    train.add_argument("--out", required=True, help="run folder")
    train.add_argument("--steps", type=int, default=50, help="total steps (default 50)")
    train.add_argument("--config", help="JSON or YAML config file")
    train.add_argument("--preset", default="default", choices=sorted(PRESETS))
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    add_config_flags(train)

    sample = sub.add_parser("sample", help="generate from a saved run's generator")
    sample.add_argument("--run", required=True, help="run folder or checkpoint folder")
    sample.add_argument("--prompt", action="append", help="instruction (repeatable); "
                        "default: held-out prompts")
    sample.add_argument("--n", type=int, default=3, help="held-out prompts when --prompt is absent")
    sample.add_argument("--max-new-tokens", type=int, default=48)

    from lab.ablation import add_cli

    add_cli(sub)  # eval, ablate
    args = parser.parse_args(argv)
    try:
        handler = {"train": cmd_train, "sample": cmd_sample}.get(args.command) or args.func
        return handler(args) or 0
    except ValueError as err:  # bad input: one clear line, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
