"""Security (issue 16, item 6): no remote code, no unpickling of files, no path traversal.

1. ``trust_remote_code``: not in ``lab/`` at all, and every model / tokenizer / embedder load
   call the kit makes passes no truthy ``trust_remote_code`` (checked by recording the calls).
2. No unpickling: every ``torch.load`` says ``weights_only=True``; no ``pickle`` / ``joblib`` /
   ``dill`` loads, no ``yaml.load``, ``np.load(allow_pickle=True)``, ``pd.read_pickle``,
   ``eval`` or ``exec`` (an AST scan of ``lab/``); and a checkpoint carrying a pickle payload
   is refused without running it.
3. No path traversal: run names (the playground's Save), ablation arm names and checkpoint
   step numbers cannot leave their folder; a symlinked checkpoint cannot make the kit delete
   files outside the run. (``--out``, ``--config`` and ``--data`` are the user's own choice of
   path, and no config field names a place to write.)
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

import lab
from lab import checkpoint, models
from lab.config import HybridConfig, preset
from lab.runtime import hub
from lab.ui.runs import run_folder

LAB = Path(lab.__file__).resolve().parent
SOURCES = sorted(LAB.rglob("*.py"))


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _name(func: ast.expr) -> str:
    """``torch.load`` for ``torch.load(...)``, ``eval`` for ``eval(...)``, ``?.eval`` for ``f().eval()``."""
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    parts.append(func.id if isinstance(func, ast.Name) else "?")  # "?.eval" for model(...).eval()
    return ".".join(reversed(parts))


def _kw(call: ast.Call, name: str):
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


# --- 1. no remote code ---------------------------------------------------------------------------
def test_no_trust_remote_code_anywhere_in_lab():
    hits = [f"{p.relative_to(LAB)}:{n}" for p in SOURCES
            for n, line in enumerate(p.read_text().splitlines(), 1) if "trust_remote_code" in line]
    assert hits == [], f"trust_remote_code in {hits}: the kit loads no code from model repositories"


def test_every_load_call_passes_no_trust_remote_code(monkeypatch, tiny):
    """Record the keyword arguments of every loader the kit calls, for a Hub model, the bundled
    model and the embedder; none may pass ``trust_remote_code``."""
    import sentence_transformers
    import transformers

    calls = []

    def record(kind, result=None):
        def fake(*args, **kwargs):
            calls.append((kind, args, kwargs))
            if result is None:
                raise OSError(f"{kind}: stopped by the test")
            return result
        return staticmethod(fake)

    _, tokenizer = tiny
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", record("tokenizer", tokenizer))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", record("model"))
    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", lambda *a, **k: calls.append(("embedder", a, k)))
    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: True)
    monkeypatch.setattr(hub, "in_hf_cache", lambda *a, **k: False)
    for name in ("someone/remote-code-model", "smollm2-135m"):
        with pytest.raises((ValueError, OSError)):
            models.load(name, device="cpu", verbose=False)
    models.load_embedder.__wrapped__("auto")
    kinds = {kind for kind, _, _ in calls}
    assert {"tokenizer", "model", "embedder"} <= kinds, calls
    for kind, args, kwargs in calls:
        assert not kwargs.get("trust_remote_code"), (kind, args, kwargs)


# --- 2. no unpickling ----------------------------------------------------------------------------
UNSAFE = {"pickle.load", "pickle.loads", "pickle.Unpickler", "cPickle.load", "joblib.load", "dill.load",
          "dill.loads", "cloudpickle.load", "cloudpickle.loads", "yaml.load", "yaml.unsafe_load",
          "yaml.full_load", "pd.read_pickle", "pandas.read_pickle", "torch.jit.load", "eval", "exec",
          "shelve.open", "marshal.loads", "marshal.load"}


def test_no_unpickling_calls_in_lab():
    found = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(), str(path))
        for call in _calls(tree):
            name = _name(call.func)
            where = f"{path.relative_to(LAB)}:{call.lineno} {name}"
            if name in UNSAFE:
                found.append(where)
            if name.endswith("torch.load") or name == "torch.load":
                value = _kw(call, "weights_only")
                if not (isinstance(value, ast.Constant) and value.value is True):
                    found.append(where + " without weights_only=True")
            if name in ("np.load", "numpy.load"):
                value = _kw(call, "allow_pickle")
                if value is not None and not (isinstance(value, ast.Constant) and value.value is False):
                    found.append(where + " with allow_pickle")
    assert found == []


def test_the_scan_would_see_an_unsafe_load():
    """The AST scan above is not vacuous: it finds both kinds of call in a sample."""
    tree = ast.parse("import torch, pickle\nx = torch.load('f')\ny = pickle.loads(b'')\n"
                     "z = torch.load('f', weights_only=True)\n")
    names = [_name(c.func) for c in _calls(tree)]
    assert names.count("torch.load") == 2 and "pickle.loads" in names
    assert [_name(c.func) for c in _calls(ast.parse("eval('1')\nmodel().eval()"))] == ["eval", "?.eval", "model"]
    unsafe = [c for c in _calls(tree) if _name(c.func) == "torch.load" and _kw(c, "weights_only") is None]
    assert len(unsafe) == 1


class Payload:
    """Unpickling this creates ``marker``: what a malicious "checkpoint" would do."""

    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved 1-step sft run of tiny-gpt2."""
    from lab.trainer import HybridTrainer

    out = tmp_path_factory.mktemp("security") / "run"
    trainer = HybridTrainer(preset("quick", model="tiny-gpt2", device="cpu", mode="sft", max_new_tokens=4,
                                   reward_weights={"perplexity": 1.0}), verbose=False)
    trainer.step()
    trainer.save(out)
    return out


