"""lab.ui.plots on a synthetic history: labelled axes, missing series, run labels, PNG output."""

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from lab.experiments import figures  # noqa: E402
from lab.ui import plots  # noqa: E402
from lab.config import HybridConfig  # noqa: E402

PANELS = [plots.rewards, plots.losses, plots.discriminator, plots.discriminator_scatter,
          plots.lambda_schedule, plots.length_diversity, plots.timing]
NO_SFT = ["reward", "reward_std", "reward_semantic", "reward_perplexity", "reward_rouge",
          "d_pred", "d_loss", "d_mse", "d_contrastive", "d_accuracy", "baseline", "adv_mean",
          "adv_std", "loss_rl", "kl", "entropy", "time_reward", "time_disc"]


def make_history(steps: int = 12, mode: str = "hybrid", seed: int = 0) -> pd.DataFrame:
    """Every column the trainer writes, random but plausible."""
    rng = np.random.default_rng(seed)
    u = lambda low=0.0, high=1.0: rng.uniform(low, high, steps)  # noqa: E731
    parts = {"reward_semantic": u(0.2, 0.8), "reward_perplexity": u(0.1, 0.5), "reward_rouge": u(0, 0.4)}
    reward = sum(w * p for w, p in zip((0.6, 0.3, 0.1), parts.values()))
    loss_sft, loss_rl = u(2, 3), u(-0.3, 0.3)
    times = {"time_sample": u(1, 2), "time_reward": u(0.2, 0.5), "time_disc": u(0.3, 0.6),
             "time_gen": u(0.5, 1)}
    return pd.DataFrame({
        "step": np.arange(1, steps + 1), "mode": mode, "lambda": np.linspace(0, 0.5, steps),
        "reward": reward, "reward_std": u(0, 0.2), **parts,
        "d_pred": reward + rng.normal(0, 0.05, steps), "d_loss": u(0, 0.1), "d_mse": u(0, 0.1),
        "d_contrastive": u(0, 0.7), "d_accuracy": u(0.4, 1),
        "baseline": reward.cumsum() / np.arange(1, steps + 1), "adv_mean": u(-0.1, 0.1),
        "adv_std": u(0, 0.2),
        "loss": loss_sft + 0.5 * loss_rl, "loss_sft": loss_sft, "loss_rl": loss_rl, "kl": u(0, 0.05),
        "entropy": u(1.5, 2.5), "response_len": u(10, 32), "distinct_1": u(0.4, 0.8),
        "distinct_2": u(0.6, 0.95), "grad_norm": u(0.5, 2), **times,
        "step_time": sum(times.values()) + 0.1, "sample": ["a sampled answer"] * steps,
    })


def sft_history(nan: bool) -> pd.DataFrame:
    history = make_history(mode="sft")
    if nan:
        history[NO_SFT] = np.nan
        return history
    return history.drop(columns=NO_SFT)


def assert_labelled(fig: Figure) -> None:
    """Each axis with data has a y label; each panel (axis + twins) has an x label and a title."""
    panels = {}
    for ax in fig.axes:
        panels.setdefault(tuple(np.round(ax.get_position().bounds, 4)), []).append(ax)
        if ax.has_data():
            assert ax.get_ylabel(), f"no y label on the axis titled {ax.get_title()!r}"
    for axes in panels.values():
        assert any(ax.get_xlabel() for ax in axes), [ax.get_title() for ax in axes]
        assert any(ax.get_title() for ax in axes), [ax.get_ylabel() for ax in axes]


def legend_texts(fig: Figure) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.mark.parametrize("panel", PANELS, ids=lambda f: f.__name__)
def test_panel_returns_labelled_figure(panel):
    fig = panel(make_history())
    assert isinstance(fig, Figure)
    assert plt.get_fignums() == []  # detached from pyplot: Jupyter shows it once
    assert any(ax.has_data() for ax in fig.axes)
    assert not any("no data" in ax.get_title() for ax in fig.axes)
    assert_labelled(fig)


