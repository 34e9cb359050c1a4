"""Command line: ``python -m lab train | sample | export | eval | ablate``.

``train``: every :class:`lab.config.HybridConfig` field is a flag (``--lambda-rl 0.3``,
``--lr 1e-4``, ``--chat-template yes``, ``--reward-weights '{"semantic": 1}'``), read by the
field's type (:func:`lab.readers.config_text.coerce`); ``--help`` groups them by the config's
sections. The starting values stack as ``--preset`` < ``--config FILE`` (only the fields the
file names, flat or by section) < flags; the dataset is checked before anything loads. ``--resume``
continues the run in ``--out`` with its saved config, so it takes none of them. Under
``accelerate launch`` (or ``torchrun``) the same command trains data parallel across the
processes (:mod:`lab.runtime.distributed`); only the main one writes the run folder.

``eval`` and ``ablate`` evaluate on the held-out split of the run's own dataset
(:func:`lab.evaluate.heldout`), or on any local JSON/JSONL/CSV file given with ``--data``
(``--columns`` maps its column names onto instruction/input/output).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from lab.config import PRESETS, SECTIONS, HybridConfig
from lab.data import check_source
from lab.readers.config_text import coerce, field_kind, read_file

METAVARS = {"float": "FLOAT", "int": "INT", "bool": "BOOL", "optional str": "NAME", "str": "TEXT",
            "dict": "JSON"}


def _flag_type(name: str):
    """argparse ``type=`` for field ``name``: :func:`lab.readers.config_text.coerce` of the text; a bad value
    is an argparse error naming the flag and the expected type (exit code 2)."""
    def parse(text: str):
        try:
            return coerce(HybridConfig, name, text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = field_kind(HybridConfig, name)
    return parse


def _count(minimum: int):
    """argparse ``type=`` for a whole number >= ``minimum`` (``--steps -1`` is an error, exit code 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}")
        return value

    parse.__name__ = "int"
    return parse


