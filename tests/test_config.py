"""HybridConfig validation, presets and file round-trips."""

import dataclasses
import json

import pytest

from lab.config import HybridConfig, coerce, field_kind, preset, read_file


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
        field_kind(field.name)  # every field's type can be read from text


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
