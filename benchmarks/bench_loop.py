"""Benchmark: the sketch's naive loop, TRL's GRPOTrainer and the kit's batched step.

One run, same model (SmolLM2-135M by default), same response length (32 new tokens),
same CPU. Four sides, each in its own subprocess (this script with ``--side SIDE``), so
that each side's peak RSS is its own; the parent collects one JSON line from each child,
prints a comparison table and ends with ONE JSON line (the last line of stdout):

- ``naive``: the sketch's per-sample loop (``naive_sketch.py``), 1 sample a step;
- ``trl``: TRL's ``GRPOTrainer`` on the kit's model, LoRA, prompts, reward and sampling,
  B x k samples a step, beta 0 (``trl_side.py``; needs the ``[trl]`` extra);
- ``kit``: ``HybridTrainer`` with the default config, the real step: SFT + RL + the
  discriminator trained and read as the critic baseline (its warm start is part of the build),
  B x k a step;
- ``kit-fast``: the D-free hybrid (``--preset fast``: EMA baseline, no discriminator), B x k a step;
- ``kit-rl``: mode ``rl`` (no SFT term), D-free as ``kit-fast``, B x k a step.

Per side: build the models, ``--warmup`` untimed steps, then timed steps (wall clock
around each ``step()``; TRL: between two step ends inside ``trainer.train()``):

- samples/s: samples per timed second;
- seconds per step, and the mean time per phase (sample, reward, disc, gen);
- peak RSS: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of that side's process;
- resident parameters: every tensor of every resident model, shared tensors once
  (naive: generator + discriminator + frozen base + MiniLM; kit: one backbone + both
  LoRA adapters + the discriminator head + MiniLM; TRL: the policy backbone + LoRA + MiniLM).

    python benchmarks/bench_loop.py                            # all five sides
    python benchmarks/bench_loop.py --steps 2                  # a quick check (2 timed steps a side)
    python benchmarks/bench_loop.py --sides kit,trl            # a subset
    python benchmarks/bench_loop.py --sweep                    # + the kit at 8, 16, 32 samples a step

Torch's thread count is left at its default. Seeds are fixed (``--seed``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a clone, no install needed
sys.path.insert(0, str(Path(__file__).resolve().parent))

SWEEP_SAMPLES = (8, 16, 32)  # B x k samples a step for --sweep (k fixed, B varies)
SIDES = ("naive", "trl", "kit", "kit-fast", "kit-rl")  # run (and shown) in this order
# acceptance targets (issue 22): the default step vs naive samples/s and resident parameters; each kit side vs TRL
TARGET_SPEEDUP, TARGET_PARAM_RATIO = 5.0, 0.4
TARGET_VS_TRL, TARGET_FAST_VS_TRL, TARGET_RL_VS_TRL = 1.5, 1.8, 2.0
PHASES = ("time_sample", "time_reward", "time_disc", "time_gen")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def peak_rss_gib() -> float:
    """Peak resident set size of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


def resident_modules(root, depth: int = 6) -> list:
    """Every ``torch.nn.Module`` reachable from ``root`` through attributes, dicts and lists.

    Descends into modules' plain attributes too (the kit's discriminator keeps its shared
    backbone outside its registered submodules) and into the kit's own objects (rewards).
    """
    import torch

    found, seen = [], set()

    def walk(obj, level):
        if id(obj) in seen or level < 0:
            return
        seen.add(id(obj))
        if isinstance(obj, torch.nn.Module):
            found.append(obj)
            attrs = {k: v for k, v in vars(obj).items() if not k.startswith("_")}
        elif isinstance(obj, dict):
            attrs = obj
        elif isinstance(obj, (list, tuple)):
            attrs = dict(enumerate(obj))
        elif type(obj).__module__.startswith(("lab.", "naive_sketch")) and hasattr(obj, "__dict__"):
            attrs = vars(obj)
        else:
            return
        for value in list(attrs.values()):
            walk(value, level - 1)

    walk(root, depth)
    return found


