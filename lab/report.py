"""What a finished run leaves for people: figures, sample responses, and sampling from a
saved run with plain PEFT loading."""

from __future__ import annotations

from pathlib import Path

from lab import checkpoint, generator, models
from lab.config import HybridConfig
from lab.data import format_prompt, load_examples


def write_run_outputs(trainer, out: Path, n_samples: int = 4) -> None:
    """``dashboard.png`` and ``samples.md`` (greedy answers to held-out prompts) in ``out``."""
    from lab import plots

    out.mkdir(parents=True, exist_ok=True)
    fig = plots.dashboard(trainer.history, title=f"{trainer.config.mode} run, {trainer.step_count} steps")
    plots.save(fig, out / "dashboard.png")
    chat = trainer.tokenizer if trainer.config.chat_template else None
    heldout = load_examples("bundled", "heldout", limit=n_samples, tokenizer=chat)
    trainer.model.eval()
    trainer.model.set_adapter("generator")
    got = generator.sample(trainer.model, trainer.tokenizer, [e.prompt for e in heldout],
                           max_new_tokens=trainer.config.max_new_tokens, do_sample=False)
    lines = [f"# Greedy samples after {trainer.step_count} steps\n"]
    for example, completion in zip(heldout, got.completions):
        lines += [f"## {example.instruction} {example.input}".rstrip(), "",
                  f"- **model:** {completion}", f"- **reference:** {example.completion}", ""]
    (out / "samples.md").write_text("\n".join(lines))


def load_generator(run: Path, device: str = "auto"):
    """``(peft_model, tokenizer, config)`` from a run or checkpoint folder, loading the
    adapter with plain ``peft.PeftModel.from_pretrained``."""
    from peft import PeftModel

    ckpt = checkpoint.find(run)
    config = HybridConfig.load(ckpt / "config.json")
    base, tokenizer = models.load(config.model, device, verbose=False)
    model = PeftModel.from_pretrained(base, ckpt / "generator", adapter_name="generator")
    return model.eval(), tokenizer, config


def sample_from_run(run: Path, instructions: list[str] | None = None, n: int = 3,
                    max_new_tokens: int = 48) -> list[tuple[str, str]]:
    """Greedy answers of a saved generator: ``[(prompt, completion), ...]``."""
    model, tokenizer, config = load_generator(run)
    chat = tokenizer if config.chat_template else None
    if instructions:
        prompts = [format_prompt(text, tokenizer=chat) for text in instructions]
    else:
        prompts = [e.prompt for e in load_examples("bundled", "heldout", limit=n, tokenizer=chat)]
    got = generator.sample(model, tokenizer, prompts, max_new_tokens=max_new_tokens, do_sample=False)
    return list(zip(prompts, got.completions))