def _columns(text: str) -> dict[str, str]:
    """``--columns``: a JSON (or YAML) mapping of the kit's field to the file's column."""
    import yaml

    try:
        value = yaml.safe_load(text)  # JSON is YAML too
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise argparse.ArgumentTypeError(
            f"expected a JSON mapping such as '{{\"instruction\": \"prompt\", \"output\": \"response\"}}', "
            f"got {text!r}")
    return value


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--field-name`` flag per config field, with the field's help, in one group per
    section (:meth:`lab.config.HybridConfig.sections`); all default to 'not given'."""
    fields = {field.name: field for field in dataclasses.fields(HybridConfig)}
    for section, names in HybridConfig.sections().items():
        group = parser.add_argument_group(f"{section}: {SECTIONS[section]}")
        for name in names:
            field = fields[name]
            default = field.default_factory() if field.default is dataclasses.MISSING else field.default
            text = f"{field.metadata['help']} (default: {json.dumps(default)})"
            group.add_argument(f"--{name.replace('_', '-')}", dest=f"cfg_{name}", type=_flag_type(name), default=None,
                               metavar=METAVARS[field_kind(HybridConfig, name)], help=text.replace("%", "%%"))


def _flags(args: argparse.Namespace) -> dict:
    """The config fields given as flags."""
    return {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None}


def build_config(args: argparse.Namespace) -> HybridConfig:
    """Preset, then the fields the ``--config`` file names, then flags; its dataset checked at
    once (:func:`lab.data.check_source`), before a model loads."""
    values = dict(PRESETS[args.preset or "default"])
    if args.config:
        values.update(read_file(HybridConfig, args.config))
    values.update(_flags(args))
    config = HybridConfig.from_dict(values)
    check_source(config.dataset, config.dataset_columns)
    return config


def cmd_train(args) -> int:
    from lab import checkpoint
    from lab.integrations import export
    from lab.runtime import distributed
    from lab.trainer import HybridTrainer
    from lab.ui import run_outputs

    out = Path(args.out)
    has_run = bool(checkpoint.complete_checkpoints(out))  # a start killed before its first checkpoint is none
    if args.resume:
        given = ([f"--preset {args.preset}"] if args.preset else []) + \
            ([f"--config {args.config}"] if args.config else []) + \
            [f"--{name.replace('_', '-')}" for name in _flags(args)]
        if given:
            print(f"error: --resume continues the run in {out} with its saved config; drop "
                  f"{', '.join(given)}, or start a new run with another --out", file=sys.stderr)
            return 2
        if not has_run:
            print(f"error: no checkpoint in {out} to resume; drop --resume to start a new run there",
                  file=sys.stderr)
            return 2
        trainer = HybridTrainer.resume(out)
        if distributed.is_main():
            print(f"resumed {out} at step {trainer.step_count}")
    else:
        if has_run:
            print(f"error: {out} already holds a run; pass --resume to continue it, "
                  f"or choose another --out", file=sys.stderr)
            return 2
        trainer = HybridTrainer(build_config(args))
    steps = args.steps if args.steps is not None or trainer.config.stream else 50
    if steps is not None and steps < trainer.step_count:
        raise ValueError(f"--steps {steps} is below the {trainer.step_count} steps {out} has done; "
                         f"--steps is the total, so pass --steps {trainer.step_count} or more")
    before = run_outputs.greedy_quality(trainer) if distributed.is_main() else None  # no random draw
    trainer.run(None if steps is None else steps - trainer.step_count, out_dir=out)
    if distributed.is_main():  # several processes (accelerate launch): the others write and print nothing
        run_outputs.write_run_outputs(trainer, out)
        export.write_adapter(out, out / "adapter")  # the generator for plain peft, with its model card
        print("\n".join(run_outputs.what_changed(trainer, before, run_outputs.greedy_quality(trainer))))
        print(f"outputs written to {out.resolve()}")
        if trainer.stop_reason in ("SIGINT", "SIGTERM"):
            print(f"stopped by {trainer.stop_reason} after step {trainer.step_count}, checkpoint saved; resume "
                  f"with: python -m lab train --out {out} --resume" + ("" if steps is None else f" --steps {steps}"))
    distributed.finish()
    return 0


def cmd_export(args) -> int:
    """The run's generator adapter (PEFT format + model card) in ``--out``; merged, pushed."""
    from lab.integrations import export

    out = export.export(Path(args.run), Path(args.out), merge=args.merge, push_to_hub=args.push_to_hub)
    print(f"adapter written to {out.resolve()}" + (f" (merged weights in {out.resolve() / 'merged'})"
                                                   if args.merge else "")
          + (f"; pushed to {args.push_to_hub}" if args.push_to_hub else ""))
    return 0


def cmd_sample(args) -> int:
    from lab.ui import run_outputs

    for prompt, completion in run_outputs.sample_from_run(Path(args.run), args.prompt, args.n,
                                                     args.max_new_tokens):
        print(f"--- {prompt.strip()}\n{completion}\n")
    return 0