def cpu_seconds() -> float:
    """User + system CPU seconds used by this process so far (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def summarise(rows: list[dict], walls: list[float], samples_per_step: int, cpu_s: float) -> dict:
    """Timing summary of the timed steps (``cpu_s``: CPU seconds they used)."""
    total = sum(walls)
    return dict(
        steps=len(walls), samples_per_step=samples_per_step,
        samples_per_s=samples_per_step * len(walls) / total,
        s_per_step=total / len(walls), steps_per_s=len(walls) / total,
        cpu_s_per_step=cpu_s / len(walls), cpu_s_per_sample=cpu_s / (len(walls) * samples_per_step),
        step_walls=[round(w, 4) for w in walls],
        time_split={p[5:]: sum(r.get(p, 0.0) for r in rows) / len(rows) for p in PHASES},
        response_tokens=sum(float(r.get("response_len", float("nan"))) for r in rows) / len(rows),
    )


def kit_runner(args, side: str):
    """A ``HybridTrainer`` of preset ``bench`` for ``side`` (``kit``: the defaults; ``kit-fast``:
    preset ``fast``'s D-free changes; ``kit-rl``: those in mode ``rl``), and its label."""
    from lab.config import PRESETS, preset
    from lab.data import load_examples
    from lab.trainer import HybridTrainer

    changes = {} if side == "kit" else {**PRESETS["fast"], "mode": "rl" if side == "kit-rl" else "hybrid"}
    config = preset("bench", model=args.model, device=args.device, seed=args.seed, max_new_tokens=args.max_new_tokens,
                    prompts_per_step=args.kit_batch, samples_per_prompt=args.kit_k, **changes)
    runner = HybridTrainer(config, examples=load_examples("bundled", "train"), verbose=False)
    name = {"kit": "kit default", "kit-fast": "kit D-free", "kit-rl": "kit rl-only"}[side]
    return runner, config.samples_per_step, f"{name} B={config.prompts_per_step} x k={config.samples_per_prompt}"


def time_steps(runner, label: str, warmup: int, steps: int) -> tuple[list[dict], list[float], float]:
    """``warmup`` untimed then ``steps`` timed ``runner.step()`` calls: (rows, walls, CPU seconds)."""
    for i in range(warmup):
        row = runner.step()
        log(f"[{label}] warm-up {i + 1}: {row['step_time']:.2f} s")
    rows, walls = [], []
    cpu0 = cpu_seconds()
    for i in range(steps):
        t = time.perf_counter()
        row = runner.step()
        walls.append(time.perf_counter() - t)
        rows.append(row)
        log(f"[{label}] step {i + 1}/{steps}: {walls[-1]:.2f} s "
            + " ".join(f"{p[5:]}={row.get(p, 0.0):.2f}" for p in PHASES))
    return rows, walls, cpu_seconds() - cpu0


def time_trl(runner, label: str, warmup: int) -> tuple[list[dict], list[float], float]:
    """TRL trains all its steps in one ``train()`` call; its clock callback times each step."""
    rows = runner.run()[warmup:]
    for i, row in enumerate(rows):
        log(f"[{label}] step {i + 1}/{len(rows)}: {row['step_time']:.2f} s "
            + " ".join(f"{p[5:]}={row.get(p, 0.0):.2f}" for p in PHASES))
    return rows, [r["step_time"] for r in rows], sum(r["cpu_s"] for r in rows)


def run_side(args) -> dict:
    """Build one side, warm it up, time it; returns its measurements (this process only)."""
    import torch

    from naive_sketch import NaiveSketch, resident_parameters

    t0 = time.perf_counter()
    if args.side == "naive":
        runner = NaiveSketch(args.model, max_new_tokens=args.max_new_tokens, seed=args.seed, device=args.device)
        samples_per_step, steps, label = 1, args.naive_steps, "naive sketch"
    elif args.side == "trl":
        from trl_side import TRLSide

        runner = TRLSide(args.model, args.max_new_tokens, args.seed, prompts_per_step=args.kit_batch,
                         samples_per_prompt=args.kit_k, total_steps=args.warmup + args.trl_steps,
                         reward_base=args.trl_reward_base, device=args.device)
        samples_per_step, steps = args.kit_batch * args.kit_k, args.trl_steps
        label = f"TRL GRPO {args.kit_batch} x {args.kit_k}"
    else:
        runner, samples_per_step, label = kit_runner(args, args.side)
        steps = args.kit_steps
    build_s = time.perf_counter() - t0
    log(f"[{label}] built in {build_s:.1f} s; {args.warmup} warm-up + {steps} timed steps")

    if args.side == "trl":
        rows, walls, cpu_s = time_trl(runner, label, args.warmup)
    else:
        rows, walls, cpu_s = time_steps(runner, label, args.warmup, steps)

    if args.side in ("naive", "trl"):
        params = runner.resident_parameters()
    else:
        from lab.models import load_embedder

        # after the steps, so that lazily loaded parts (the MiniLM embedder) are resident;
        # load_embedder is cached per process, so this is the instance the reward uses.
        params = resident_parameters(*resident_modules(runner), load_embedder("auto"))
    from lab.models import pick_dtype

    device = torch.device(args.device)
    dtype = "float32" if args.side == "naive" else str(pick_dtype(device)).removeprefix("torch.")
    gpu = dict(gpu=torch.cuda.get_device_name(device), peak_gpu_gib=torch.cuda.max_memory_allocated(device) / 2**30) \
        if device.type == "cuda" else {}
    return dict(side=args.side, label=label, build_s=build_s, warmup=args.warmup, dtype=dtype, **gpu,
                peak_rss_gib=peak_rss_gib(), resident_params=params,
                torch_threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
                torch_version=torch.__version__, loadavg_end=os.getloadavg()[0],
                **summarise(rows, walls, samples_per_step, cpu_s))


def child(args, side: str, kit_batch: int | None = None, kit_k: int | None = None, rnd: int = 0) -> dict:
    """Run one side in a fresh process, round ``rnd`` of ``args.rounds`` (its share of the timed
    steps, seed ``args.seed + rnd``); returns its JSON (last stdout line)."""
    share = {name: str(-(-getattr(args, f"{name}_steps") // args.rounds)) for name in ("kit", "naive", "trl")}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--side", side,
           "--model", args.model, "--max-new-tokens", str(args.max_new_tokens), "--seed", str(args.seed + rnd),
           "--warmup", str(args.warmup), "--kit-steps", share["kit"],
           "--naive-steps", share["naive"], "--trl-steps", share["trl"],
           "--trl-reward-base", args.trl_reward_base, "--device", args.device,
           "--kit-batch", str(kit_batch or args.kit_batch), "--kit-k", str(kit_k or args.kit_k)]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # stderr (progress) passes through
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        hint = ' (is TRL installed? pip install -e ".[trl]")' if side == "trl" else ""
        sys.exit(f"bench_loop: the {side} side failed (exit code {done.returncode}){hint}; see its output above")
    return json.loads(lines[-1])


def merge(runs: list[dict]) -> dict:
    """One side's measurements over its rounds: rates from the summed steps and wall time, means
    weighted by steps, peaks as maxima; ``round_samples_per_s`` keeps each round's rate."""
    first, steps = runs[0], sum(r["steps"] for r in runs)
    walls = [w for r in runs for w in r["step_walls"]]

    def mean(key):
        return sum(r[key] * r["steps"] for r in runs) / steps

    merged = dict(first, steps=steps, step_walls=walls, samples_per_s=first["samples_per_step"] * steps / sum(walls),
                  s_per_step=sum(walls) / steps, steps_per_s=steps / sum(walls), cpu_s_per_step=mean("cpu_s_per_step"),
                  cpu_s_per_sample=mean("cpu_s_per_sample"), response_tokens=mean("response_tokens"),
                  time_split={p: sum(r["time_split"][p] * r["steps"] for r in runs) / steps for p in first["time_split"]},
                  peak_rss_gib=max(r["peak_rss_gib"] for r in runs), build_s=sum(r["build_s"] for r in runs) / len(runs),
                  loadavg_end=max(r["loadavg_end"] for r in runs), rounds=len(runs),
                  round_samples_per_s=[round(r["samples_per_s"], 4) for r in runs])
    if "peak_gpu_gib" in first:
        merged["peak_gpu_gib"] = max(r["peak_gpu_gib"] for r in runs)
    return merged


def fmt_params(n: int) -> str:
    return f"{n / 1e6:.1f} M"


def ratio_line(name: str, value: float, target: float, higher: bool = True) -> tuple[str, bool]:
    met = value >= target if higher else value <= target
    return (f"{name}: {value:.2f}{'x' if higher else ''}   (target {'>=' if higher else '<='} {target:g}"
            f"{'x' if higher else ''}: {'met' if met else 'NOT met'})"), met


def report(sides: dict[str, dict], sweep: list[dict]) -> dict:
    """Print the comparison table; return the summary (the final JSON line). ``sides``: side
    name -> its measurements, for the sides that ran; ratios need both of their sides."""
    shown = [sides[name] for name in SIDES if name in sides]
    table = [
        ("samples / step", lambda r: r["samples_per_step"]),
        ("timed steps", lambda r: r["steps"]),
        ("seconds / step", lambda r: f"{r['s_per_step']:.2f}"),
        ("steps / s", lambda r: f"{r['steps_per_s']:.3f}"),
        ("samples / s", lambda r: f"{r['samples_per_s']:.3f}"),
        ("CPU seconds / sample", lambda r: f"{r['cpu_s_per_sample']:.2f}"),
        ("response tokens (mean)", lambda r: f"{r['response_tokens']:.1f}"),
        ("peak RSS (GiB)", lambda r: f"{r['peak_rss_gib']:.2f}"),
        ("resident parameters", lambda r: fmt_params(r["resident_params"])),
        ("build time (s)", lambda r: f"{r['build_s']:.1f}"),
    ] + [(f"  {phase} (s / step)", lambda r, phase=phase: f"{r['time_split'][phase]:.3f}")
         for phase in ("sample", "reward", "disc", "gen")]
    print()
    print(f"{'':<26}" + "".join(f"{r['label']:<22}" for r in shown))
    print("-" * (26 + 22 * len(shown)))
    for name, cell in table:
        print(f"{name:<26}" + "".join(f"{str(cell(r)):<22}" for r in shown))

    naive, trl, kit, kit_fast, kit_rl = (sides.get(name) for name in SIDES)
    summary, lines = {}, []
    if naive and kit:
        speedup = kit["samples_per_s"] / naive["samples_per_s"]
        ratio = kit["resident_params"] / naive["resident_params"]
        line, summary["speedup_target_met"] = ratio_line("speedup (samples/s, kit / naive)", speedup, TARGET_SPEEDUP)
        lines.append(line)
        line, summary["param_target_met"] = ratio_line("resident parameters (kit / naive)", ratio,
                                                       TARGET_PARAM_RATIO, higher=False)
        lines.append(line)
        summary.update(speedup_samples_per_s=round(speedup, 4), resident_param_ratio=round(ratio, 4),
                       cpu_time_ratio=round(naive["cpu_s_per_sample"] / kit["cpu_s_per_sample"], 4))
        lines.append(f"CPU-time ratio (naive / kit CPU seconds per sample): {summary['cpu_time_ratio']:.2f}x  "
                     "(less sensitive to a busy machine)")
    for side, name, prefix in ((kit_fast, "D-free", "fast_"), (kit_rl, "rl-only", "rl_")):
        if naive and side:
            summary[f"{prefix}speedup_samples_per_s"] = round(side["samples_per_s"] / naive["samples_per_s"], 4)
            lines.append(f"speedup (samples/s, kit {name} / naive): {summary[f'{prefix}speedup_samples_per_s']:.2f}x")
    for side, name, prefix, target in ((kit, "default", "", TARGET_VS_TRL), (kit_fast, "D-free", "fast_",
                                       TARGET_FAST_VS_TRL), (kit_rl, "rl-only", "rl_", TARGET_RL_VS_TRL)):
        if trl and side:
            value = side["samples_per_s"] / trl["samples_per_s"]
            line, summary[f"{prefix}vs_trl_target_met"] = ratio_line(
                f"speedup (samples/s, kit {name} / TRL GRPO)", value, target)
            lines.append(line)
            summary[f"{prefix}speedup_vs_trl"] = round(value, 4)
    if trl and kit:
        summary["resident_param_ratio_vs_trl"] = round(kit["resident_params"] / trl["resident_params"], 4)
        lines.append(f"resident parameters (kit / TRL): {summary['resident_param_ratio_vs_trl']:.3f}")
    for r in shown:
        if r["side"] != "naive":
            total = sum(r["time_split"].values())
            lines.append(f"{r['label']} time split: " + ", ".join(
                f"{p} {t:.2f} s ({100 * t / total:.0f}%)" for p, t in r["time_split"].items()))
    print()
    print("\n".join(lines))

    keep = ("samples_per_s", "s_per_step", "steps", "samples_per_step", "peak_rss_gib")
    if kit:
        best = max([kit, *sweep], key=lambda r: r["samples_per_s"])
        summary["kit_best"] = {"label": best["label"], **{k: round(best[k], 4) for k in keep}}
        if naive:
            summary["kit_best"]["speedup_samples_per_s"] = round(best["samples_per_s"] / naive["samples_per_s"], 4)
        summary["kit_sweep"] = [{"label": r["label"], **{k: round(r[k], 4) for k in keep}} for r in sweep]
        if sweep:
            print()
            print(f"{'kit sweep':<22}{'samples/step':<14}{'s/step':<10}{'samples/s':<12}{'vs naive':<10}"
                  f"{'peak RSS':<10}")
            for r in sorted([kit, *sweep], key=lambda r: r["samples_per_step"]):
                vs = f"{r['samples_per_s'] / naive['samples_per_s']:.2f}" if naive else "-"
                print(f"{r['label']:<22}{r['samples_per_step']:<14}{r['s_per_step']:<10.2f}"
                      f"{r['samples_per_s']:<12.3f}{vs:<10}{r['peak_rss_gib']:<10.2f}")
            print(f"kit at its best batch size: {best['label']}, {best['samples_per_s']:.3f} samples/s")

    for r in shown:  # per side: naive_*, trl_*, kit_*, kit_rl_*
        p = r["side"].replace("-", "_")
        summary.update({
            f"{p}_samples_per_s": round(r["samples_per_s"], 4), f"{p}_s_per_step": round(r["s_per_step"], 4),
            f"{p}_steps_per_s": round(r["steps_per_s"], 4), f"{p}_cpu_s_per_sample": round(r["cpu_s_per_sample"], 4),
            f"{p}_peak_rss_gib": round(r["peak_rss_gib"], 3), f"{p}_resident_params": r["resident_params"],
            f"{p}_samples_per_step": r["samples_per_step"], f"{p}_dtype": r["dtype"],
            f"{p}_time_split": {k: round(v, 4) for k, v in r["time_split"].items()},
            f"{p}_round_samples_per_s": r["round_samples_per_s"],
        })
        if "peak_gpu_gib" in r:
            summary[f"{p}_peak_gpu_gib"] = round(r["peak_gpu_gib"], 3)
    first = shown[0]
    print(f"\nmachine: {os.cpu_count()} CPUs ({platform.machine()}), torch {first['torch_version']} "
          f"with {first['torch_threads']} threads; weights: "
          + ", ".join(f"{r['side']} {r['dtype']}" for r in shown) + "; 1-min load average at the end of each side: "
          + ", ".join(f"{r['side']} {r['loadavg_end']:.1f}" for r in shown))
    if "gpu" in first:
        print(f"device: {first['gpu']}; peak GPU memory: "
              + ", ".join(f"{r['side']} {r['peak_gpu_gib']:.2f} GiB" for r in shown))
        summary["gpu"] = first["gpu"]
    print(f"samples/s in each of the {first['rounds']} rounds: "
          + "; ".join(f"{r['side']} " + ", ".join(f"{v:.3f}" for v in r["round_samples_per_s"]) for r in shown))
    summary.update(rounds=first["rounds"])
    summary.update(sides=[r["side"] for r in shown], torch_threads=first["torch_threads"], machine=os.cpu_count(),
                   loadavg_end={r["side"]: r["loadavg_end"] for r in shown})
    return summary


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="The sketch's naive loop, TRL's GRPOTrainer and the kit's steps (the default with D, D-free, rl-only): "
                    "samples/s, peak RSS, resident parameters, time per phase. Each side runs in its own "
                    "subprocess; the last stdout line is one JSON summary.")
    parser.add_argument("--model", default="smollm2-135m", help="model of every side (default smollm2-135m)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="response length cap, every side (default 32)")
    parser.add_argument("--sides", default=",".join(SIDES),
                        help=f"comma-separated sides to run, of {', '.join(SIDES)} (default: all)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up steps per side and round (default 1)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="the sides take turns this many times, each round a fresh process per side with its "
                             "share of the timed steps and seed + round (default 3: a shared machine's speed "
                             "drifts over minutes; turns spread the drift over all sides)")
    parser.add_argument("--steps", type=int, help="timed steps of every side (sets the three options below)")
    parser.add_argument("--naive-steps", type=int, default=20, help="timed steps of the naive loop (default 20)")
    parser.add_argument("--kit-steps", type=int, default=8, help="timed steps of each kit side (default 8)")
    parser.add_argument("--trl-steps", type=int, default=8, help="timed steps of TRL's GRPOTrainer (default 8)")
    parser.add_argument("--kit-batch", type=int, default=4,
                        help="prompts per step B of the kit and TRL sides (default 4: preset 'bench')")
    parser.add_argument("--kit-k", type=int, default=2,
                        help="samples per prompt k of the kit and TRL sides (default 2: preset 'bench')")
    parser.add_argument("--trl-reward-base", choices=("shared", "copy"), default="shared",
                        help="TRL side's perplexity reward: the policy with adapters off, as the kit does "
                             "(shared, default), or its own frozen copy of the base LM (copy)")
    parser.add_argument("--sweep", action="store_true",
                        help=f"also run the kit at B x k in {SWEEP_SAMPLES} samples a step (k fixed, B varies) "
                             "and report its best batch size")
    parser.add_argument("--seed", type=int, default=0, help="seed of every side (default 0)")
    parser.add_argument("--device", default="cpu",
                        help="device of every side (default cpu, the issue's machine type; cuda: the GPU path)")
    parser.add_argument("--json-out", type=Path, help="also write the final JSON summary to this file")
    parser.add_argument("--side", choices=SIDES, help="internal: run only this side in this process and print its JSON")
    args = parser.parse_args(argv)
    if args.steps is not None:
        args.naive_steps = args.kit_steps = args.trl_steps = args.steps
    args.sides = [name.strip() for name in args.sides.split(",") if name.strip()]
    unknown = [name for name in args.sides if name not in SIDES]
    if unknown or not args.sides:
        parser.error(f"--sides: unknown or no side {unknown}; choose from {', '.join(SIDES)}")
    for name in ("max_new_tokens", "naive_steps", "kit_steps", "trl_steps", "kit_batch", "kit_k", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.kit_k < 2 and "trl" in args.sides:
        parser.error("--kit-k must be >= 2 with the trl side (GRPO needs 2 generations a prompt)")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.side:
        print(json.dumps(run_side(args)), flush=True)
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    steps = {"naive": args.naive_steps, "trl": args.trl_steps, "kit": args.kit_steps, "kit-fast": args.kit_steps,
             "kit-rl": args.kit_steps}
    log(f"bench_loop: {args.model}, {args.max_new_tokens} new tokens, seed {args.seed}, "
        f"B={args.kit_batch} x k={args.kit_k}, {args.rounds} rounds; " + ", ".join(
            f"{name} {args.warmup}+{steps[name]} steps" for name in SIDES if name in args.sides))
    runs = {name: [] for name in SIDES if name in args.sides}
    for rnd in range(args.rounds):  # the sides take turns, so that a machine's drift falls on all of them
        for name in runs:
            runs[name].append(child(args, name, rnd=rnd))
    sides = {name: merge(results) for name, results in runs.items()}
    sweep = []
    if args.sweep and "kit" in sides:
        main_samples = args.kit_batch * args.kit_k
        for samples in SWEEP_SAMPLES:
            if samples != main_samples and samples % args.kit_k == 0:
                sweep.append(merge([child(args, "kit", kit_batch=samples // args.kit_k, kit_k=args.kit_k, rnd=rnd)
                                    for rnd in range(args.rounds)]))
    summary = report(sides, sweep)
    if args.json_out:
        args.json_out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
