"""The playground driven headless on tiny-gpt2: config from widgets, Run, Stop, run list, Save."""

import threading

import pytest

from lab.config import BASELINES, REWARD_NAMES, HybridConfig
from lab.data import load_examples
from lab.ui.widgets import Playground

TINY = dict(model="tiny-gpt2", quick=True, device="cpu", max_new_tokens=6, redraw_every=0)
WEIGHTS = {"rouge": 1.0, "length": 0.5}  # cheap rewards: no embedder to load


def make(**kwargs):
    return Playground(examples=load_examples("bundled", "train", limit=8), **{**TINY, **kwargs})


@pytest.fixture(scope="module")
def played():
    """A panel after two runs: one started by clicking Run (2 steps), one of 5 steps that a
    callback stops after its first step."""
    panel = make(steps=2)
    panel.set(reward_weights=WEIGHTS)
    panel.run_button.click()
    first = panel.wait(timeout=600)
    panel.set(lambda_rl=0.0, steps=5)
    panel.callbacks.append(lambda trainer, row: panel.stop() if row["step"] == 1 else None)
    second = panel.run(block=True)
    return panel, first, second


def test_config_is_what_the_widgets_show():
    panel = make()
    panel.set(lambda_rl=1.25, lambda_schedule="linear", lambda_warmup_steps=7, lora_r=16,
              lora_alpha=32, lora_dropout=0.1, lr=3e-4, prompts_per_step=3, samples_per_prompt=4,
              max_new_tokens=12, baseline="loo", reward_source="mix", reward_mix=0.25,
              kl_coef=0.05, entropy_coef=0.01, mode="hybrid", seed=7,
              reward_weights={"semantic": 0.5, "rouge": 0.25})
    panel.controls["model"].value = " tiny-gpt2 "
    config = panel.config()
    assert isinstance(config, HybridConfig)
    assert (config.lambda_rl, config.lambda_schedule, config.lambda_warmup_steps) == (1.25, "linear", 7)
    assert (config.lora_r, config.lora_alpha, config.lora_dropout) == (16, 32, 0.1)
    assert config.lr == pytest.approx(3e-4)
    assert (config.prompts_per_step, config.samples_per_prompt, config.max_new_tokens) == (3, 4, 12)
    assert (config.baseline, config.reward_source, config.reward_mix) == ("loo", "mix", 0.25)
    assert (config.kl_coef, config.entropy_coef, config.seed, config.model) == (0.05, 0.01, 7, "tiny-gpt2")
    assert config.reward_weights == {"semantic": 0.5, "rouge": 0.25}
    assert config.device == "cpu"  # a field without a widget keeps the panel's base value
    assert set(panel.weights) == set(REWARD_NAMES)
    panel.weights["bleu"].value = 0.3  # moving a slider by hand counts too
    assert panel.config().reward_weights["bleu"] == 0.3


def test_config_has_the_experiment_knobs():
    panel = make()
    panel.set(baseline="group", scale_rewards=True, loss_type="ppo", ppo_epochs=3, clip_range=0.1,
              sft_schedule="chord", mu=0.7, sft_token_weight="phi", reference_in_group=True,
              per_prompt_switch=True, switch_threshold=0.3, sampler="beam", num_beams=3)
    config = panel.config()
    assert (config.baseline, config.scale_rewards) == ("group", True)
    assert (config.loss_type, config.ppo_epochs, config.clip_range) == ("ppo", 3, 0.1)
    assert (config.sft_schedule, config.mu, config.sft_token_weight) == ("chord", 0.7, "phi")
    assert (config.reference_in_group, config.per_prompt_switch, config.switch_threshold) == (True, True, 0.3)
    assert (config.sampler, config.num_beams) == ("beam", 3)
    assert panel.controls["lambda_rl"].disabled  # mu sets the mix now, not lambda
    assert not panel.controls["ppo_epochs"].disabled and not panel.controls["num_beams"].disabled
    for baseline in BASELINES:  # all five
        assert panel.set(baseline=baseline).config().baseline == baseline
    panel.set(mode="selfplay", sft_schedule="none", per_prompt_switch=False, reference_in_group=False,
              sampler="nucleus", loss_type="reinforce", selfplay_refresh=4)
    config = panel.config()
    assert (config.mode, config.selfplay_refresh, config.loss_type) == ("selfplay", 4, "reinforce")
    assert panel.controls["ppo_epochs"].disabled and panel.controls["clip_range"].disabled
    assert not panel.controls["selfplay_refresh"].disabled and panel.controls["mu"].disabled
    panel.controls["scale_rewards"].value = False  # clicking a checkbox counts too
    assert panel.config().scale_rewards is False
    panel.set(mode="hybrid", loss_type="dapo", epsilon_high=0.28, importance_sampling_level="sequence")
    assert (panel.config().loss_type, panel.config().epsilon_high) == ("dapo", 0.28)
    assert panel.config().importance_sampling_level == "sequence"
    panel.set(mode="rl", loss_type="reinforce", importance_sampling_level="token", baseline="loo",
              discriminator_loss="bradley_terry", naturalness_weight=0.5)
    assert (panel.config().discriminator_loss, panel.config().naturalness_weight) == ("bradley_terry", 0.5)
    assert panel.controls["distill_teacher"].disabled and not panel.controls["naturalness_weight"].disabled
    panel.set(mode="distill", naturalness_weight=0.0, discriminator_loss="mse", distill_teacher="base")
    assert (panel.config().mode, panel.config().distill_teacher) == ("distill", "base")


