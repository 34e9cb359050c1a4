"""``python -m lab``: flags read by field type, preset < file < flags, --resume, eval on any file."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lab import __main__ as cli
from lab import models
from lab.config import PRESETS, SECTIONS, HybridConfig

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--model", "tiny-gpt2", "--device", "cpu"]
ROWS = [{"instruction": f"Name a colour number {i}.", "input": "", "output": f"Colour {i} is blue."}
        for i in range(5)]


def config_of(*argv: str) -> HybridConfig:
    return cli.build_config(cli.parser().parse_args(["train", "--out", "unused", *argv]))


@pytest.fixture
def alpaca_file(tmp_path) -> Path:
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    return path


# --- flags and files ---------------------------------------------------------------------------
def test_flags_are_read_by_the_field_type():
    config = config_of("--lr", "1e-4", "--lr-discriminator", "2E-5", "--top-p", ".5", "--lambda-rl", "1",
                       "--chat-template", "true", "--reward-weights", '{"semantic": 1}',
                       "--lora-r", "4", "--discriminator-model", "none")
    assert config.lr == 1e-4 and config.lr_discriminator == 2e-5 and config.top_p == 0.5
    assert isinstance(config.lambda_rl, float) and config.lambda_rl == 1.0
    assert config.chat_template is True and config.lora_r == 4 and config.discriminator_model is None
    assert config.reward_weights == {"semantic": 1.0}
    assert config_of("--chat-template", "No").chat_template is False
    assert config_of("--reward-weights", "{rouge: 2e-1, length: .5}").reward_weights == {"rouge": 0.2, "length": 0.5}


@pytest.mark.parametrize("flag, value, expected", [
    ("--lr", "fast", "number"),
    ("--lora-r", "2.5", "whole number"),
    ("--chat-template", "maybe", "true/false"),
    ("--reward-weights", "[1, 2]", "mapping"),
])
def test_a_bad_flag_value_is_an_argparse_error(flag, value, expected, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--out", "unused", flag, value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and expected in err


def test_an_out_of_range_flag_value_is_one_error_line(tmp_path, capsys):
    assert cli.main(["train", "--out", str(tmp_path / "r"), "--lr=-1e-4", *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: lr=-0.0001 is out of range") and "\n" not in err


def test_yaml_file_numbers_are_floats_and_precedence_is_preset_then_file_then_flags(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text("lr: 2e-4\n")
    config = config_of("--config", str(path), "--preset", "quick")
    assert config.lr == 2e-4 and isinstance(config.lr, float)
    quick = PRESETS["quick"]
    assert {k: getattr(config, k) for k in quick} == quick  # the file names only lr
    path.write_text("lr: 2e-4\nmax_new_tokens: 12\nmode: sft\n")
    config = config_of("--config", str(path), "--preset", "quick", "--mode", "rl")
    assert (config.max_new_tokens, config.mode, config.prompts_per_step) == (12, "rl", 2)  # file > preset; flag > file
    assert config_of("--config", str(path), "--max-new-tokens", "8").max_new_tokens == 8


def test_config_file_errors_are_one_line(tmp_path, capsys):
    path = tmp_path / "f.yaml"
    path.write_text("lr: fast\n")
    assert cli.main(["train", "--out", str(tmp_path / "r"), "--config", str(path)]) == 2
    assert "lr='fast': expected a number" in capsys.readouterr().err


def test_help_documents_every_field_in_one_group_per_section(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    text = " ".join(out.split())  # argparse wraps lines
    for name in HybridConfig.__dataclass_fields__:
        assert f"--{name.replace('_', '-')}" in text
    assert "weight of the RL terms against SFT in mode 'hybrid'; 0-2" in text
    assert "the prompt's other samples" in text and "preset < --config file < these flags" in text
    groups = [line for line in out.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    sections = HybridConfig.sections()
    assert groups[-len(sections):] == [f"{section}: {SECTIONS[section]}:" for section in sections]
    for section, names in sections.items():  # each flag under its section's title, in field order
        block = out.split(f"\n{section}: ")[1].split("\n\n")[0]
        assert [line.split()[0] for line in block.splitlines() if line.startswith("  --")] == \
            [f"--{name.replace('_', '-')}" for name in names]


def test_a_bad_dataset_fails_before_a_model_loads(tmp_path, capsys, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("a model loaded before the dataset was checked")

    monkeypatch.setattr(models, "load", no_model)
    assert cli.main(["train", "--out", str(tmp_path / "r"), "--dataset", "bundled:0.5,nonsense:0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: Data file nonsense does not exist, and 'nonsense' is no source (bundled, auto, factual, "
                   "alpaca, dolly, oasst, truthfulqa, arc)")


@pytest.mark.parametrize("extra", [["--preset", "quick"], ["--lr", "1e-3"], ["--config", "f.yaml"]])
def test_resume_refuses_config_options(extra, tmp_path, capsys):
    assert cli.main(["train", "--out", str(tmp_path), "--resume", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert "--resume" in err and extra[0] in err and "\n" not in err


def test_resume_without_a_checkpoint_is_refused(tmp_path, capsys):
    assert cli.main(["train", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


# --- commands on tiny-gpt2 ------------------------------------------------------------------
def test_train_on_a_local_file_then_resume_sample_and_eval_use_its_rows(alpaca_file, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--out", str(out), "--steps", "1", "--lr", "1e-4", "--preset", "quick",
            "--max-new-tokens", "3", "--dataset", str(alpaca_file), *TINY]
    assert cli.main(argv) == 0
    saved = json.loads(next(out.glob("checkpoints/*/config.json")).read_text())
    assert saved["lr"] == 1e-4 and saved["prompts_per_step"] == 2 and saved["dataset"] == str(alpaca_file)
    assert (out / "dashboard.png").is_file()
    samples = (out / "samples.md").read_text()
    assert f"all rows of {alpaca_file}" in samples and "Colour 0 is blue." in samples
    assert cli.main(argv) == 2  # the folder holds a run
    assert cli.main(["train", "--out", str(out), "--steps", "2", "--resume"]) == 0
    assert "resumed" in capsys.readouterr().out
    assert cli.main(["sample", "--run", str(out), "--n", "1", "--max-new-tokens", "2"]) == 0
    assert "Name a colour number 0." in capsys.readouterr().out
    assert cli.main(["eval", "--run", str(out), "--limit", "2", "--max-new-tokens", "2", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "training rows" in printed and "distinct_2" in printed
    assert len(pd.read_csv(out / "eval.csv")) == 2 * 2


def test_eval_any_jsonl_file(alpaca_file, tmp_path, capsys):
    csv = tmp_path / "rows.csv"
    assert cli.main(["eval", "--data", str(alpaca_file), "--limit", "3", "--max-new-tokens", "3",
                     "--out", str(csv), *TINY]) == 0
    printed = capsys.readouterr().out
    assert f"all rows of {alpaca_file}" in printed and "greedy" in printed and "distinct_2" in printed
    frame = pd.read_csv(csv)
    assert len(frame) == 2 * 3 and frame["reference"].iloc[0] == "Colour 0 is blue."


def test_eval_csv_with_columns(tmp_path, capsys):
    path = tmp_path / "dolly.csv"
    pd.DataFrame({"prompt": ["Say hi.", "Say bye."], "response": ["Hi.", "Bye."]}).to_csv(path, index=False)
    assert cli.main(["eval", "--data", str(path), "--columns", '{"instruction": "prompt", "output": "response"}',
                     "--max-new-tokens", "2", *TINY]) == 0
    assert "n" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        cli.main(["eval", "--data", str(path), "--columns", "prompt"])
    assert exit_.value.code == 2


def test_ablate_flags():
    args = cli.parser().parse_args(["ablate", "--out", "x", "--seeds", "3", "--arms", "base", "sft",
                                    "--data", "f.jsonl", "--columns", '{"output": "response"}'])
    assert args.func is cli.cmd_ablate and args.seeds == 3 and args.arms == ["base", "sft"]
    assert args.data == "f.jsonl" and args.columns == {"output": "response"}
    args = cli.parser().parse_args(["eval", "--run", "runs/demo", "--limit", "5"])
    assert args.func is cli.cmd_eval and args.limit == 5


def test_the_real_command(tmp_path):
    """The acceptance command, as a user types it."""
    out = tmp_path / "D"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "lab", "train", "--out", str(out), "--steps", "1",
                           "--model", "tiny-gpt2", "--lr", "1e-4", "--max-new-tokens", "4"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "outputs written" in done.stdout and (out / "samples.md").is_file()
    # what a newcomer reads: the seed's scheme at work, the adapter for plain peft, and no noise
    assert "what changed in 1 steps:" in done.stdout and "discriminator: ranks" in done.stdout
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    noise = [line for line in done.stderr.splitlines()
             if any(word in line for word in ("Failed to load", "eprecat", "Warning", "warn("))]
    assert not noise, noise
