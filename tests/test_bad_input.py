"""Bad input, tried like a user (issue 16, item 5): every case ends in ONE clear error line that
names what is wrong and how to fix it (exit code 2 from the CLI, ``ValueError`` /
``FileNotFoundError`` from Python), and nothing saved is lost.

The cases are tables: data files, config values and files, saved runs and checkpoints, the disk,
and the playground's Save. A CLI case runs ``lab.__main__.main([...])`` in-process; a Python case
calls the API. Checkpoint and disk cases work on a copy of one small saved run and check that
every file it held is still there, byte for byte.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from lab import __main__ as cli
from lab import checkpoint
from lab.config import HybridConfig
from lab.data import load_examples

TINY = ["--model", "tiny-gpt2", "--device", "cpu"]
QUICK = ["--preset", "quick", *TINY, "--max-new-tokens", "4", "--reward-weights", '{"perplexity": 1}']
GOOD = {"instruction": "Name a colour.", "input": "", "output": "Blue."}


# --- helpers -----------------------------------------------------------------------------------
def run_cli(capsys, argv: list[str]) -> tuple[int, str]:
    """``python -m lab ARGV`` in-process: (exit code, stderr)."""
    capsys.readouterr()
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exit_:  # argparse
        code = exit_.code
    return code, capsys.readouterr().err


def assert_one_error_line(code: int, err: str, needles: tuple[str, ...]) -> str:
    """Exit code 2, no traceback, exactly one error line, the last one, holding every needle."""
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and errors[0] == lines[-1], err
    for needle in needles:
        assert needle.lower() in errors[0].lower(), f"{needle!r} not in {errors[0]!r}"
    return errors[0]


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` -> its sha256."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def write(path: Path, content) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def jsonl(*rows) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory) -> Path:
    """A finished 2-step run of tiny-gpt2, checkpoints at steps 1 and 2."""
    out = tmp_path_factory.mktemp("saved") / "run"
    assert cli.main(["train", "--out", str(out), "--steps", "2", "--checkpoint-every", "1", *QUICK]) == 0
    assert [p.name for p in checkpoint.complete_checkpoints(out)] == ["step-000001", "step-000002"]
    return out


@pytest.fixture
def run_copy(saved_run, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(saved_run, copy)
    return copy


# --- 1. data files (Python API: ValueError naming the file, the line or field, and the fix) -----
DATA_CASES = {
    # id: (file name, content, words the one-line error must hold)
    "empty-jsonl": ("d.jsonl", "", ("is empty", "at least one row")),
    "blank-lines-only": ("d.jsonl", "\n  \n\n", ("is empty",)),
    "empty-csv": ("d.csv", "", ("is empty",)),
    "csv-header-only": ("d.csv", "instruction,input,output\n", ("no rows",)),
    "truncated-json-line": ("d.jsonl", jsonl(GOOD) + '{"instruction": "Name a', ("line 2", "not valid JSON")),
    "not-json-at-all": ("d.jsonl", "instruction: hello\n", ("line 1", "not valid JSON")),
    "missing-output-column": ("d.jsonl", jsonl({"instruction": "Hi."}), ("output", "columns=")),
    "csv-missing-column": ("d.csv", "prompt,response\nHi,Hello\n", ("no column for instruction", "columns=")),
    "output-is-a-number": ("d.jsonl", jsonl({"instruction": "Add 2 and 3.", "output": 5}),
                           ("line 1", "'output' must be text", "int")),
    "instruction-is-a-list": ("d.jsonl", jsonl({"instruction": ["a", "b"], "output": "x"}),
                              ("'instruction' must be text", "list")),
    "input-is-a-mapping": ("d.jsonl", jsonl({"instruction": "Hi.", "input": {"a": 1}, "output": "x"}),
                           ("'input' must be text",)),
    "empty-reference": ("d.jsonl", jsonl(GOOD, {"instruction": "Say nothing.", "output": ""}),
                        ("line 2", "empty field 'output'")),
    "blank-reference": ("d.jsonl", jsonl({"instruction": "Hi.", "output": "   "}), ("empty field 'output'",)),
    "empty-instruction-csv": ("d.csv", "instruction,output\n,Blue\n", ("line 2", "'instruction'")),
    "latin1-bytes-jsonl": ("d.jsonl", '{"instruction": "Caf\xe9?", "output": "Oui."}\n'.encode("latin-1"),
                           ("line 1", "not UTF-8", "iconv")),
    "latin1-bytes-csv": ("d.csv", "instruction,output\nCaf\xe9?,Oui\n".encode("latin-1"), ("line 2", "not UTF-8")),
    "binary-file": ("d.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", ("not UTF-8",)),
    "unsupported-extension": ("d.txt", "Name a colour.\tBlue.\n", ("unsupported type", ".jsonl")),
    "json-not-records": ("d.json", "42", ("could not be read as JSON",)),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_file_is_one_clear_error(case, tmp_path):
    name, content, needles = DATA_CASES[case]
    path = write(tmp_path / name, content)
    with pytest.raises(ValueError) as info:
        load_examples(str(path))
    message = str(info.value)
    assert "\n" not in message.strip(), message
    assert str(path) in message, message
    for needle in needles:
        assert needle.lower() in message.lower(), f"{needle!r} not in {message!r}"


def test_missing_data_file_and_folder_are_clear(tmp_path):
    for source in (tmp_path / "nope.jsonl", tmp_path):
        with pytest.raises((ValueError, FileNotFoundError), match="does not exist|bundled"):
            load_examples(str(source))


def test_a_column_map_to_a_missing_column_names_it(tmp_path):
    path = write(tmp_path / "d.jsonl", jsonl({"prompt": "Hi.", "response": "Hello."}))
    with pytest.raises(ValueError, match=r"column 'answer'.*\['prompt', 'response'\]"):
        load_examples(str(path), columns={"instruction": "prompt", "output": "answer"})


# --- 2. the CLI: values, config files, runs (exit code 2, one error line) -----------------------
def _config_file(tmp_path: Path, name: str, content) -> Path:
    return write(tmp_path / name, content)


CLI_CASES = {
    # id: (argv builder (tmp_path, saved_run) -> argv, words the error line must hold)
    "steps-negative": (lambda t, r: ["train", "--out", t / "o", "--steps", "-1", *TINY], ("--steps", ">= 1")),
    "steps-zero": (lambda t, r: ["train", "--out", t / "o", "--steps", "0", *TINY], ("--steps", ">= 1")),
    "steps-not-a-number": (lambda t, r: ["train", "--out", t / "o", "--steps", "ten"], ("--steps", "'ten'")),
    "lr-negative": (lambda t, r: ["train", "--out", t / "o", "--lr=-1e-4"], ("lr=-0.0001", "out of range")),
    "lr-absurd": (lambda t, r: ["train", "--out", t / "o", "--lr", "50"], ("lr=50.0", "(0.0, 1.0]")),
    "lr-infinite": (lambda t, r: ["train", "--out", t / "o", "--lr", "inf"], ("lr=inf", "finite")),
    "kl-nan": (lambda t, r: ["train", "--out", t / "o", "--kl-coef", "nan"], ("kl_coef=nan", "finite")),
    "lr-not-a-number": (lambda t, r: ["train", "--out", t / "o", "--lr", "fast"], ("--lr", "a number")),
    "temperature-zero": (lambda t, r: ["train", "--out", t / "o", "--temperature", "0"], ("temperature=0.0",)),
    "top-p-above-one": (lambda t, r: ["train", "--out", t / "o", "--top-p", "1.5"], ("top_p=1.5", "(0.0, 1.0]")),
    "k-zero": (lambda t, r: ["train", "--out", t / "o", "--samples-per-prompt", "0"],
               ("samples_per_prompt=0", ">= 1")),
    "max-new-tokens-absurd": (lambda t, r: ["train", "--out", t / "o", "--max-new-tokens", "10000000"],
                              ("max_new_tokens=10000000", "at most")),
    "lora-rank-fraction": (lambda t, r: ["train", "--out", t / "o", "--lora-r", "2.5"], ("--lora-r", "whole number")),
    "unknown-reward": (lambda t, r: ["train", "--out", t / "o", "--reward-weights", '{"bogus": 1}'],
                       ("bogus", "known:")),
    "reward-weight-text": (lambda t, r: ["train", "--out", t / "o", "--reward-weights", '{"semantic": "lots"}'],
                           ("reward_weights", "mapping of name to number")),
    "config-unknown-key": (lambda t, r: ["train", "--out", t / "o", "--config",
                                         _config_file(t, "c.yaml", "lr: 1e-4\nlearning_rate: 1e-4\n")],
                           ("learning_rate", "known fields")),
    "config-wrong-type": (lambda t, r: ["train", "--out", t / "o", "--config",
                                        _config_file(t, "c.yaml", "lora_r: eight\n")], ("lora_r='eight'", "whole number")),
    "config-bool-for-int": (lambda t, r: ["train", "--out", t / "o", "--config",
                                          _config_file(t, "c.json", '{"lora_r": true}')], ("lora_r=True",)),
    "config-a-list": (lambda t, r: ["train", "--out", t / "o", "--config", _config_file(t, "c.yaml", "- lr\n- 1\n")],
                      ("must hold a mapping",)),
    "config-broken-json": (lambda t, r: ["train", "--out", t / "o", "--config", _config_file(t, "c.json", '{"lr": ')],
                           ("could not be parsed",)),
    "config-missing": (lambda t, r: ["train", "--out", t / "o", "--config", t / "none.yaml"], ("does not exist",)),
    "config-latin1": (lambda t, r: ["train", "--out", t / "o", "--config",
                                    _config_file(t, "c.yaml", "model: caf\xe9\n".encode("latin-1"))],
                      ("c.yaml", "not UTF-8", "save it as UTF-8")),
    "dataset-missing": (lambda t, r: ["train", "--out", t / "o", "--dataset", t / "none.jsonl", *QUICK],
                        ("none.jsonl", "does not exist")),
    "dataset-unknown": (lambda t, r: ["train", "--out", t / "o", "--dataset", "nonsense"],
                        ("nonsense does not exist", "no source", "bundled")),
    "dataset-mix-weight": (lambda t, r: ["train", "--out", t / "o", "--dataset", "bundled:0.7,factual:x"],
                           ("'factual'", "positive number")),
    "dataset-columns-not-a-map": (lambda t, r: ["train", "--out", t / "o", "--dataset-columns", "prompt"],
                                  ("dataset_columns must map",)),
    "config-section-unknown": (lambda t, r: ["train", "--out", t / "o", "--config",
                                             _config_file(t, "c.yaml", "samplng: {temperature: 0.8}\n")],
                               ("c.yaml", "Unknown config section 'samplng'")),
    "config-field-in-another-section": (lambda t, r: ["train", "--out", t / "o", "--config",
                                                      _config_file(t, "c.yaml", "reward: {temperature: 0.8}\n")],
                                        ("c.yaml", "no field 'temperature'", "section 'sampling'")),
    "dataset-latin1": (lambda t, r: ["train", "--out", t / "o", *QUICK, "--dataset",
                                     write(t / "d.jsonl", '{"instruction": "\xe9", "output": "x"}\n'.encode("latin-1"))],
                       ("not UTF-8",)),
    "resume-nothing": (lambda t, r: ["train", "--out", t / "empty", "--resume"], ("no checkpoint", "drop --resume")),
    "resume-with-flags": (lambda t, r: ["train", "--out", r, "--resume", "--lr", "1e-3"], ("drop --lr",)),
    "train-over-a-run": (lambda t, r: ["train", "--out", r, "--steps", "3", *TINY], ("already holds a run", "--resume")),
    "resume-fewer-steps": (lambda t, r: ["train", "--out", r, "--resume", "--steps", "1"],
                           ("--steps 1", "pass --steps 2 or more")),
    "sample-n-zero": (lambda t, r: ["sample", "--run", r, "--n", "0"], ("--n", ">= 1")),
    "sample-no-run": (lambda t, r: ["sample", "--run", t / "nowhere"], ("no checkpoint",)),
    "eval-limit-negative": (lambda t, r: ["eval", "--run", r, "--limit", "-5"], ("--limit", ">= 1")),
    "eval-columns-not-a-map": (lambda t, r: ["eval", "--run", r, "--columns", "output=response"],
                               ("--columns", "JSON mapping")),
    "ablate-seeds-zero": (lambda t, r: ["ablate", "--out", t / "ab", "--seeds", "0"], ("--seeds", ">= 1")),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_bad_cli_input_is_one_error_line_and_exit_2(case, tmp_path, saved_run, capsys):
    build, needles = CLI_CASES[case]
    before = fingerprint(saved_run)
    code, err = run_cli(capsys, build(tmp_path, saved_run))
    assert_one_error_line(code, err, needles)
    assert fingerprint(saved_run) == before  # the saved run is untouched
    assert not (tmp_path / "o").exists()  # a refused run writes nothing


# --- 3. checkpoints: damaged, tampered, from another model or config ----------------------------
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


class Evil:  # unpickling this would create a marker file
    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _pickle_payload(ckpt: Path) -> None:
    Evil.marker = str(ckpt / "PWNED")
    torch.save({"generator": Evil(), "discriminator": {}}, ckpt / "optimizers.pt")


CKPT = "checkpoints/step-000002"
CHECKPOINT_CASES = {
    # id: (tamper(latest checkpoint folder), words the error line must hold)
    "truncated-adapter": (lambda c: _truncate(c / "generator/adapter_model.safetensors"),
                          ("generator/adapter_model.safetensors", "damaged", "fall back to step-000001")),
    "truncated-optimizer": (lambda c: _truncate(c / "optimizers.pt"), ("optimizers.pt", "damaged")),
    "pickle-payload-in-optimizer": (_pickle_payload, ("optimizers.pt", "damaged")),
    "garbage-head": (lambda c: write(c / "head.safetensors", b"not a tensor file"), ("head.safetensors",)),
    "state-not-json": (lambda c: write(c / "state.json", "{step: 2"), ("state.json",)),
    "state-step-edited": (lambda c: _edit_json(c / "state.json", step=7), ("state.json", "says step 7")),
    "state-step-a-path": (lambda c: _edit_json(c / "state.json", step="../../x"), ("state.json", "whole number")),
    "rng-missing": (lambda c: (c / "rng.pt").unlink(), ("rng.pt", "No such file")),
    "history-cut": (lambda c: _truncate(c / "history.jsonl"), ("history.jsonl",)),
    "history-duplicated-step": (lambda c: write(c / "history.jsonl", (c / "history.jsonl").read_text() * 2),
                                ("history.jsonl", "steps 1..2 once each")),
    "config-unknown-key": (lambda c: _edit_json(c / "config.json", learning_rate=1), ("config.json", "learning_rate")),
    "config-another-lora-rank": (lambda c: _edit_json(c / "config.json", lora_r=4),
                                 ("generator adapter does not fit", "lora_r=4", "of another shape")),
    "config-another-discriminator": (lambda c: _edit_json(c / "config.json", discriminator_top_layers=1),
                                     ("discriminator adapter does not fit", "unexpected")),
}


@pytest.mark.parametrize("case", list(CHECKPOINT_CASES))
def test_a_damaged_or_foreign_checkpoint_is_one_error_line_and_nothing_is_lost(case, run_copy, capsys):
    tamper, needles = CHECKPOINT_CASES[case]
    tamper(run_copy / CKPT)
    before = fingerprint(run_copy)
    code, err = run_cli(capsys, ["train", "--out", run_copy, "--resume", "--steps", "3"])
    assert_one_error_line(code, err, needles)
    assert fingerprint(run_copy) == before
    assert not (run_copy / CKPT / "PWNED").exists()  # nothing was unpickled


FOREIGN_CASES = {
    # id: (tamper, words): the generator that ``sample`` / ``eval`` load with plain PEFT
    "adapter-of-another-rank": (lambda c: _edit_json(c / "generator/adapter_config.json", r=4),
                                ("generator/", "size mismatch")),
    "checkpoint-of-another-model": (lambda c: _edit_json(c / "config.json", model="smollm2-135m"),
                                    ("generator/", "not found in the base model")),
}


@pytest.mark.parametrize("case", list(FOREIGN_CASES))
def test_a_generator_from_another_model_or_config_is_refused_for_sampling(case, run_copy, capsys):
    tamper, needles = FOREIGN_CASES[case]
    tamper(run_copy / CKPT)
    before = fingerprint(run_copy)
    code, err = run_cli(capsys, ["sample", "--run", run_copy, "--prompt", "Hi", "--max-new-tokens", "2"])
    assert_one_error_line(code, err, ("does not fit its config", "fall back to step-000001", *needles))
    assert fingerprint(run_copy) == before


# --- 4. the disk: read-only or full while saving (simulated: root ignores chmod) --------------
def _fail(err: OSError):
    def raiser(*args, **kwargs):
        raise err
    return raiser


DISK_CASES = {
    # id: (attribute of lab.checkpoint to break, the error, words the error line must hold)
    "disk-full-optimizer": ("torch.save", OSError(errno.ENOSPC, "No space left on device"),
                            ("No space left", "free some disk space", "intact")),
    "read-only-adapter": ("save_file", PermissionError(errno.EACCES, "Permission denied"),
                          ("Permission denied", "writable", "another --out")),
    "read-only-filesystem": ("Path.mkdir", OSError(errno.EROFS, "Read-only file system"),
                             ("Read-only file system",)),
    "disk-full-history": ("_atomic_write", OSError(errno.ENOSPC, "No space left on device"),
                          ("No space left",)),
    "quota": ("torch.save", OSError(errno.EDQUOT, "Disk quota exceeded"), ("quota",)),
}


@pytest.mark.parametrize("case", list(DISK_CASES))
def test_a_failed_checkpoint_write_keeps_the_previous_one(case, run_copy, monkeypatch, capsys):
    target, error, needles = DISK_CASES[case]
    before = fingerprint(run_copy / CKPT)
    owner, _, name = target.rpartition(".")
    where = {"": checkpoint, "torch": checkpoint.torch, "Path": Path}[owner]
    if owner == "Path":  # only the checkpoint's temporary folder fails, not the tests' own folders
        real = Path.mkdir
        monkeypatch.setattr(Path, "mkdir", lambda self, *a, **k: (_fail(error)() if self.name.startswith(".tmp-")
                                                                  else real(self, *a, **k)))
    else:
        monkeypatch.setattr(where, name, _fail(error))
    code, err = run_cli(capsys, ["train", "--out", run_copy, "--resume", "--steps", "3"])
    assert_one_error_line(code, err, ("could not write the checkpoint of step 3", *needles))
    assert fingerprint(run_copy / CKPT) == before  # the previous checkpoint, byte for byte
    left = [p.name for p in (run_copy / "checkpoints").iterdir() if p.name.startswith(".")]
    assert left == [] and not list(run_copy.glob(".*.tmp"))
    monkeypatch.undo()
    assert checkpoint.find(run_copy).name in ("step-000002", "step-000003")
    assert checkpoint.load(__import__("lab").trainer.HybridTrainer, run_copy, verbose=False).step_count >= 2


# --- 5. prompts longer than the context, long references: cut cleanly, documented ---------------
def test_a_prompt_longer_than_the_context_is_cut_from_the_left_and_trains(tmp_path, capsys):
    """Documented: prompts keep their last ``max_prompt_tokens`` tokens (config help), answers
    their first 256 (``lab.generator.MAX_ANSWER_TOKENS``); tiny-gpt2's context is 512."""
    long_prompt = " ".join(f"word{i}" for i in range(3000)) + " Now name a colour."
    long_answer = " ".join(["blue"] * 2000)
    data = write(tmp_path / "long.jsonl", jsonl({"instruction": long_prompt, "output": long_answer}, GOOD))
    out = tmp_path / "o"
    code = cli.main(["train", "--out", str(out), "--steps", "2", *QUICK, "--dataset", str(data),
                     "--max-prompt-tokens", "64"])
    assert code == 0, capsys.readouterr().err
    history = pd.read_json(out / "history.jsonl", lines=True)
    assert list(history["step"]) == [1, 2] and all(math.isfinite(v) for v in history["loss"])