def cmd_eval(args) -> int:
    """Per-prompt rows to a CSV (``--out``; with ``--run`` by default ``RUN/eval.csv``), the
    summary to stdout."""
    from lab import checkpoint, evaluate, models

    tokens = {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else {}
    if args.run:
        config = HybridConfig.load(checkpoint.find(Path(args.run)) / "config.json")
        source = args.data or config.dataset
        print(f"evaluating the run {args.run} on {evaluate.describe_source(source, trained_on=config.dataset)}")
        frame = evaluate.evaluate_run(args.run, limit=args.limit, device=args.device, seed=args.seed,
                                      source=source, columns=args.columns, **tokens)
    else:
        config = HybridConfig(model=args.model or "auto", device=args.device)
        source = args.data or config.dataset
        model, tokenizer = models.load(config.model, config.device, config.dtype, verbose=True)
        examples = evaluate.heldout(args.limit, source, columns=args.columns)
        print(f"evaluating {config.model} (untrained) on {evaluate.describe_source(source)}")
        options = {**evaluate.generation_options(config), **tokens}
        frame = evaluate.evaluate_model(model, tokenizer, examples, seed=args.seed or 0, **options)
    out = args.out or (Path(args.run) / "eval.csv" if args.run else None)
    if out:
        frame.to_csv(out, index=False)
        print(f"per-prompt rows written to {out}")
    print(evaluate.summarize(frame).round(4).to_string())
    return 0


def cmd_ablate(args) -> int:
    """``--list`` prints the arms; else runs them (layers of an arm's config: :mod:`lab.experiments.arms`)."""
    from lab.experiments import arms
    from lab.experiments.ablation import run_ablation
    from lab.experiments.settings import ABLATION_PRESETS

    custom = arms.read_arms_file(args.arms_file) if args.arms_file else {}
    if args.list:
        print(arms.listing({**arms.ARMS, **custom}, ABLATION_PRESETS))
        return 0
    if not args.out:
        raise ValueError("ablate needs --out DIR (the report folder), except with --list")
    shortcuts = [(None, k, v) for k, v in (("model", args.model), ("dataset", args.dataset)) if v]
    common, per_arm = arms.split_sets([*args.set, *shortcuts])
    log_file = Path(args.out) / "ablate.log"

    def log(line: str) -> None:  # the report folder keeps what the command printed: times, pace
        print(line, flush=True)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("a", encoding="utf-8") as file:
            file.write(line + "\n")

    run_ablation(args.out, args.preset, arms=args.arms, seeds=args.seeds, steps=args.steps,
                 eval_limit=args.limit, eval_data=args.data, eval_columns=args.columns,
                 custom_arms=custom, arm_sets=per_arm, curve_every=args.curve_every, shard=args.shard, log=log,
                 **common)
    return 0


def _shard(text: str) -> tuple[int, int]:
    """argparse ``type=`` for ``--shard K/N`` (1 <= K <= N)."""
    k, _, n = text.partition("/")
    if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise argparse.ArgumentTypeError(f"expected K/N with 1 <= K <= N (--shard 1/2), got {text!r}")
    return int(k), int(n)


def _arm_set(text: str):
    """``--set``: :func:`lab.experiments.arms.parse_set`; a bad one is an argparse error (exit code 2)."""
    from lab.experiments.arms import parse_set

    try:
        return parse_set(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _data_flags(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--data", metavar="FILE", help="evaluate on this local JSON/JSONL/CSV file "
                        "(all its rows) or source (bundled, alpaca, auto; their held-out split); "
                        f"default: {default}")
    parser.add_argument("--columns", type=_columns, metavar="JSON", help="the file's column names, "
                        "e.g. '{\"instruction\": \"prompt\", \"output\": \"response\"}' (Dolly, OASST)")


def parser() -> argparse.ArgumentParser:
    from lab.experiments.arms import ARMS
    from lab.experiments.settings import ABLATION_PRESETS

    top = argparse.ArgumentParser(prog="python -m lab", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a generator; writes history, checkpoints, plots",
                           description="Train a generator. Every HybridConfig field is a flag, grouped below by "
                           "the config's sections (lab/config.py); starting values: preset < --config file < "
                           "these flags (a file sets only the fields it names).")
    train.add_argument("--out", required=True, help="run folder")
    train.add_argument("--steps", type=_count(1), default=None,
                       help="total steps (default 50; with --stream: run until SIGINT/SIGTERM)")
    train.add_argument("--config", metavar="FILE", help="JSON or YAML file of config fields, "
                       "flat or by section ({sampling: {temperature: 0.8}}); the fields it names override the preset")
    train.add_argument("--preset", choices=sorted(PRESETS), help="starting values (default: "
                       "default): " + "; ".join(f"{k}: {json.dumps(v)}" for k, v in PRESETS.items()))
    train.add_argument("--resume", action="store_true", help="continue the run in --out with its "
                       "saved config (takes no --preset, --config or field flag)")
    add_config_flags(train)
    train.set_defaults(func=cmd_train)

    sample = sub.add_parser("sample", help="generate from a saved run's generator")
    sample.add_argument("--run", required=True, help="run folder or checkpoint folder")
    sample.add_argument("--prompt", action="append", help="instruction (repeatable); "
                        "default: held-out prompts of the run's dataset")
    sample.add_argument("--n", type=_count(1), default=3, help="held-out prompts when --prompt is absent")
    sample.add_argument("--max-new-tokens", type=_count(1), default=48)
    sample.set_defaults(func=cmd_sample)

    exp = sub.add_parser("export", help="a run's generator as a PEFT adapter with a model card (for plain peft)")
    exp.add_argument("run", help="run or checkpoint folder")
    exp.add_argument("--out", required=True, help="folder for the adapter (replaced if it exists)")
    exp.add_argument("--merge", action="store_true", help="also OUT/merged/: full weights for plain transformers")
    exp.add_argument("--push-to-hub", metavar="USER/NAME", help="upload the folder to this Hub repo (needs the Hub "
                     "and a login: huggingface-cli login)")
    exp.set_defaults(func=cmd_export)

    ev = sub.add_parser("eval", help="held-out metrics of a saved run or an untrained model")
    which = ev.add_mutually_exclusive_group()
    which.add_argument("--run", help="run or checkpoint folder")
    which.add_argument("--model", help="an untrained model: auto (default), gpt2, smollm2-135m ...")
    _data_flags(ev, "the held-out split of the run's dataset (bundled for --model)")
    ev.add_argument("--limit", type=_count(1), help="first N prompts (default: all)")
    ev.add_argument("--seed", type=_count(0), help="sampling seed (default: the run's seed, else 0)")
    ev.add_argument("--max-new-tokens", type=_count(1), help="default: the run's config (32 for --model)")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda ... (default auto)")
    ev.add_argument("--out", help="CSV of per-prompt rows (default: RUN/eval.csv with --run)")
    ev.set_defaults(func=cmd_eval)

    ab = sub.add_parser("ablate", help="arms x seeds on one budget; writes results, plots, report.md")
    ab.add_argument("--out", help="report folder (an existing one is continued); required unless --list")
    ab.add_argument("--preset", default="quick", choices=sorted(ABLATION_PRESETS))
    ab.add_argument("--seeds", type=_count(1), help="number of seeds, 0..N-1 (quick 2, full 5)")
    ab.add_argument("--steps", type=_count(1), help="training steps per arm (quick 4, full 100)")
    ab.add_argument("--arms", nargs="+", metavar="ARM", help="arms to run: built-in (see --list), from "
                    "--arms-file, or all (every one); default: the preset's arms (quick: "
                    f"{', '.join(ABLATION_PRESETS['quick']['arms'])}; full: all {len(ARMS)} built-in) "
                    "plus the file's")
    ab.add_argument("--list", action="store_true", help="print every arm (with --arms-file's), its "
                    "config changes and description, and exit")
    ab.add_argument("--arms-file", metavar="FILE", help="YAML/JSON of custom arms: name: {description: "
                    "TEXT, field: value, ...}; validated before anything runs")
    ab.add_argument("--set", action="append", default=[], type=_arm_set, metavar="KEY=VALUE",
                    help="config field for every arm (repeatable), read by its type: --set max_new_tokens=4; "
                    "ARM.KEY=VALUE changes one arm (--set larger_d.discriminator_model=tiny-gpt2). Layers: "
                    "preset < --set KEY < arm < --set ARM.KEY; a --set KEY that an arm of the run changes "
                    "is an error")
    ab.add_argument("--limit", type=_count(1), help="prompts to evaluate (quick 12, full all)")
    ab.add_argument("--shard", type=_shard, metavar="K/N", help="run only seeds s with s %% N == K-1: start N "
                    "processes with --shard 1/N ... N/N and the same --out, one a core; the last to end "
                    "writes the whole report")
    ab.add_argument("--curve-every", type=_count(0), metavar="N", help="also evaluate each trained arm's greedy "
                    "answers every N steps: learning curves (default: the preset's; calibrate 10, others 0)")
    ab.add_argument("--model", help="the generator for every arm (auto, gpt2, tiny-gpt2 ...): --set model=NAME")
    ab.add_argument("--dataset", help="training data (config field dataset; default bundled)")
    _data_flags(ab, "the held-out split of the training dataset")
    ab.set_defaults(func=cmd_ablate)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except ValueError as err:  # bad input: one clear line, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    except FloatingPointError as err:  # a run that kept producing NaN/inf: its last good state is saved
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # a file that cannot be read or written (full disk, no permission): one line
        print(f"error: {err.strerror if err.strerror and err.filename is None else err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
