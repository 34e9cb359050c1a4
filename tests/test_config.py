"""HybridConfig validation, sections, presets and file round-trips."""

import dataclasses
import json
import re
from pathlib import Path

import pytest

from lab.config import SECTIONS, HybridConfig, preset
from lab.data import load_examples
from lab.readers import config_text

ROOT = Path(__file__).resolve().parent.parent


def coerce(name, value):
    return config_text.coerce(HybridConfig, name, value)


def read_file(path):
    return config_text.read_file(HybridConfig, path)


@pytest.mark.parametrize("field, value", [
    ("mode", "ppo"),
    ("lambda_schedule", "cosine"),
    ("baseline", "mean"),
    ("reward_source", "human"),
    ("discriminator_loss", "hinge"),
    ("lora_r", 0),
    ("lora_r", 2.5),
    ("prompts_per_step", 0),
    ("max_new_tokens", -1),
    ("lr", 0.0),
    ("lr_discriminator", -1e-4),
    ("temperature", 0),
    ("top_p", 1.5),
    ("lora_dropout", 1.0),
    ("ema_decay", 1.0),
    ("reward_mix", 2.0),
    ("lambda_rl", -0.1),
    ("kl_coef", float("nan")),
    ("entropy_coef", -1),
    ("max_grad_norm", -1),
    ("checkpoint_every", -5),
    ("discriminator_top_layers", -1),
    ("seed", "zero"),
])
def test_bad_value_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        HybridConfig(**{field: value})


def test_loo_needs_two_samples():
    with pytest.raises(ValueError, match="samples_per_prompt >= 2"):
        HybridConfig(baseline="loo", samples_per_prompt=1)


def test_adversarial_mode_needs_another_baseline():
    with pytest.raises(ValueError, match="baseline"):
        HybridConfig(baseline="discriminator_biased", reward_source="discriminator")


@pytest.mark.parametrize("weights, message", [
    ({"semantics": 1.0}, "unknown reward"),
    ({}, "non-empty"),
    ({"semantic": 0.0}, "all zero"),
    ({"semantic": "high"}, "numbers"),
])
def test_bad_reward_weights(weights, message):
    with pytest.raises(ValueError, match=message):
        HybridConfig(reward_weights=weights)


def test_unknown_field_lists_known_ones():
    with pytest.raises(ValueError, match="Unknown config field.*known fields: .*lambda_rl"):
        HybridConfig.from_dict({"lamda_rl": 0.5})


def test_presets_change_only_what_differs():
    quick = preset("quick", mode="sft")
    assert quick.mode == "sft" and quick.max_new_tokens == 16
    assert quick.lr == HybridConfig().lr
    assert preset("bench").samples_per_step == 8
    with pytest.raises(ValueError, match="Unknown preset"):
        preset("huge")


def test_json_and_yaml_round_trip(tmp_path):
    config = HybridConfig(lambda_rl=0.25, reward_weights={"semantic": 1.0, "rouge": 0.5})
    config.save(tmp_path / "c.json")
    assert HybridConfig.load(tmp_path / "c.json") == config
    (tmp_path / "c.yaml").write_text("mode: rl\nbaseline: loo\nsamples_per_prompt: 4\n")
    assert HybridConfig.load(tmp_path / "c.yaml").baseline == "loo"