@pytest.mark.parametrize("file", ["optimizers.pt", "rng.pt"])
def test_a_checkpoint_with_a_pickle_payload_is_refused_and_never_run(file, saved, tmp_path):
    from lab.trainer import HybridTrainer

    run = tmp_path / "run"
    shutil.copytree(saved, run)
    ckpt = checkpoint.find(run)
    Payload.marker = str(tmp_path / "PWNED")
    torch.save({"generator": Payload(), "discriminator": Payload(), "torch": Payload()}, ckpt / file)
    with pytest.raises(ValueError, match=rf"{file}: UnpicklingError"):
        HybridTrainer.resume(run, verbose=False)
    assert not (tmp_path / "PWNED").exists()


def test_weights_are_safetensors_and_state_is_json(saved):
    """What a checkpoint holds: tensors as safetensors, state as JSON; only the two ``.pt`` files
    (optimizer and RNG states: plain tensors and numbers) go through ``torch.load(weights_only=True)``."""
    ckpt = checkpoint.find(saved)
    files = {str(p.relative_to(ckpt)) for p in ckpt.rglob("*") if p.is_file()}
    assert {f for f in files if f.endswith(".pt")} == {"optimizers.pt", "rng.pt"}
    assert {f for f in files if f.endswith((".bin", ".pkl", ".pickle", ".joblib"))} == set()
    assert "generator/adapter_model.safetensors" in files and "head.safetensors" in files


# --- 3. no path traversal ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../up", "../../etc/cron.d/x", "a/b", "/abs/path", "..", ".", "x/../../y",
                                  "..\\up", "C:\\x", "~/home", "", " ", ".hidden"])
def test_a_run_name_cannot_leave_its_folder(name, tmp_path):
    with pytest.raises(ValueError, match="not a plain folder name"):
        run_folder(tmp_path, name)


def test_run_folder_results_stay_inside_the_root(tmp_path):
    for name in ("lr-1e-4", "hybrid_k2", "a.b", "run+kl"):
        path = run_folder(tmp_path, name).resolve()
        assert path.parent == tmp_path.resolve()


def test_playground_save_refuses_a_traversing_name(tmp_path):
    from lab.ui.widgets import Playground

    panel = Playground(model="tiny-gpt2", steps=1, quick=True, out_root=tmp_path / "runs")
    with pytest.raises(ValueError, match="path separator"):
        panel.save(name="../../outside")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden", "x.y"])
def test_an_arms_file_cannot_name_an_arm_that_leaves_the_report_folder(name, tmp_path):
    from lab.experiments import arms

    path = tmp_path / "arms.yaml"
    path.write_text(json.dumps({name: {"lr": 1e-3}}))
    with pytest.raises(ValueError, match="a name is letters, digits"):
        arms.read_arms_file(path)


def test_ablation_arms_given_on_the_command_line_must_be_known(tmp_path):
    from lab.experiments import ablation

    with pytest.raises(ValueError, match="(?i)unknown arm"):
        ablation.settings_for("quick", arms=["../../evil"])


def test_a_tampered_step_number_cannot_name_a_folder(saved, tmp_path):
    """The checkpoint folder name comes from the step count, an int read back from JSON and checked."""
    from lab.trainer import HybridTrainer

    run = tmp_path / "run"
    shutil.copytree(saved, run)
    state = checkpoint.find(run) / "state.json"
    state.write_text(json.dumps({**json.loads(state.read_text()), "step": "../../../escaped"}))
    with pytest.raises(ValueError, match="whole number"):
        HybridTrainer.resume(run, verbose=False)


def test_a_symlinked_checkpoint_never_makes_the_kit_delete_outside_the_run(saved, tmp_path):
    """``checkpoints/step-000000`` -> a folder outside: the kit rotates old checkpoints away,
    but it deletes only what is inside the run."""
    from lab.trainer import HybridTrainer

    run = tmp_path / "run"
    shutil.copytree(saved, run)
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    (outside / "state.json").write_text("{}")
    (run / "checkpoints" / "step-000000").symlink_to(outside, target_is_directory=True)
    trainer = HybridTrainer.resume(run, verbose=False)
    for _ in range(3):  # three more checkpoints: step-000000 is rotated out
        trainer.step()
        trainer.save(run)
    assert (outside / "keep.txt").read_text() == "mine"
    assert [p.name for p in checkpoint.complete_checkpoints(run)] == ["step-000003", "step-000004"]


def test_no_config_field_names_a_place_to_write():
    """A config file (or a tampered checkpoint's config.json) can choose models and data to read,
    never where the kit writes: the run folder is --out (or the playground's out_root)."""
    text_fields = {f.name for f in dataclasses.fields(HybridConfig) if "str" in str(f.type)}
    writes = {name for name in text_fields if re.search(r"out|dir|path|folder|save|log", name)}
    assert writes == set(), writes
