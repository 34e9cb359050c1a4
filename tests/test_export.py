"""`lab export`: a run's generator adapter in PEFT's format with a model card, loadable by plain
`PeftModel.from_pretrained` (same greedy answer as the kit), merged weights for plain
transformers, and a clear error for a Hub push without the Hub."""

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from lab import generator, models
from lab.integrations import export
from tiny import make

PROMPT = "### Prompt:\nName the largest planet.\n\n### Response:\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory, examples):
    folder = tmp_path_factory.mktemp("run")
    trainer = make(examples, mode="sft")
    trainer.run(2, progress=False, out_dir=folder)
    trainer.model.set_adapter("generator")
    kit = generator.sample(trainer.model, trainer.tokenizer, [PROMPT], max_new_tokens=8, do_sample=False)
    return folder, kit.completions[0]


def plain_greedy(model, tokenizer) -> str:
    ids = tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def test_plain_peft_loads_the_exported_adapter_and_answers_as_the_kit(run, tmp_path):
    folder, kit_answer = run
    out = export.export(folder, tmp_path / "adapter", merge=True)
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= {p.name for p in out.iterdir()}
    base, tokenizer = models.load("tiny-gpt2", device="cpu", verbose=False)
    model = PeftModel.from_pretrained(base, out).eval()
    assert plain_greedy(model, tokenizer) == kit_answer
    merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
    assert plain_greedy(merged, tokenizer) == kit_answer


def test_the_model_card_says_what_it_is_and_how_to_load_it(run, tmp_path):
    card = (export.export(run[0], tmp_path / "adapter") / "README.md").read_text()
    assert "library_name: peft" in card and "base_model: tiny-gpt2" in card
    assert "PeftModel.from_pretrained" in card and "| mode | `\"sft\"` |" in card
    assert "Not measured" in card  # no eval.csv in the run yet


def test_a_push_without_the_hub_is_one_clear_error_and_writes_nothing(run, tmp_path, no_network):
    with pytest.raises(ValueError, match="unreachable"):
        export.export(run[0], tmp_path / "adapter", push_to_hub="me/my-adapter")
    assert not (tmp_path / "adapter").exists()


def test_the_cli_exports_a_run_and_says_where(run, tmp_path, capsys):
    from lab.__main__ import main

    assert main(["export", str(run[0]), "--out", str(tmp_path / "mine")]) == 0
    assert "adapter written to" in capsys.readouterr().out
    assert (tmp_path / "mine" / "adapter_model.safetensors").is_file()