@pytest.mark.parametrize("panel", PANELS, ids=lambda f: f.__name__)
def test_panel_draws_into_given_axis(panel):
    fig, ax = plt.subplots()
    assert panel(make_history(), ax=ax) is fig
    assert ax.has_data()


def test_rewards_finds_the_parts():
    assert plots.reward_parts(make_history()) == ["reward_semantic", "reward_perplexity", "reward_rouge"]
    assert legend_texts(plots.rewards(make_history())) == ["total", "semantic", "perplexity", "rouge"]


def test_scatter_accepts_a_samples_frame():
    rng = np.random.default_rng(1)
    samples = pd.DataFrame({"reward": rng.uniform(0, 1, 40), "d_pred": rng.uniform(0, 1, 40)})
    ax = plots.discriminator_scatter(samples).axes[0]
    assert len(ax.collections[0].get_offsets()) == 40
    assert "r = " in ax.get_title()


def test_dashboard_has_every_panel():
    fig = plots.dashboard(make_history(), title="demo")
    assert plt.get_fignums() == []
    assert len(fig.axes) >= 6
    assert fig._suptitle.get_text() == "demo"
    assert_labelled(fig)


@pytest.mark.parametrize("nan", [False, True], ids=["columns-absent", "columns-nan"])
def test_sft_history_does_not_crash(nan):
    fig = plots.dashboard(sft_history(nan))
    assert_labelled(fig)
    titles = [ax.get_title() for ax in fig.axes]
    assert "Reward (rolling mean over 5) (no data)" in titles
    assert "Discriminator (no data)" in titles
    assert "Generator losses" in titles  # the SFT loss is still there
    assert "sft run, 12 steps" == fig._suptitle.get_text()


def test_empty_history_gives_empty_panels():
    fig = plots.dashboard(pd.DataFrame())
    assert fig._suptitle.get_text() == "Run, 0 steps"
    assert all("no data" in ax.get_title() for ax in fig.axes)


def test_compare_labels_show_the_differing_fields():
    base = HybridConfig()
    runs = [(base, make_history(seed=1)), (base.replace(lambda_rl=0.0).to_dict(), make_history(seed=2))]
    labels = legend_texts(plots.compare(runs))
    assert labels == ["lambda_rl=0.5", "lambda_rl=0.0"]
    two = plots.run_labels([base.to_dict(), base.replace(lambda_rl=0.0, lora_r=16).to_dict()])
    assert two == ["lora_r=8, lambda_rl=0.5", "lora_r=16, lambda_rl=0.0"]


def test_compare_shows_reward_weights_compactly():
    configs = [HybridConfig().to_dict(), HybridConfig(reward_weights={"semantic": 1.0}).to_dict()]
    assert plots.run_labels(configs) == ["weights=semantic:0.7,perplexity:0.3", "weights=semantic:1.0"]


def test_compare_identical_or_single_runs_are_numbered():
    config = HybridConfig()
    runs = [SimpleNamespace(config=config, history=make_history(seed=s)) for s in (1, 2)]
    fig = plots.compare(runs, metric="loss")
    assert legend_texts(fig) == ["run 1", "run 2"]
    assert_labelled(fig)
    assert legend_texts(plots.compare(runs[:1])) == ["run 1"]
    repeated = [config.to_dict(), config.to_dict(), config.replace(seed=3).to_dict()]
    assert plots.run_labels(repeated) == ["run 1: seed=0", "run 2: seed=0", "run 3: seed=3"]


def test_save_writes_a_png(tmp_path):
    path = plots.save(plots.rewards(make_history()), tmp_path / "figs" / "nested" / "rewards")
    assert path == tmp_path / "figs" / "nested" / "rewards.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- ablation figures ------------------------------------------------------------------------
def ablation_tables():
    """A results table (arm, seed, metric, value) of 3 arms x 3 seeds, and its summary."""
    from lab.eval import stats

    rng = np.random.default_rng(0)
    rows = [(arm, seed, metric, rng.uniform(0, 1)) for arm in ("base", "sft", "hybrid") for seed in range(3)
            for metric in ("sampled_semantic", "sampled_distinct_2", "greedy_rouge_l")]
    results = pd.DataFrame(rows, columns=["arm", "seed", "metric", "value"])
    return results, stats.summarize_results(results, "sft")


