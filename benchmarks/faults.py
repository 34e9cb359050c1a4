"""Kill anywhere, lose nothing: SIGKILL ``python -m lab train`` at seeded random moments,
resume with ``--resume`` until it finishes, and check the history against an uninterrupted run.

    python benchmarks/faults.py --trials 20            # the full run (make faults)
    python benchmarks/faults.py --trials 3 --steps 5   # what tests/test_faults.py runs

Each trial trains ``--steps`` steps of tiny-gpt2 on CPU (preset ``quick``, fixed seed,
``--checkpoint-every 1``) and kills the process 1..``--max-kills`` times. Each kill is one of
two kinds, drawn with the trial's own ``random.Random(seed, trial)``:

- ``time``: after a delay drawn uniformly over the length of an uninterrupted run (start-up,
  steps, checkpoint writes and the final outputs all get hit in proportion to their time);
- ``checkpoint``: when a checkpoint write is under way (its ``.tmp-*`` folder exists, polled
  every millisecond), plus a random 0-80 ms, so that kills land inside checkpoint writes far
  more often than their share of the time.

After the kills, the run is continued like a user would: ``--resume`` when the folder holds
a complete checkpoint, else the same command as the first start, until it exits 0. A trial
*survives* when the run finishes, ``history.jsonl`` and ``history.csv`` hold every step exactly
once, every row equals the uninterrupted run's (timing columns aside), and no temporary
folder is left behind. The phase each kill landed in (``startup``, ``step``,
``checkpoint-write``, ``outputs``) is read from the run folder at the moment of the kill.

Prints one line per trial, ``trials run: N, survived: M`` and a JSON summary line
(``--json FILE`` writes it to a file too). Exit code 0 when every trial survived.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMING = ("step_time",)  # plus every time_* column


def train_command(out: Path, steps: int, seed: int, resume: bool) -> list[str]:
    """The CLI call of a trial: a fresh start, or ``--resume`` (which takes no config flags)."""
    cmd = [sys.executable, "-m", "lab", "train", "--out", str(out), "--steps", str(steps)]
    if resume:
        return cmd + ["--resume"]
    return cmd + ["--preset", "quick", "--model", "tiny-gpt2", "--device", "cpu",
                  "--checkpoint-every", "1", "--seed", str(seed)]


CODE = ROOT  # where ``lab`` is imported from: a snapshot once :func:`snapshot` has run


def snapshot(folder: Path) -> str:
    """Copy ``lab/`` into ``folder/code`` and run every process from there, so that a long run
    tests one version of the code even while the working tree changes; returns its hash."""
    global CODE
    CODE = folder / "code"
    shutil.rmtree(CODE, ignore_errors=True)
    shutil.copytree(ROOT / "lab", CODE / "lab", ignore=shutil.ignore_patterns("__pycache__"))
    digest = hashlib.sha256()
    for path in sorted((CODE / "lab").rglob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
               PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false",
               LAB_DATA_DIR=os.environ.get("LAB_DATA_DIR", str(ROOT / "data")))
    env["PYTHONPATH"] = os.pathsep.join([str(CODE), *filter(None, [env.get("PYTHONPATH")])])
    return env


def complete_steps(out: Path) -> list[int]:
    """Steps of the complete checkpoints in ``out`` (the names ``lab.checkpoint`` trusts)."""
    root = out / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(int(p.name[5:]) for p in root.iterdir() if p.is_dir() and p.name.startswith("step-")
                  and p.name[5:].isdigit())


def leftovers(out: Path) -> list[str]:
    """Temporary or half-deleted folders under ``out/checkpoints`` (names starting with '.')."""
    root = out / "checkpoints"
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".")) if root.is_dir() else []


def _writing(out: Path) -> bool:
    root = out / "checkpoints"
    try:
        return any(name.startswith(".tmp-") for name in os.listdir(root))
    except OSError:
        return False


def _phase(out: Path, log: Path, steps: int, offset: int) -> str:
    """Where a kill landed, read from the run folder and the process's log (from ``offset``)."""
    if _writing(out):
        return "checkpoint-write"
    done = complete_steps(out)
    if done and done[-1] >= steps:
        return "outputs"
    with log.open("rb") as handle:
        handle.seek(offset)
        text = handle.read().decode(errors="replace")
    return "step" if "run:" in text else "startup"


