"""Benchmark: the sketch's naive per-sample loop vs the kit's batched hybrid step.

One run, same model (SmolLM2-135M by default), same response length (32 new tokens),
same CPU. Each side runs in its own subprocess (this script with ``--side naive|kit``),
so that each side's peak RSS is its own; the parent collects one JSON line from each
child, prints a comparison table and ends with ONE JSON line (the last line of stdout).

Per side: build the models, ``--warmup`` untimed steps, then timed steps (wall clock
around each ``step()``):

- samples/s: samples per timed second (naive: 1 a step; kit: B * k a step);
- seconds per step, and the mean time per phase (sample, reward, disc, gen);
- peak RSS: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of that side's process;
- resident parameters: every tensor of every resident model, shared tensors once
  (naive: generator + discriminator + frozen base + MiniLM; kit: one backbone + both
  LoRA adapters + the discriminator head + MiniLM).

    python benchmarks/bench_loop.py                            # the default comparison
    python benchmarks/bench_loop.py --kit-steps 2 --naive-steps 3   # a quick check
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
TARGET_SPEEDUP, TARGET_PARAM_RATIO = 3.0, 0.5  # acceptance targets (kit vs naive)
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
        time_split={p[5:]: sum(r[p] for r in rows) / len(rows) for p in PHASES},
        response_tokens=sum(float(r.get("response_len", float("nan"))) for r in rows) / len(rows),
    )


def run_side(args) -> dict:
    """Build one side, warm it up, time it; returns its measurements (this process only)."""
    import torch

    from lab.data import load_examples
    from naive_sketch import NaiveSketch, resident_parameters

    t0 = time.perf_counter()
    if args.side == "naive":
        runner = NaiveSketch(args.model, max_new_tokens=args.max_new_tokens, seed=args.seed)
        samples_per_step, steps, label = 1, args.naive_steps, "naive sketch"
    else:
        from lab.config import preset
        from lab.trainer import HybridTrainer

        config = preset("bench", model=args.model, device="cpu", mode="hybrid", seed=args.seed,
                        max_new_tokens=args.max_new_tokens, prompts_per_step=args.kit_batch,
                        samples_per_prompt=args.kit_k)
        runner = HybridTrainer(config, examples=load_examples("bundled", "train"), verbose=False)
        samples_per_step, steps = config.samples_per_step, args.kit_steps
        label = f"kit B={config.prompts_per_step} x k={config.samples_per_prompt}"
    build_s = time.perf_counter() - t0
    log(f"[{label}] built in {build_s:.1f} s; {args.warmup} warm-up + {steps} timed steps")

    for i in range(args.warmup):
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
            + " ".join(f"{p[5:]}={row[p]:.2f}" for p in PHASES))

    if args.side == "naive":
        params = runner.resident_parameters()
    else:
        from lab.models import load_embedder

        # after the steps, so that lazily loaded parts (the MiniLM embedder) are resident;
        # load_embedder is cached per process, so this is the instance the reward uses.
        params = resident_parameters(*resident_modules(runner), load_embedder("auto"))
    return dict(side=args.side, label=label, build_s=build_s, warmup=args.warmup,
                peak_rss_gib=peak_rss_gib(), resident_params=params,
                torch_threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
                torch_version=torch.__version__, loadavg_end=os.getloadavg()[0],
                **summarise(rows, walls, samples_per_step, cpu_seconds() - cpu0))


def child(args, side: str, kit_batch: int | None = None, kit_k: int | None = None) -> dict:
    """Run one side in a fresh process; returns its JSON (last stdout line)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--side", side,
           "--model", args.model, "--max-new-tokens", str(args.max_new_tokens), "--seed", str(args.seed),
           "--warmup", str(args.warmup), "--kit-steps", str(args.kit_steps),
           "--naive-steps", str(args.naive_steps),
           "--kit-batch", str(kit_batch or args.kit_batch), "--kit-k", str(kit_k or args.kit_k)]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # stderr (progress) passes through
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        sys.exit(f"bench_loop: the {side} side failed (exit code {done.returncode}); see its output above")
    return json.loads(lines[-1])


def fmt_params(n: int) -> str:
    return f"{n / 1e6:.1f} M"


