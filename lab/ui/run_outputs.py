"""What a finished run leaves for people: figures, sample responses, what changed during the
run, and sampling from a saved run with plain PEFT loading."""

from __future__ import annotations

from pathlib import Path

import math

from lab import checkpoint, generator
from lab.data import format_prompt
from lab.rewards import Semantic
from lab.evaluate import describe_source, heldout
from lab.ui import plots


def write_run_outputs(trainer, out: Path, n_samples: int = 4) -> None:
    """``dashboard.png`` and ``samples.md`` (greedy answers to held-out prompts of the run's
    dataset, :func:`lab.evaluate.heldout`) in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    fig = plots.dashboard(trainer.history, title=f"{trainer.config.mode} run, {trainer.step_count} steps")
    plots.save(fig, out / "dashboard.png")
    chat = trainer.tokenizer if trainer.config.chat_template else None
    source = trainer.config.dataset
    prompts = heldout(n_samples, source, chat)
    trainer.model.eval()
    trainer.model.set_adapter("generator")
    got = generator.sample(trainer.model, trainer.tokenizer, [e.prompt for e in prompts],
                           max_new_tokens=trainer.config.max_new_tokens, do_sample=False)
    lines = [f"# Greedy samples after {trainer.step_count} steps\n",
             f"Prompts: {describe_source(source, trained_on=source)}.\n"]
    for example, completion in zip(prompts, got.completions):
        lines += [f"## {example.instruction} {example.input}".rstrip(), "",
                  f"- **model:** {completion}", f"- **reference:** {example.completion}", ""]
    (out / "samples.md").write_text("\n".join(lines))


def sample_from_run(run: Path, instructions: list[str] | None = None, n: int = 3,
                    max_new_tokens: int = 48) -> list[tuple[str, str]]:
    """Greedy answers of a saved generator: ``[(prompt, completion), ...]``; without
    ``instructions``, the first ``n`` held-out prompts of the run's dataset."""
    model, tokenizer, config = checkpoint.load_generator(run)
    chat = tokenizer if config.chat_template else None
    if instructions:
        prompts = [format_prompt(text, tokenizer=chat) for text in instructions]
    else:
        prompts = [e.prompt for e in heldout(n, config.dataset, chat)]
    got = generator.sample(model, tokenizer, prompts, max_new_tokens=max_new_tokens, do_sample=False)
    return list(zip(prompts, got.completions))


def greedy_quality(trainer, n: int = 8) -> float:
    """Mean semantic similarity (MiniLM cosine) of the generator's greedy answers to the first
    ``n`` held-out prompts of the run's dataset and their references. Greedy: no random draw,
    so measuring it before a run leaves the run unchanged."""
    chat = trainer.tokenizer if trainer.config.chat_template else None
    prompts = heldout(n, trainer.config.dataset, chat)
    trainer.model.set_adapter("generator")
    got = generator.sample(trainer.model, trainer.tokenizer, [e.prompt for e in prompts],
                           max_new_tokens=trainer.config.max_new_tokens, do_sample=False)
    scores = Semantic()(got.prompts, got.completions, references=[e.completion for e in prompts])
    return sum(scores) / len(scores)


def what_changed(trainer, quality_before: float, quality_after: float, n: int = 8) -> list[str]:
    """Lines on what the run did: the critic's agreement with the reward (its within-prompt
    ranking accuracy) early vs late, its warm start, and held-out greedy quality before vs after."""
    history, lines = trainer.history, [f"what changed in {trainer.step_count} steps:"]
    if "d_accuracy" in history and history["d_accuracy"].notna().any():
        quarter = max(1, len(history) // 4)
        early, late = history["d_accuracy"].head(quarter).mean(), history["d_accuracy"].tail(quarter).mean()
        lines.append(f"  discriminator: ranks a prompt's samples like the reward {_f(early)} of the time in the first "
                     f"{quarter} step(s), {_f(late)} in the last {quarter} (chance 0.50)")
    if trainer.warm_start:
        start = trainer.warm_start
        lines.append(f"  its warm start ({start['steps']} steps{', cached' if start.get('cached') else ''}): held-out "
                     f"reference above junk {_f(start['ref_vs_junk'])}, samples in the reward's order "
                     f"{_f(start['sample_ranking'])}")
    if "d_accuracy" not in history:
        lines.append("  discriminator: not trained (the D-free loop, --preset fast)")
    lines.append(f"  held-out greedy answers ({n} prompts), semantic similarity to the reference: "
                 f"{quality_before:.3f} before -> {quality_after:.3f} after")
    return lines


def _f(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2f}"