def launch(out: Path, steps: int, seed: int, log: Path) -> subprocess.Popen:
    resume = bool(complete_steps(out))
    handle = log.open("a")
    handle.write(f"\n$ {' '.join(train_command(out, steps, seed, resume))}\n")
    handle.flush()
    proc = subprocess.Popen(train_command(out, steps, seed, resume), cwd=CODE, env=_env(),
                            stdout=handle, stderr=subprocess.STDOUT)
    proc.log_offset = handle.tell()  # this start's output begins here
    handle.close()
    return proc


def kill_one(proc: subprocess.Popen, out: Path, log: Path, steps: int, kind: str, rng: random.Random,
             span: float) -> str | None:
    """Kill ``proc`` at a moment of ``kind``; the phase it landed in, or None if it finished first."""
    if kind == "time":
        deadline = time.monotonic() + rng.uniform(0.0, span)
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
    else:  # inside a checkpoint write: wait for one to start (a random one of the run's)
        skip = rng.randint(0, max(0, steps // 2))
        seen = 0
        while proc.poll() is None:
            if _writing(out):
                if seen == skip:
                    time.sleep(rng.uniform(0.0, 0.08))
                    break
                seen += 1
                while _writing(out) and proc.poll() is None:
                    time.sleep(0.001)
            time.sleep(0.001)
    if proc.poll() is not None:
        return None
    phase = _phase(out, log, steps, proc.log_offset)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return phase


def _history_rows(out: Path) -> list[dict]:
    path = out / "history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def compare(rows: list[dict], reference: list[dict]) -> list[str]:
    """Differences between a history and the uninterrupted one, timing columns aside."""
    problems = []
    steps = [row.get("step") for row in rows]
    want = list(range(1, len(reference) + 1))
    if steps != want:
        dupes = sorted({s for s in steps if steps.count(s) > 1})
        missing = sorted(set(want) - set(steps))
        problems.append(f"steps {steps}: duplicated {dupes}, missing {missing}")
        return problems
    for row, ref in zip(rows, reference):
        keys = {k for k in (*row, *ref) if not k.startswith("time_") and k not in TIMING}
        differ = sorted(k for k in keys if not _same(row.get(k), ref.get(k)))
        if differ:
            problems.append(f"step {row['step']} differs from the uninterrupted run in {differ}")
    return problems


def check(out: Path, reference: list[dict]) -> list[str]:
    """Every way the finished run folder ``out`` falls short of the uninterrupted run."""
    if not (out / "history.jsonl").is_file():
        return ["no history.jsonl"]
    problems = compare(_history_rows(out), reference)
    with (out / "history.csv").open(newline="") as handle:
        csv_steps = [int(r["step"]) for r in csv.DictReader(handle)]
    if csv_steps != list(range(1, len(reference) + 1)):
        problems.append(f"history.csv steps {csv_steps}")
    if (left := leftovers(out)):
        problems.append(f"left behind in checkpoints/: {left}")
    done = complete_steps(out)
    if not done or done[-1] != len(reference):
        problems.append(f"latest checkpoint is {done[-1:] or 'none'}, expected step {len(reference)}")
    return problems


def reference_run(folder: Path, steps: int, seed: int) -> tuple[list[dict], float]:
    """The uninterrupted run: its history rows and wall time."""
    out, log = folder / "reference", folder / "reference.log"
    start = time.monotonic()
    proc = launch(out, steps, seed, log)
    if proc.wait() != 0:
        raise RuntimeError(f"the uninterrupted run failed; see {log}:\n{log.read_text()[-2000:]}")
    return _history_rows(out), time.monotonic() - start


def trial(index: int, folder: Path, steps: int, seed: int, reference: list[dict], span: float,
          max_kills: int) -> dict:
    """One trial: kills, then resumes until the run completes; returns its record."""
    rng = random.Random(f"{seed}-{index}")
    out, log = folder / f"trial-{index:03d}", folder / f"trial-{index:03d}.log"
    shutil.rmtree(out, ignore_errors=True)
    start, phases, problems = time.monotonic(), [], []
    for _ in range(rng.randint(1, max_kills)):
        kind = rng.choice(("time", "checkpoint"))
        proc = launch(out, steps, seed, log)
        phase = kill_one(proc, out, log, steps, kind, rng, span)
        if phase is None:  # finished before the kill
            if proc.returncode != 0:
                problems.append(f"a start exited {proc.returncode} before its kill")
            break
        phases.append(phase)
    for attempt in range(3):  # then let it finish
        proc = launch(out, steps, seed, log)
        if proc.wait() == 0:
            break
        last = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-1:]
        problems.append(f"a resume exited {proc.returncode}: {last[0] if last else ''}")
    else:
        problems.append("the run never finished")
    if not problems:
        problems = check(out, reference)
    return {"trial": index, "kills": len(phases), "phases": phases, "survived": not problems,
            "problems": problems, "seconds": round(time.monotonic() - start, 1), "folder": str(out)}


def run(trials: int, steps: int = 12, seed: int = 0, max_kills: int = 3, folder: Path | None = None,
        keep: bool = False, log=print) -> dict:
    """Run the reference and ``trials`` trials; returns the summary (and every trial's record)."""
    folder = Path(folder or tempfile.mkdtemp(prefix="lab-faults-"))
    folder.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    code = snapshot(folder)
    reference, span = reference_run(folder, steps, seed)
    log(f"uninterrupted run: {steps} steps in {span:.1f} s")
    records = []
    for index in range(trials):
        record = trial(index, folder, steps, seed, reference, span, max_kills)
        records.append(record)
        status = "survived" if record["survived"] else "FAILED: " + "; ".join(record["problems"])
        log(f"trial {index + 1}/{trials}: {record['kills']} kill(s) at {record['phases']}, "
            f"{record['seconds']:.0f} s, {status}")
        if record["survived"] and not keep:
            shutil.rmtree(record["folder"], ignore_errors=True)
    phases = [p for r in records for p in r["phases"]]
    summary = {
        "benchmark": "faults", "trials": trials, "survived": sum(r["survived"] for r in records),
        "kills": len(phases), **{f"kills_{p.replace('-', '_')}": phases.count(p)
                                 for p in ("startup", "step", "checkpoint-write", "outputs")},
        "steps": steps, "seed": seed, "model": "tiny-gpt2", "device": "cpu", "code_sha256": code,
        "seconds": round(time.monotonic() - start, 1), "folder": str(folder),
        "failures": [{k: r[k] for k in ("trial", "phases", "problems")} for r in records if not r["survived"]],
    }
    if not keep and not summary["failures"]:
        shutil.rmtree(folder, ignore_errors=True)
        summary["folder"] = None  # removed: nothing failed
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="trials (default 20)")
    parser.add_argument("--steps", type=int, default=12, help="steps per run (default 12)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the runs and the kill moments")
    parser.add_argument("--max-kills", type=int, default=3, help="kills per trial: 1..N (default 3)")
    parser.add_argument("--folder", type=Path, help="work folder (default: a temporary one; kept "
                        "when a trial fails)")
    parser.add_argument("--keep", action="store_true", help="keep every run folder")
    parser.add_argument("--json", type=Path, help="also write the summary JSON here")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.steps < 2 or args.max_kills < 1:
        parser.error("--trials and --max-kills must be >= 1, --steps >= 2")
    summary = run(args.trials, args.steps, args.seed, args.max_kills, args.folder, args.keep)
    print(f"trials run: {summary['trials']}, survived: {summary['survived']} "
          f"({summary['kills']} kills: {summary['kills_startup']} in start-up, {summary['kills_step']} "
          f"in steps, {summary['kills_checkpoint_write']} in checkpoint writes, "
          f"{summary['kills_outputs']} in final outputs; {summary['seconds']:.0f} s)")
    print(json.dumps(summary))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if summary["survived"] == summary["trials"] else 1


if __name__ == "__main__":
    sys.exit(main())
