"""Long runs: RSS and step time over many steps of :class:`lab.trainer.HybridTrainer`.

    python benchmarks/soak.py --steps 1000 --model tiny-gpt2          # make soak
    python benchmarks/soak.py --steps 200 --model smollm2-135m        # the bundled model

Runs ``--steps`` steps through ``trainer.run`` (the real loop, checkpoints every
``--checkpoint-every`` steps into a temporary run folder) and records after every step the
process's resident memory (RSS), the step's wall time, the rows the trainer keeps in memory
(``trainer.rows``, ``trainer.sample_rows``: the last ``--history-window`` steps', the rest in the
run folder) and their size as JSON, and (every 25 steps) the number of objects the garbage
collector tracks; on a GPU also the allocated CUDA memory.

Growth is measured after warm-up (the first ``--warmup`` fraction of the steps): the median of
the first 10% of the remaining steps against the median of the last 10% (``*_growth_pct``), and
along a least-squares line through every step after warm-up (``*_trend_pct``). A run passes when
RSS and step time each grow by less than ``--limit`` percent (default 5); with ``--shared``
(a machine shared with other jobs) step time is the process's CPU time per step, which other
jobs move far less than wall time. Both are recorded either way.

Writes ``soak-<model>.csv`` (one row per step), ``soak-<model>.png`` (RSS and step time by step)
and ``soak-<model>.json`` into ``--out`` (default ``reports/``), and prints the JSON summary as
its last line. Time it on a quiet machine: other jobs on the same cores move step times.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab.runtime.memory import rss_mb  # noqa: E402


def growth(values: list[float], warmup: int) -> tuple[float, float, float]:
    """``(early, late, percent)``: medians of the first and last 10% after ``warmup``."""
    rest = values[warmup:]
    window = max(1, len(rest) // 10)
    early, late = statistics.median(rest[:window]), statistics.median(rest[-window:])
    return early, late, 100.0 * (late - early) / early if early else float("nan")


def trend(steps: list[float], values: list[float], warmup: int) -> float:
    """Percent change along a least-squares line through the values after ``warmup``, from its
    first to its last step: less sensitive to a noisy window than :func:`growth`."""
    import numpy as np

    x, y = np.asarray(steps[warmup:], float), np.asarray(values[warmup:], float)
    slope, intercept = np.polyfit(x, y, 1)
    start, end = slope * x[0] + intercept, slope * x[-1] + intercept
    return float(100.0 * (end - start) / start) if start else float("nan")


def plot(frame, title: str, path: Path, warmup: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.plot(frame["step"], frame["rss_mb"], lw=1, label="RSS")
    if "cuda_mb" in frame:
        top.plot(frame["step"], frame["cuda_mb"], lw=1, label="CUDA allocated")
        top.legend()
    top.set_ylabel("memory (MiB)")
    bottom.plot(frame["step"], frame["step_s"], lw=0.5, alpha=0.3, label="wall, each step")
    bottom.plot(frame["step"], frame["step_s"].rolling(25, min_periods=1).median(), lw=1.5,
                label="wall, rolling median (25)")
    bottom.plot(frame["step"], frame["cpu_s"].rolling(25, min_periods=1).median(), lw=1.5,
                label="process CPU, rolling median (25)")
    bottom.set_ylabel("step time (s)")
    bottom.set_xlabel("step")
    bottom.legend()
    for axis in (top, bottom):
        axis.axvline(warmup, color="grey", ls="--", lw=1)
    top.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def soak(steps: int, model: str, preset_name: str = "quick", device: str = "cpu", checkpoint_every: int = 50,
         warmup: float = 0.1, limit: float = 5.0, out: Path = ROOT / "reports", seed: int = 0,
         shared: bool = False, log=print, history_window: int = 50) -> dict:
    import pandas as pd
    import torch

    from lab.config import preset
    from lab.trainer import HybridTrainer

    out.mkdir(parents=True, exist_ok=True)
    config = preset(preset_name, model=model, device=device, seed=seed, checkpoint_every=checkpoint_every,
                    history_window=history_window)
    start = time.perf_counter()
    trainer = HybridTrainer(config, verbose=False)
    load_s = time.perf_counter() - start
    cuda = trainer.device.type == "cuda"
    records, last = [], [time.perf_counter(), time.process_time()]

    def record(t, row) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        entry = {"step": row["step"], "rss_mb": rss_mb(), "step_s": now - last[0], "cpu_s": cpu - last[1],
                 "rows": len(t.rows), "sample_rows": len(t.sample_rows)}
        if cuda:
            entry["cuda_mb"] = torch.cuda.memory_allocated() / 2**20
        if row["step"] % 25 == 0 or row["step"] == 1:
            entry["gc_objects"] = len(gc.get_objects())
            entry["kept_rows_kb"] = (len(json.dumps(t.rows, default=str)) +
                                     len(json.dumps(t.sample_rows, default=str))) / 1024
        if row["step"] % max(1, steps // 10) == 0:
            log(f"step {row['step']}/{steps}: RSS {entry['rss_mb']:.0f} MiB, step {entry['step_s']:.3f} s")
        records.append(entry)
        last[:] = [time.perf_counter(), time.process_time()]

    with tempfile.TemporaryDirectory(prefix="lab-soak-") as run_dir:
        last[:] = [time.perf_counter(), time.process_time()]
        trainer.run(steps, callbacks=[record], out_dir=run_dir, progress=False)
    frame = pd.DataFrame(records)
    name = model.replace("/", "_")
    frame.to_csv(out / f"soak-{name}.csv", index=False)
    skip = max(1, int(steps * warmup))
    rss0, rss1, rss_growth = growth(frame["rss_mb"].tolist(), skip)
    t0, t1, time_growth = growth(frame["step_s"].tolist(), skip)
    c0, c1, cpu_growth = growth(frame["cpu_s"].tolist(), skip)
    kept = frame["kept_rows_kb"].dropna()
    objects = frame.loc[frame["step"] > skip, "gc_objects"].dropna()  # Python objects after warm-up
    summary = {
        "benchmark": "soak", "model": model, "preset": preset_name, "device": str(trainer.device),
        "steps": steps, "warmup_steps": skip, "checkpoint_every": checkpoint_every, "seed": seed,
        "load_s": round(load_s, 1), "run_s": round(float(frame["step_s"].sum()), 1),
        "rss_mb_after_warmup": round(rss0, 1), "rss_mb_end": round(rss1, 1),
        "rss_mb_max": round(float(frame["rss_mb"].max()), 1), "rss_growth_pct": round(rss_growth, 2),
        "step_s_after_warmup": round(t0, 4), "step_s_end": round(t1, 4), "step_time_growth_pct": round(time_growth, 2),
        "cpu_s_after_warmup": round(c0, 4), "cpu_s_end": round(c1, 4), "cpu_time_growth_pct": round(cpu_growth, 2),
        **{f"{name}_trend_pct": round(trend(frame["step"].tolist(), frame[column].tolist(), skip), 2)
           for name, column in (("rss", "rss_mb"), ("step_time", "step_s"), ("cpu_time", "cpu_s"))},
        "load_average_end": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "kept_rows_kb_end": round(float(kept.iloc[-1]), 1) if len(kept) else None,
        "kept_rows_kb_per_step": round(float(kept.iloc[-1]) / steps, 2) if len(kept) else None,
        "gc_objects_growth": int(objects.iloc[-1] - objects.iloc[0]) if len(objects) > 1 else None,
        "limit_pct": limit, "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s) visible",
    }
    if cuda:
        g0, g1, cuda_growth = growth(frame["cuda_mb"].tolist(), skip)
        summary.update(cuda_mb_after_warmup=round(g0, 1), cuda_mb_end=round(g1, 1),
                       cuda_growth_pct=round(cuda_growth, 2), gpu=torch.cuda.get_device_name(0))
    summary["passed"] = bool(rss_growth < limit and (cpu_growth if shared else time_growth) < limit)
    summary["time_criterion"] = "cpu_s (shared machine)" if shared else "step_s (wall)"
    plot(frame, f"soak: {model}, {steps} steps ({summary['device']}); after warm-up RSS {rss_growth:+.1f}%, "
         f"wall step time {time_growth:+.1f}%, CPU per step {cpu_growth:+.1f}%", out / f"soak-{name}.png", skip)
    (out / f"soak-{name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--model", default="tiny-gpt2")
    parser.add_argument("--preset", default="quick", help="config preset (default quick)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    parser.add_argument("--checkpoint-every", type=int, default=50, help="as in training (default 50)")
    parser.add_argument("--warmup", type=float, default=0.1, help="fraction of steps ignored (default 0.1)")
    parser.add_argument("--limit", type=float, default=5.0, help="allowed growth in percent (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--history-window", type=int, default=50, help="history_window: steps of rows kept in "
                        "memory, the rest in the run folder (default 50; 0: all in memory, as before 2026-12-06)")
    parser.add_argument("--shared", action="store_true", help="judge step time by the process's CPU "
                        "time, not wall time (other jobs on the same cores move wall times)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports", help="folder for the CSV, PNG, JSON")
    args = parser.parse_args(argv)
    if args.steps < 20 or not 0 <= args.warmup < 0.9:
        parser.error("--steps must be >= 20 and --warmup in [0, 0.9)")
    summary = soak(args.steps, args.model, args.preset, args.device, args.checkpoint_every, args.warmup,
                   args.limit, args.out, args.seed, args.shared, history_window=args.history_window)
    print(f"RSS {summary['rss_mb_after_warmup']:.0f} -> {summary['rss_mb_end']:.0f} MiB "
          f"({summary['rss_growth_pct']:+.2f}%), step time {summary['step_s_after_warmup']:.3f} -> "
          f"{summary['step_s_end']:.3f} s ({summary['step_time_growth_pct']:+.2f}%), CPU per step "
          f"{summary['cpu_s_after_warmup']:.3f} -> {summary['cpu_s_end']:.3f} s "
          f"({summary['cpu_time_growth_pct']:+.2f}%) after "
          f"{summary['warmup_steps']} warm-up steps: {'PASS' if summary['passed'] else 'FAIL'} (limit {args.limit}%)")
    print(json.dumps(summary))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