def test_the_discriminator_sampling_and_data_knobs_reach_the_config():
    panel = make()
    panel.set(discriminator_loss="mse+contrastive", contrastive_weight=0.5, discriminator_aux_weight=0.3,
              discriminator_lora_r=4, discriminator_warmup_steps=10, discriminator_steps=2, lr_discriminator=1e-3,
              freeze_discriminator_after=5, perplexity_form="sketch", max_grad_norm=0.5, temperature=0.9, top_p=0.8,
              dataset="factual")
    config = panel.config()
    assert (config.discriminator_loss, config.contrastive_weight, config.discriminator_aux_weight) == \
        ("mse+contrastive", 0.5, 0.3)
    assert (config.discriminator_lora_r, config.discriminator_warmup_steps, config.discriminator_steps) == (4, 10, 2)
    assert config.lr_discriminator == pytest.approx(1e-3) and config.freeze_discriminator_after == 5
    assert (config.perplexity_form, config.max_grad_norm, config.temperature, config.top_p, config.dataset) == \
        ("sketch", 0.5, 0.9, 0.8, "factual")
    assert config.discriminator_model is None  # the empty box: D shares the generator's backbone
    assert panel.set(discriminator_model=" tiny-gpt2 ").config().discriminator_model == "tiny-gpt2"


def test_tabs_follow_the_config_sections():
    panel = make()
    knobs = panel.widget.children[1]  # the tabs of knobs: one per config section that has controls
    sections = [s for s, names in HybridConfig.sections().items() if set(names) & set(panel.controls)]
    assert list(knobs.titles) == [s.capitalize() for s in sections]
    for tab, section in zip(knobs.children, sections):
        shown = list(tab.children)
        expected = [panel.controls[n] for n in (("steps",) if section == "run" else ()) + HybridConfig.sections()[section]
                    if n in panel.controls]
        if section == "reward":  # the reward weights open the reward tab
            expected = [*panel.weights.values(), *expected]
        assert shown == expected, section
    assert {"Sampling", "Reward", "Discriminator", "Objective", "Schedule", "Run"} <= set(knobs.titles)
    panel.set(discriminator_loss="mse+contrastive", freeze_discriminator_after=5)
    config = panel.config()
    assert (config.discriminator_loss, config.freeze_discriminator_after) == ("mse+contrastive", 5)


def test_defaults_are_quick_and_valid():
    panel = Playground(model="tiny-gpt2", quick=True)
    config = panel.config()
    assert (config.prompts_per_step, config.samples_per_prompt, config.max_new_tokens) == (2, 2, 16)
    assert panel.controls["steps"].value == 5 and config.model == "tiny-gpt2"
    assert "ready" in panel.status.value


def test_invalid_settings_show_in_the_status_line_instead_of_raising():
    panel = make()
    panel.set(baseline="loo", samples_per_prompt=1)
    assert panel.config() is None
    assert "samples_per_prompt" in panel.status.value
    assert panel.run() is None and not panel.runs
    panel.set(reward_weights={})
    panel.set(samples_per_prompt=2)
    assert panel.config() is None and "all zero" in panel.status.value
    with pytest.raises(ValueError, match="not a playground control"):
        panel.set(lambda_rll=0.5)


def test_run_gives_the_requested_steps_and_redraws(played):
    panel, first, _ = played
    assert len(first.history) == 2 and list(first.history["step"]) == [1, 2]
    assert not first.stopped and first.config.reward_weights == WEIGHTS
    assert bytes(panel.dashboard.value).startswith(b"\x89PNG")
    assert "completion" in panel.samples_view.value
    assert not panel.run_button.disabled and panel.stop_button.disabled


def test_stop_ends_the_run_early_and_keeps_its_rows(played):
    panel, _, second = played
    assert second.stopped and 1 <= len(second.history) < 5
    assert panel.history is not None and len(panel.history) == len(second.history)
    assert "stopped" in panel.status.value


