"""The seed's fourth hypothesis, online learning: a long ``stream`` run fed new rows, with replay.

    python scripts/online_run.py reports/online-2026-12-06 --steps 200 --every 20

The default hybrid (its discriminator as critic baseline) trains on the bundled instructions as
replay anchors while the factual questions' training rows (a domain the anchors lack) arrive in
its ``stream`` file, ``--feed`` rows after each step, until they run out; the run then goes on
with no new rows. Every ``--every`` steps the greedy answers of two fixed held-out splits are
scored (``--limit`` prompts each): the bundled instructions (does it forget the anchors?) and
the factual questions (does it learn the stream?). ``history_window`` keeps the last
``--window`` steps' rows in memory (the run folder's files keep all), and each step's resident
memory (RSS) is recorded: a loop that can run for ever must hold it flat.

Writes into OUT: ``curve.csv`` (step, split, greedy metrics; step 0: the untrained model),
``memory.csv`` (step, rss_mb, rows in memory, new rows queued, step seconds),
``summary.json``, ``online.png``, and the run folder ``run/`` (history.csv, samples.csv, the last
checkpoint's config; its weights are not kept). One torch thread: ``OMP_NUM_THREADS=1``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import pandas as pd

from lab import evaluate
from lab.config import HybridConfig
from lab.data import load_examples
from lab.runtime.memory import rss_mb
from lab.trainer import HybridTrainer
from lab.ui import plots

CONFIG = dict(model="auto", dtype="float32", mode="hybrid", prompts_per_step=4, samples_per_prompt=2,
              max_new_tokens=16, lr=5e-4, replay_ratio=0.5)  # the claims preset's budget settings


class Feeder:
    """Appends ``per_step`` rows (Alpaca layout) to the stream file after each step, until none are left."""

    def __init__(self, path: Path, rows: list, per_step: int):
        self.path, self.rows, self.per_step, self.fed = path, rows, per_step, 0

    def __call__(self, trainer=None, row=None) -> None:
        new = self.rows[self.fed:self.fed + self.per_step]
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps({"instruction": e.instruction, "input": e.input, "output": e.completion})
                                 + "\n" for e in new))
        self.fed += len(new)


class Probe:
    """Every ``every`` steps, the greedy answers of each held-out split scored; RSS after every step."""

    def __init__(self, splits: dict, every: int):
        self.splits, self.every, self.curve, self.memory = splits, every, [], []
        self.last = time.perf_counter()

    def score(self, trainer, step: int) -> None:
        for name, examples in self.splits.items():
            frame = evaluate.evaluate_trainer(trainer, examples, decodings=("greedy",))
            self.curve.append(dict(step=step, split=name, greedy_semantic=frame["semantic"].mean(),
                                   greedy_rouge_l=frame["rouge_l"].mean(), greedy_words=frame["words"].mean()))

    def __call__(self, trainer, row: dict) -> None:
        self.memory.append(dict(step=row["step"], rss_mb=rss_mb(), history_rows=len(trainer.rows),
                                sample_rows=len(trainer.sample_rows), queued=row.get("queued", 0),
                                streamed=row.get("streamed", 0), step_seconds=row["step_time"]))
        if row["step"] % self.every == 0:
            self.score(trainer, row["step"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=20, help="score the held-out splits every N steps")
    parser.add_argument("--feed", type=int, default=1, help="new stream rows after each step")
    parser.add_argument("--limit", type=int, default=40, help="held-out prompts of each split")
    parser.add_argument("--window", type=int, default=20, help="history_window: steps of rows kept in memory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="auto", help="the generator (tiny-gpt2: a smoke test)")
    args = parser.parse_args()
    out = Path(args.out)
    run = out / "run"
    if run.exists():
        raise SystemExit(f"{run} exists: choose another OUT (this script does not resume)")
    run.mkdir(parents=True)
    stream = out / "stream.jsonl"
    stream.write_text("")
    config = HybridConfig.from_dict({**CONFIG, "model": args.model, "dataset": "bundled", "stream": str(stream), "seed": args.seed,
                                     "history_window": args.window, "checkpoint_every": 50})
    started = time.perf_counter()
    trainer = HybridTrainer(config, verbose=False)
    splits = {"bundled": evaluate.heldout(args.limit, "bundled"), "factual": evaluate.heldout(args.limit, "factual")}
    feeder = Feeder(stream, load_examples("factual", "train"), args.feed)
    probe = Probe(splits, args.every)
    probe.score(trainer, 0)
    feeder()  # the first rows are there before step 1
    trainer.run(args.steps, callbacks=[probe, feeder], out_dir=run, progress=False)
    curve, memory = pd.DataFrame(probe.curve), pd.DataFrame(probe.memory)
    curve.to_csv(out / "curve.csv", index=False)
    memory.to_csv(out / "memory.csv", index=False)
    warm = memory[memory["step"] > args.steps // 4]["rss_mb"].tolist()
    window = max(1, len(warm) // 10)
    early, late = statistics.median(warm[:window]), statistics.median(warm[-window:])
    summary = dict(steps=args.steps, every=args.every, feed=args.feed, limit=args.limit, window=args.window,
                   seed=args.seed, stream_rows=feeder.fed, last_new_row_step=int(memory.loc[memory["streamed"] > 0,
                                                                                            "step"].max()),
                   rss_early_mb=early, rss_late_mb=late, rss_growth_pct=100 * (late - early) / early,
                   rss_peak_mb=float(memory["rss_mb"].max()), history_rows_max=int(memory["history_rows"].max()),
                   wall_minutes=(time.perf_counter() - started) / 60, config=config.to_dict(),
                   command=f"OMP_NUM_THREADS=1 python scripts/online_run.py {args.out} --steps {args.steps} "
                           f"--every {args.every} --feed {args.feed} --limit {args.limit} --window {args.window}"
                           + (f" --model {args.model}" if args.model != "auto" else ""))
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    fig, (left, right) = plots.subplots(1, 2, (10, 3.6))
    for name, part in curve.groupby("split"):
        left.plot(part["step"], part["greedy_semantic"], marker="o", markersize=3, label=f"{name} held-out")
    left.axvline(summary["last_new_row_step"], color="grey", linestyle=":", label="last new stream row")
    plots.finish(left, "held-out greedy semantic while the stream runs", "greedy semantic", True)
    right.plot(memory["step"], memory["rss_mb"], label="RSS")
    plots.finish(right, f"resident memory (history_window {args.window})", "MiB", True)
    plots.save(fig, out / "online.png")
    for path in (run / "checkpoints", run / "tensorboard"):  # weights and event files are not committed
        shutil.rmtree(path, ignore_errors=True)
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}))


if __name__ == "__main__":
    main()