def test_plot_metrics_one_labelled_bar_chart_per_metric():
    _, summary = ablation_tables()
    fig = figures.plot_metrics(summary, ["sampled_semantic", "greedy_rouge_l", "not_there"])
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["sampled_semantic", "greedy_rouge_l"]
    assert [t.get_text() for t in visible[0].get_xticklabels()] == ["base", "sft", "hybrid"]
    assert all(ax.get_ylabel() for ax in visible) and plt.get_fignums() == []
    assert len([ax for ax in figures.plot_metrics(summary).axes if ax.get_visible()]) == 3  # default: all


def test_plot_metrics_lays_many_arms_down_one_named_row_each():
    _, summary = ablation_tables()
    fig = figures.plot_metrics(summary, ["sampled_semantic", "greedy_rouge_l"], most=2)
    first, second = [ax for ax in fig.axes if ax.get_visible()]
    assert [t.get_text() for t in first.get_yticklabels()] == ["base", "sft", "hybrid"]  # the first arm on top
    assert first.get_ylim()[0] > first.get_ylim()[1]
    assert not any(t.get_text() for t in second.get_yticklabels())  # named once a row
    assert first.get_xlabel() == "semantic" and len(first.patches) == 3
    many = pd.concat([summary.assign(arm=summary["arm"] + str(i)) for i in range(10)])  # 30 arms
    assert figures.plot_metrics(many).get_size_inches()[1] > fig.get_size_inches()[1]  # grows with the arms


def test_plot_metrics_error_bars_stay_in_the_metric_range_and_leave_out_costs():
    nan = float("nan")
    part = pd.DataFrame({"mean": [0.55, 0.9, 0.4], "ci_low": [-0.2, 0.8, nan], "ci_high": [1.3, 1.0, nan]})
    np.testing.assert_allclose(figures.error_bars(part, "sampled_distinct_2"), [[0.55, 0.1, 0], [0.45, 0.1, 0]])
    np.testing.assert_allclose(figures.error_bars(part, "train_seconds"), [[0.55, 0.1, 0], [0.75, 0.1, 0]])  # >= 0
    np.testing.assert_allclose(figures.error_bars(part, "greedy_semantic"), [[0.75, 0.1, 0], [0.45, 0.1, 0]])  # cosine
    results, _ = ablation_tables()
    costs = pd.DataFrame([(arm, seed, metric, 10.0 + seed) for arm in ("sft", "hybrid") for seed in range(3)
                          for metric in ("train_seconds", "eval_cpu_seconds", "steps", "peak_rss_mb")],
                         columns=["arm", "seed", "metric", "value"])
    from lab.eval import stats

    summary = stats.summarize_results(pd.concat([results, costs]), "sft")
    titles = [ax.get_title() for ax in figures.plot_metrics(summary).axes if ax.get_visible()]
    assert sorted(titles) == ["greedy_rouge_l", "sampled_distinct_2", "sampled_semantic"]  # held-out metrics, no costs


def test_plot_quality_diversity_one_marker_per_arm():
    results, _ = ablation_tables()
    fig = figures.plot_quality_diversity(results)
    assert legend_texts(fig) == ["base", "sft", "hybrid"]
    assert_labelled(fig)
    empty = figures.plot_quality_diversity(results, x="missing")
    assert "no data" in empty.axes[0].get_title()


def test_plot_curves_keeps_colours_for_an_untrained_arm():
    config = HybridConfig().to_dict()
    runs = [(config, pd.DataFrame()), (config, make_history(seed=1)), (config, make_history(seed=2))]
    fig = figures.plot_curves(runs, "reward", labels=["base", "sft", "hybrid"])
    lines = [line for line in fig.axes[0].get_lines() if line.get_label() in ("sft", "hybrid")]
    assert [line.get_color() for line in lines] == ["C1", "C2"]
    assert "rolling mean over 1" in fig.axes[0].get_title()  # 12 steps // 10