def test_stop_keeps_every_row_done_so_far():
    """Stop clicked (from the main thread) while step 2's callback runs: the run ends after step 2
    and its history holds exactly the rows the callbacks saw, values included."""
    panel = make(steps=5)
    panel.set(reward_weights=WEIGHTS)
    seen, at_step_2, go_on = [], threading.Event(), threading.Event()

    def hold_at_step_2(trainer, row):
        seen.append(dict(row))
        if row["step"] == 2:
            at_step_2.set()
            go_on.wait(timeout=120)

    panel.callbacks.append(hold_at_step_2)
    panel.run_button.click()
    assert at_step_2.wait(timeout=600)
    panel.stop_button.click()
    go_on.set()
    run = panel.wait(timeout=600)
    assert run.stopped and list(run.history["step"]) == [1, 2] == [row["step"] for row in seen]
    for kept, row in zip(run.history.to_dict("records"), seen):
        assert kept["reward"] == row["reward"] and kept["loss"] == row["loss"]
    assert len(panel.history) == 2 and "stopped" in panel.status.value


def test_a_second_run_while_one_is_going_starts_nothing():
    panel = make(steps=2)
    panel.set(reward_weights=WEIGHTS)
    at_step_1, go_on = threading.Event(), threading.Event()
    panel.callbacks.append(lambda trainer, row: (at_step_1.set(), go_on.wait(timeout=120)) if row["step"] == 1
                           else None)
    panel.run_button.click()
    assert at_step_1.wait(timeout=600)
    first = panel._thread
    panel.run_button.click()  # a second click (the button is disabled, but a click event may still come)
    assert panel.run() is None  # and a second call from code
    assert panel._thread is first
    assert sum(t.name == "lab-playground" and t.is_alive() for t in threading.enumerate()) == 1
    assert "in progress" in panel.status.value
    go_on.set()
    run = panel.wait(timeout=600)
    assert len(panel.runs) == 1 and list(run.history["step"]) == [1, 2] and not run.stopped


def test_run_list_and_comparison_have_one_line_per_run(played):
    panel, first, second = played
    assert panel.runs == [first, second]
    legend = panel.compare_figure("reward").axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["lambda_rl=0.5", "lambda_rl=0.0"]
    assert bytes(panel.compare_view.value).startswith(b"\x89PNG")
    assert panel.runs_view.value.count("<tr") == 1 + 2  # header + one row per run


def test_save_writes_the_run_and_the_comparison(played, tmp_path):
    panel, _, second = played
    out = panel.save(tmp_path / "saved")
    for name in ("config.json", "history.csv", "samples.csv", "dashboard.png", "compare.png",
                 "runs.csv", "runs.json"):
        assert (out / name).is_file(), name
    assert any((out / "checkpoints").iterdir())
    assert str(out.resolve()) in panel.status.value
    panel.out_root = tmp_path
    default = panel.save()
    assert default.parent == panel.out_root and default.name.startswith("playground-")


def test_a_default_run_shows_both_discriminator_panels_with_data(played):
    from lab.ui import plots

    _, first, _ = played  # the panel's defaults: the discriminator is trained and read
    titles = [ax.get_title() for ax in plots.dashboard(first.history).axes]
    panels = [t for t in titles if t.startswith(("Discriminator", "Predicted vs true"))]
    assert len(panels) == 2 and not [t for t in panels if "(no data)" in t], titles
    panel = played[0]  # the note under the dashboard names the empty panels (the browser test reads it)
    assert "Discriminator" not in panel.dashboard_note.value and "Predicted" not in panel.dashboard_note.value


def test_what_if_compares_the_panel_with_one_change_over_seeds_and_gives_a_paired_interval():
    panel = make(steps=2)
    panel.set(reward_weights=WEIGHTS, baseline="ema", discriminator_warmup_steps=0)
    assert panel.what_if("lambda_rl", block=True) is None and "knob=value" in panel.status.value
    table = panel.what_if("lr=5e-2", seeds=2, eval_limit=4, block=True)
    assert list(table["metric"]) == ["greedy_semantic", "greedy_rouge_l"]
    semantic = table.iloc[0]
    assert (semantic["n_seeds"], semantic["n_prompts"]) == (2, 4)
    assert semantic["boot_low"] <= semantic["diff"] <= semantic["boot_high"] and semantic["mde"] >= 0
    assert "b - a =" in panel.what_if_view.value and "lr" in panel.what_if_view.value
    assert "done" in panel.status.value and not panel.run_button.disabled


def test_a_greyed_out_knob_cannot_make_the_config_invalid():
    panel = make()
    panel.set(loss_type="grpo", importance_sampling_level="sequence").set(loss_type="reinforce")
    assert panel.controls["importance_sampling_level"].disabled  # the clipped losses' knob, greyed out ...
    assert panel.config().importance_sampling_level == "token"  # ... and read as its default
    from lab.experiments import whatif

    a = panel.config()
    with pytest.raises(ValueError, match="dataset differ"):
        whatif.expected_minutes(a, a.replace(dataset="factual"))