def test_prompt_and_answer_budget_beyond_the_models_context_is_one_error_line(tmp_path, capsys):
    """tiny-gpt2 has 512 positions: 400 prompt tokens + up to 256 answer tokens do not fit."""
    data = write(tmp_path / "long.jsonl", jsonl({"instruction": " ".join(f"w{i}" for i in range(1500)),
                                                 "output": " ".join(["blue"] * 600)}))
    code, err = run_cli(capsys, ["train", "--out", tmp_path / "o", "--steps", "1", *QUICK,
                                 "--dataset", data, "--max-prompt-tokens", "400"])
    assert_one_error_line(code, err, ("max_prompt_tokens", "context"))


def test_a_prompt_cut_to_max_prompt_tokens_keeps_its_end(tiny):
    from lab import generator

    model, tokenizer = tiny
    prompt = " ".join(f"w{i}" for i in range(2000)) + " END"
    got = generator.sample(model, tokenizer, [prompt], max_new_tokens=2, max_prompt_tokens=32, do_sample=False)
    assert got.prompt_len == 32
    assert tokenizer.decode(got.input_ids[0, :got.prompt_len]).endswith("END")


# --- 6. the playground's Save: run names stay inside out_root ------------------------------------
SAVE_NAMES = {
    "parent": ("../escape", "path separator"),
    "nested": ("a/b", "path separator"),
    "absolute": ("/tmp/elsewhere", "path separator"),
    "backslash": ("..\\escape", "path separator"),
    "dot-dot": ("..", "starts with '.'"),
    "hidden": (".hidden", "starts with '.'"),
    "empty": ("", "empty"),
    "spaces-and-symbols": ("my run?*", "characters other than"),
    "too-long": ("x" * 300, "too long"),
}


