"""Short tiny-model runs whose histories are fixtures: a refactor must reproduce them.

``python tests/parity_runs.py`` (from the repository root, fp32, one thread) records every run's
history and samples into ``tests/fixtures/parity_histories.json``; ``tests/test_parity_fixtures.py``
replays the runs and compares. Record again only when a change is meant to alter the numbers,
and say so in the commit.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

FIXTURE = Path(__file__).parent / "fixtures" / "parity_histories.json"
STEPS = 3
# Each run: the tiny trainer of tests/tiny.py with these changes; together they take every branch of a step.
RUNS: dict[str, dict] = {
    "sft": dict(mode="sft"),
    "rl": dict(mode="rl"),
    "hybrid": dict(mode="hybrid", train_discriminator="auto", baseline="ema"),
    "hybrid_kl_entropy": dict(mode="hybrid", kl_coef=0.1, entropy_coef=0.01, baseline="loo"),
    "critic": dict(mode="hybrid", baseline="critic", discriminator_loss="mse+contrastive"),
    "adversarial": dict(mode="hybrid", reward_source="discriminator", baseline="loo"),
    "adversarial_frozen": dict(mode="hybrid", reward_source="discriminator", freeze_discriminator_after=1),
    "mix_aux": dict(mode="hybrid", reward_source="mix", discriminator_aux_weight=0.5),
    "ppo": dict(mode="hybrid", loss_type="ppo", ppo_epochs=2, ppo_minibatches=2, baseline="group",
                scale_rewards=True),
    "selfplay": dict(mode="selfplay", selfplay_refresh=2),
    "luffy": dict(mode="rl", reference_in_group=True, baseline="group"),
    "hpt": dict(mode="hybrid", per_prompt_switch=True, switch_threshold=0.3),
    "chord_phi": dict(mode="hybrid", sft_schedule="chord", mu_warmup_steps=1, mu_decay_steps=3,
                      sft_token_weight="phi"),
    "adaptive": dict(mode="hybrid", lambda_schedule="adaptive"),
    "stream": dict(mode="hybrid", replay_ratio=0.5),
}
# The defaults these runs were recorded with (66068a0), pinned where the defaults have changed since
# (the GAN by default: a critic baseline and a warm-started discriminator).
RECORDED_DEFAULTS = dict(baseline="ema", discriminator_warmup_steps=0)
STREAM_ROWS = [{"instruction": f"Name the colour of {thing}.", "output": f"{thing.title()} is {colour}."}
               for thing, colour in (("snow", "white"), ("grass", "green"), ("the sky", "blue"))]
DROP = ("time_", "step_time")  # wall-clock columns differ run to run


def clean(value):
    """JSON-safe: NaN as the string 'nan', numbers as floats."""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if hasattr(value, "item"):
        return clean(value.item())
    return value


def recording_versions() -> dict[str, str]:
    """torch's and transformers' major.minor here: the numbers of other releases differ in the last bits."""
    import torch
    import transformers

    return {lib.__name__: ".".join(lib.__version__.split("+")[0].split(".")[:2]) for lib in (torch, transformers)}


def record(name: str, examples, tmp: Path) -> dict:
    """History and samples of run ``name`` (``STEPS`` steps; the stream run reads ``STREAM_ROWS``)."""
    from tiny import make

    changes = {**RECORDED_DEFAULTS, **RUNS[name]}
    if name == "stream":
        stream = tmp / "stream.jsonl"
        stream.write_text("".join(json.dumps(row) + "\n" for row in STREAM_ROWS))
        changes["stream"] = str(stream)
    trainer = make(examples, **changes)
    history = trainer.run(STEPS, progress=False)
    history = history[[c for c in history.columns if not c.startswith(DROP)]]
    samples = trainer.samples
    return {"history": [{k: clean(v) for k, v in row.items()} for row in history.to_dict("records")],
            "samples": [{k: clean(v) for k, v in row.items()} for row in samples.to_dict("records")]}


def main() -> None:
    import tempfile

    import torch

    from lab.data import load_examples

    torch.set_num_threads(1)
    examples = load_examples("bundled", "train", limit=12)
    with tempfile.TemporaryDirectory() as tmp:
        fixtures = {name: record(name, examples, Path(tmp)) for name in RUNS}
    fixtures = {"_versions": recording_versions(), **fixtures}
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text(json.dumps(fixtures, indent=1) + "\n")
    print(f"wrote {FIXTURE} ({len(fixtures)} runs x {STEPS} steps)")


if __name__ == "__main__":
    os.environ.setdefault("LAB_DTYPE", "float32")
    sys.path.insert(0, str(Path(__file__).parent))
    main()
