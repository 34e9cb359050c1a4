"""What a finished run leaves for people: figures, sample responses, and sampling from a
saved run with plain PEFT loading."""

from __future__ import annotations

from pathlib import Path

from lab import checkpoint, generator
from lab.data import format_prompt
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