@pytest.fixture
def panel(tmp_path):
    from lab.ui.widgets import Playground

    return Playground(model="tiny-gpt2", steps=1, out_root=tmp_path / "runs", quick=True)


@pytest.mark.parametrize("case", list(SAVE_NAMES))
def test_playground_save_refuses_a_run_name_that_is_not_a_folder_name(case, panel, tmp_path):
    name, why = SAVE_NAMES[case]
    with pytest.raises(ValueError, match="not a plain folder name") as info:
        panel.save(name=name)
    assert why in str(info.value) and "\n" not in str(info.value)
    assert "not saved" in panel.status.value
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written anywhere


def test_playground_save_under_a_good_name_and_never_over_another_run(panel, tmp_path):
    panel.set(mode="sft", max_new_tokens=4).run(block=True)
    saved = panel.save(name="lr-1e-4")
    assert saved == tmp_path / "runs" / "lr-1e-4" and (saved / "history.csv").is_file()
    before = fingerprint(saved)
    with pytest.raises(ValueError, match="already exists; choose another run name"):
        panel.save(name="lr-1e-4")
    assert fingerprint(saved) == before


def test_playground_save_on_a_full_disk_says_so_in_the_status_line(panel, tmp_path, monkeypatch):
    panel.set(mode="sft", max_new_tokens=4).run(block=True)
    monkeypatch.setattr(checkpoint, "save_file", _fail(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(OSError, match="No space left on device; free some disk space"):
        panel.save(name="full")
    assert "not saved" in panel.status.value and "No space left" in panel.status.value


def test_config_api_errors_are_value_errors_with_one_line():
    for bad in ({"steps": 3}, {"lr": -1.0}, {"lora_r": "8x"}, {"reward_weights": {"semantic": float("nan")}}):
        with pytest.raises(ValueError) as info:
            HybridConfig.from_dict(bad)
        assert "\n" not in str(info.value)