def test_bad_config_file(tmp_path):
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(ValueError, match="could not be parsed"):
        HybridConfig.load(tmp_path / "c.json")
    with pytest.raises(ValueError, match="does not exist"):
        HybridConfig.load(tmp_path / "missing.yaml")
    (tmp_path / "list.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="mapping"):
        HybridConfig.load(tmp_path / "list.json")


def test_every_field_has_help_text():
    for field in dataclasses.fields(HybridConfig):
        assert len(field.metadata.get("help", "")) > 10, field.name
        config_text.field_kind(HybridConfig, field.name)  # every field's type can be read from text


@pytest.mark.parametrize("field, text, value", [
    ("lr", "1e-4", 1e-4), ("lr", "2E-5", 2e-5), ("lr", ".5", 0.5), ("lr", "3", 3.0), ("lr", 3, 3.0),
    ("lora_r", "16", 16), ("chat_template", "TRUE", True), ("chat_template", "no", False),
    ("chat_template", "0", False), ("chat_template", 1, True), ("discriminator_model", "None", None),
    ("discriminator_model", "gpt2", "gpt2"), ("mode", "rl", "rl"),
    ("reward_weights", '{"semantic": 1}', {"semantic": 1.0}),
    ("reward_weights", "{rouge: 2e-1}", {"rouge": 0.2}), ("reward_weights", {"bleu": "1e-1"}, {"bleu": 0.1}),
])
def test_coerce_reads_text_by_field_type(field, text, value):
    got = coerce(field, text)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("field, text, expected", [
    ("lr", "fast", "number"), ("lr", "", "number"), ("seed", "1.5", "whole number"),
    ("chat_template", "maybe", "true/false"), ("reward_weights", "[1]", "mapping"),
    ("reward_weights", '{"semantic": "high"}', "mapping"),
])
def test_coerce_names_the_field_and_the_expected_type(field, text, expected):
    with pytest.raises(ValueError, match=f"^{field}=.*expected.*{expected}"):
        coerce(field, text)


def test_yaml_numbers_written_as_text_become_numbers(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 2e-4\nlr_discriminator: 1E-3\nchat_template: yes\ndiscriminator_model: null\n"
                    "reward_weights: {semantic: 1e0}\n")
    config = HybridConfig.load(path)
    assert config.lr == 2e-4 and isinstance(config.lr, float) and config.lr_discriminator == 1e-3
    assert config.chat_template is True and config.reward_weights == {"semantic": 1.0}
    assert HybridConfig.from_dict({"lr": "2e-4"}).lr == 2e-4


def test_read_file_returns_only_the_named_fields(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 2e-4\n")
    assert read_file(path) == {"lr": 2e-4}
    path.write_text("lr: 2e-4\nlamda_rl: 1\n")
    with pytest.raises(ValueError, match="c.yaml: Unknown config field.*lamda_rl"):
        read_file(path)
    path.write_text("seed: first\n")
    with pytest.raises(ValueError, match="seed='first': expected a whole number"):
        read_file(path)


# --- sections -------------------------------------------------------------------------------
def test_every_field_is_in_one_known_section_and_the_fields_are_ordered_by_section():
    sections = HybridConfig.sections()
    assert list(sections) == list(SECTIONS)  # every section has fields, in the documented order
    names = [name for group in sections.values() for name in group]
    assert names == [f.name for f in dataclasses.fields(HybridConfig)]  # grouped, no field twice
    assert 6 <= len(sections) <= 9
    listed = re.search(r"sections, in the order of a step: ([a-z, ]+) \(", " ".join(HybridConfig.__doc__.split()))
    assert listed and listed.group(1).replace(",", "").split() == list(SECTIONS)  # the docstring lists them


def test_nested_form_reads_as_the_flat_one(tmp_path):
    nested = {"model": {"model": "tiny-gpt2", "lora_r": "4"}, "sampling": {"temperature": 0.8},
              "reward": {"reward_weights": {"rouge": 1}}, "lr": "2e-4"}
    flat = {"model": "tiny-gpt2", "lora_r": 4, "temperature": 0.8, "reward_weights": {"rouge": 1.0}, "lr": 2e-4}
    assert HybridConfig.from_dict(nested) == HybridConfig.from_dict(flat)
    (tmp_path / "c.yaml").write_text("sampling:\n  max_new_tokens: 12\nobjective: {mode: rl}\n")
    assert read_file(tmp_path / "c.yaml") == {"max_new_tokens": 12, "mode": "rl"}
    config = HybridConfig.load(tmp_path / "c.yaml")
    assert (config.max_new_tokens, config.mode) == (12, "rl")
    config.save(tmp_path / "c.json")  # saved flat, as every existing config.json
    assert "temperature" in json.loads((tmp_path / "c.json").read_text())


@pytest.mark.parametrize("values, message", [
    ({"samplng": {"temperature": 0.8}}, r"Unknown config section 'samplng'; the sections are model, data"),
    ({"reward": {"temperature": 0.8}}, r"section 'reward' has no field 'temperature'; it is in section 'sampling'"),
    ({"sampling": {"temprature": 0.8}}, r"section 'sampling' has no field 'temprature'; its fields: .*temperature"),
    ({"lr": 1e-4, "run": {"lr": 2e-4}}, r"\['lr'\] given twice"),
])
def test_nested_form_errors_say_which_section(values, message):
    with pytest.raises(ValueError, match=message):
        HybridConfig.from_dict(values)


def test_readme_config_table_lists_every_field_under_its_section():
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| section | what it sets | fields |"):].split("\n\n")[0]
    rows = {m.group(1): m.groups()[1:] for m in re.finditer(r"^\| `(\w+)` \| ([^|]+) \| (.+) \|$", table, re.M)}
    assert list(rows) == list(SECTIONS)  # one row per section, in order
    for section, names in HybridConfig.sections().items():
        what, fields = rows[section]
        assert what == SECTIONS[section], f"README row {section!r}: say {SECTIONS[section]!r}"
        assert re.findall(r"`(\w+)`", fields) == list(names), f"README row {section!r}: list {names}"


# --- what needs data is checked where the data loads ----------------------------------------
@pytest.mark.parametrize("dataset, columns, message", [
    ("nonsense", None, "Data file nonsense does not exist, and 'nonsense' is no source"),
    ("bundled:0", None, "must be a positive number"),
    ("bundled", '{"question": "q"}', "dataset_columns must map the kit's fields"),
])
def test_the_dataset_is_checked_where_it_loads_not_in_the_config(dataset, columns, message):
    config = HybridConfig(dataset=dataset, dataset_columns=columns)  # no data code runs here
    with pytest.raises(ValueError, match=message):
        load_examples(config.dataset, columns=config.dataset_columns)