def report(naive: dict, kit: dict, sweep: list[dict]) -> dict:
    """Print the comparison table; return the summary (the final JSON line)."""
    cols = [("", 28), ("naive sketch", 16), (kit["label"], 22)]
    lines = [
        ("samples / step", naive["samples_per_step"], kit["samples_per_step"]),
        ("timed steps", naive["steps"], kit["steps"]),
        ("seconds / step", f"{naive['s_per_step']:.2f}", f"{kit['s_per_step']:.2f}"),
        ("steps / s", f"{naive['steps_per_s']:.3f}", f"{kit['steps_per_s']:.3f}"),
        ("samples / s", f"{naive['samples_per_s']:.3f}", f"{kit['samples_per_s']:.3f}"),
        ("CPU seconds / sample", f"{naive['cpu_s_per_sample']:.2f}", f"{kit['cpu_s_per_sample']:.2f}"),
        ("response tokens (mean)", f"{naive['response_tokens']:.1f}", f"{kit['response_tokens']:.1f}"),
        ("peak RSS (GiB)", f"{naive['peak_rss_gib']:.2f}", f"{kit['peak_rss_gib']:.2f}"),
        ("resident parameters", fmt_params(naive["resident_params"]), fmt_params(kit["resident_params"])),
        ("build time (s)", f"{naive['build_s']:.1f}", f"{kit['build_s']:.1f}"),
    ] + [(f"  {phase} (s / step)", f"{naive['time_split'][phase]:.3f}", f"{kit['time_split'][phase]:.3f}")
         for phase in ("sample", "reward", "disc", "gen")]
    print()
    print("".join(f"{name:<{w}}" for name, w in cols))
    print("-" * sum(w for _, w in cols))
    for name, a, b in lines:
        print(f"{name:<28}{str(a):<16}{str(b):<22}")

    speedup = kit["samples_per_s"] / naive["samples_per_s"]
    ratio = kit["resident_params"] / naive["resident_params"]
    step_total = sum(kit["time_split"].values())
    print()
    print(f"speedup (samples/s, kit / naive): {speedup:.2f}x   (target >= {TARGET_SPEEDUP:g}x: "
          f"{'met' if speedup >= TARGET_SPEEDUP else 'NOT met'})")
    print(f"resident parameters (kit / naive): {ratio:.3f}   (target <= {TARGET_PARAM_RATIO:g}: "
          f"{'met' if ratio <= TARGET_PARAM_RATIO else 'NOT met'})")
    print(f"CPU-time ratio (naive / kit CPU seconds per sample): "
          f"{naive['cpu_s_per_sample'] / kit['cpu_s_per_sample']:.2f}x  (less sensitive to a busy machine)")
    print("kit time split: " + ", ".join(
        f"{p} {t:.2f} s ({100 * t / step_total:.0f}%)" for p, t in kit["time_split"].items()))

    best = max([kit, *sweep], key=lambda r: r["samples_per_s"])
    if sweep:
        print()
        print(f"{'kit sweep':<22}{'samples/step':<14}{'s/step':<10}{'samples/s':<12}{'vs naive':<10}{'peak RSS':<10}")
        for r in sorted([kit, *sweep], key=lambda r: r["samples_per_step"]):
            print(f"{r['label']:<22}{r['samples_per_step']:<14}{r['s_per_step']:<10.2f}"
                  f"{r['samples_per_s']:<12.3f}{r['samples_per_s'] / naive['samples_per_s']:<10.2f}"
                  f"{r['peak_rss_gib']:<10.2f}")
        print(f"kit at its best batch size: {best['label']}, {best['samples_per_s']:.3f} samples/s, "
              f"{best['samples_per_s'] / naive['samples_per_s']:.2f}x the naive loop")

    print(f"\nmachine: {os.cpu_count()} CPUs ({platform.machine()}), torch {kit['torch_version']} "
          f"with {kit['torch_threads']} threads; 1-min load average at the end of each side: "
          f"naive {naive['loadavg_end']:.1f}, kit {kit['loadavg_end']:.1f}")
    keep = ("samples_per_s", "s_per_step", "steps", "samples_per_step", "peak_rss_gib")
    return dict(
        speedup_samples_per_s=round(speedup, 4), resident_param_ratio=round(ratio, 4),
        naive_samples_per_s=round(naive["samples_per_s"], 4), kit_samples_per_s=round(kit["samples_per_s"], 4),
        naive_s_per_step=round(naive["s_per_step"], 4), kit_s_per_step=round(kit["s_per_step"], 4),
        naive_steps_per_s=round(naive["steps_per_s"], 4),
        naive_cpu_s_per_sample=round(naive["cpu_s_per_sample"], 4),
        kit_cpu_s_per_sample=round(kit["cpu_s_per_sample"], 4),
        cpu_time_ratio=round(naive["cpu_s_per_sample"] / kit["cpu_s_per_sample"], 4),
        naive_peak_rss_gib=round(naive["peak_rss_gib"], 3), kit_peak_rss_gib=round(kit["peak_rss_gib"], 3),
        naive_resident_params=naive["resident_params"], kit_resident_params=kit["resident_params"],
        kit_time_split={k: round(v, 4) for k, v in kit["time_split"].items()},
        naive_time_split={k: round(v, 4) for k, v in naive["time_split"].items()},
        kit_samples_per_step=kit["samples_per_step"],
        kit_best={"label": best["label"], **{k: round(best[k], 4) for k in keep},
                  "speedup_samples_per_s": round(best["samples_per_s"] / naive["samples_per_s"], 4)},
        kit_sweep=[{"label": r["label"], **{k: round(r[k], 4) for k in keep}} for r in sweep],
        speedup_target_met=speedup >= TARGET_SPEEDUP, param_target_met=ratio <= TARGET_PARAM_RATIO,
        torch_threads=kit["torch_threads"], machine=os.cpu_count(),
        loadavg_end={"naive": naive["loadavg_end"], "kit": kit["loadavg_end"]},
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="The sketch's naive loop vs the kit's hybrid step: samples/s, peak RSS, "
                    "resident parameters, the kit's time per phase. Each side runs in its own "
                    "subprocess; the last stdout line is one JSON summary.")
    parser.add_argument("--model", default="smollm2-135m", help="model for both sides (default smollm2-135m)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="response length cap, both sides (default 32)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up steps per side (default 1)")
    parser.add_argument("--naive-steps", type=int, default=20, help="timed steps of the naive loop (default 20)")
    parser.add_argument("--kit-steps", type=int, default=8, help="timed steps of the kit (default 8)")
    parser.add_argument("--kit-batch", type=int, default=4, help="kit prompts per step B (default 4: preset 'bench')")
    parser.add_argument("--kit-k", type=int, default=2, help="kit samples per prompt k (default 2: preset 'bench')")
    parser.add_argument("--sweep", action="store_true",
                        help=f"also run the kit at B x k in {SWEEP_SAMPLES} samples a step (k fixed, B varies) "
                             "and report its best batch size")
    parser.add_argument("--seed", type=int, default=0, help="seed of both sides (default 0)")
    parser.add_argument("--json-out", type=Path, help="also write the final JSON summary to this file")
    parser.add_argument("--side", choices=("naive", "kit"),
                        help="internal: run only this side in this process and print its JSON")
    args = parser.parse_args(argv)
    for name in ("max_new_tokens", "naive_steps", "kit_steps", "kit_batch", "kit_k"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        parser.error("--warmup must be >= 0")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.side:
        print(json.dumps(run_side(args)), flush=True)
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    log(f"bench_loop: {args.model}, {args.max_new_tokens} new tokens, seed {args.seed}; "
        f"naive {args.warmup}+{args.naive_steps} steps, kit {args.warmup}+{args.kit_steps} steps "
        f"(B={args.kit_batch} x k={args.kit_k})")
    naive = child(args, "naive")
    kit = child(args, "kit")
    sweep = []
    if args.sweep:
        main_samples = args.kit_batch * args.kit_k
        for samples in SWEEP_SAMPLES:
            if samples != main_samples and samples % args.kit_k == 0:
                sweep.append(child(args, "kit", kit_batch=samples // args.kit_k, kit_k=args.kit_k))
    summary = report(naive, kit, sweep)
    if args.json_out:
        args.json_out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
