"""The playground: a control panel that builds a :class:`HybridConfig`, trains in a
background thread under a live dashboard, and keeps every run of the session to compare.

The panel only builds a config and calls the trainer's API, so everything it does can be
done headless (as the tests and notebook 06 do)::

    panel = Playground(model="tiny-gpt2")          # in Jupyter: display(panel)
    run = panel.set(lambda_rl=0.0, steps=3).run(block=True)
    panel.history, panel.runs, panel.compare_figure("reward"), panel.save()

Widgets carry CSS classes (``lab-run``, ``lab-stop``, ``lab-save``, ``lab-status``,
``lab-dashboard``, ``lab-samples``, ``lab-compare``, ``lab-runs``) for browser tests.
"""

from __future__ import annotations

import html
import math
import threading
import time
from pathlib import Path

import ipywidgets as W
import pandas as pd

from lab import plots, quick_mode
from lab.config import (
    BASELINES, MODES, POLICY_LOSSES, REWARD_NAMES, REWARD_SOURCES, SAMPLERS, SCHEDULES, SFT_SCHEDULES,
    SFT_TOKEN_WEIGHTS, HybridConfig, preset,
)
from lab.runs import Run, png, run_folder, runs_table, samples_table, save_session

METRICS = ("reward", *(f"reward_{name}" for name in REWARD_NAMES), "loss", "loss_sft", "loss_rl",
           "kl", "entropy", "d_loss", "d_accuracy", "lambda", "response_len", "distinct_1",
           "distinct_2", "grad_norm", "step_time", "adv_std", "clip_frac", "approx_kl", "mu", "sft_prompt_share",
           "selfplay_preference")
STYLE = {"description_width": "150px"}
TABS = {  # tab title -> the controls on it (reward weights get their own tab, after the first)
    "Objective": ("mode", "lambda_rl", "lambda_schedule", "lambda_warmup_steps", "baseline",
                  "reward_source", "reward_mix", "kl_coef", "entropy_coef"),
    "Experiments": ("scale_rewards", "policy_loss", "ppo_epochs", "clip_range", "sft_schedule", "mu",
                    "sft_token_weight", "reference_in_group", "per_prompt_switch", "switch_threshold",
                    "sampler", "num_beams", "selfplay_refresh"),
    "LoRA & optimiser": ("lora_r", "lora_alpha", "lora_dropout", "lr"),
    "Sampling & run": ("model", "steps", "prompts_per_step", "samples_per_prompt",
                       "max_new_tokens", "seed"),
}


def _make(kind, description: str, tooltip: str, **kwargs) -> W.Widget:
    """A control with the panel's label width; sliders stretch their range to fit the value."""
    if "max" in kwargs and kind is not W.FloatLogSlider:
        kwargs["max"] = max(kwargs["max"], kwargs["value"])
    if kind is W.Checkbox:
        kwargs["indent"] = False
    if kind in (W.IntSlider, W.FloatSlider, W.FloatLogSlider, W.Text):
        kwargs["continuous_update"] = False
    return kind(description=description, tooltip=tooltip, style=STYLE,
                layout=W.Layout(width="420px"), **kwargs)


def _controls(cfg: HybridConfig, steps: int) -> dict[str, W.Widget]:
    """One widget per knob, named as the config field (plus ``steps``), set to ``cfg``'s values."""
    S, F, D, C = W.IntSlider, W.FloatSlider, W.Dropdown, W.Checkbox
    return {
        "mode": _make(D, "mode", "sft: phase A only; rl: phase B only; hybrid: both; selfplay: RL against a "
                      "frozen snapshot, rewarded by the discriminator's preference", options=MODES, value=cfg.mode),
        "lambda_rl": _make(F, "λ (RL weight)", "weight of the RL terms against SFT (hybrid mode)",
                           min=0, max=2, step=0.05, value=cfg.lambda_rl),
        "lambda_schedule": _make(D, "λ schedule", "constant; linear warm-up; adaptive (critic accuracy)",
                                 options=SCHEDULES, value=cfg.lambda_schedule),
        "lambda_warmup_steps": _make(S, "λ warm-up steps", "linear schedule: steps from 0 to λ",
                                     min=1, max=200, value=cfg.lambda_warmup_steps),
        "baseline": _make(D, "baseline", "ema: running mean; loo: the prompt's other samples; group: all k "
                          "(GRPO); critic: D over the other samples (unbiased); discriminator_biased: D(x, y) "
                          "itself (biased, a teaching arm)", options=BASELINES, value=cfg.baseline),
        "reward_source": _make(D, "reward source", "what RL maximises: reward, discriminator, or a mix",
                               options=REWARD_SOURCES, value=cfg.reward_source),
        "reward_mix": _make(F, "mix (D share)", "reward source 'mix': weight of the discriminator",
                            min=0, max=1, step=0.05, value=cfg.reward_mix),
        "kl_coef": _make(F, "KL coef β", "KL penalty to the base model", min=0, max=0.2, step=0.005,
                         value=cfg.kl_coef, readout_format=".3f"),
        "entropy_coef": _make(F, "entropy coef η", "entropy bonus", min=0, max=0.05, step=0.001,
                              value=cfg.entropy_coef, readout_format=".3f"),
        # experiments: the policy update, the SFT + RL mixes, sampling
        "scale_rewards": _make(C, "scale rewards (÷ group std)", "divide advantages by the std of the prompt's "
                               "k rewards (GRPO); needs k >= 2", value=cfg.scale_rewards),
        "policy_loss": _make(D, "policy loss", "reinforce; ppo: clipped ratio against the sampling policy",
                             options=POLICY_LOSSES, value=cfg.policy_loss),
        "ppo_epochs": _make(S, "PPO epochs", "ppo: passes over each step's samples (1: REINFORCE's gradient)",
                            min=1, max=8, value=cfg.ppo_epochs),
        "clip_range": _make(F, "clip range ε", "ppo: the ratio is clipped to [1 - ε, 1 + ε]", min=0.05, max=0.5,
                            step=0.01, value=cfg.clip_range),
        "sft_schedule": _make(D, "SFT schedule (μ)", "none: SFT + λ RL; else μ SFT + (1 - μ) RL with μ constant, "
                              "chord (warm-up + cosine) or srft (μ exp(-entropy)); needs mode hybrid",
                              options=SFT_SCHEDULES, value=cfg.sft_schedule),
        "mu": _make(F, "μ (SFT weight)", "the SFT weight, the peak of chord's schedule", min=0, max=1, step=0.05,
                    value=cfg.mu),
        "sft_token_weight": _make(D, "SFT token weight", "uniform; phi: each SFT token weighted by p (1 - p) "
                                  "(CHORD-phi)", options=SFT_TOKEN_WEIGHTS, value=cfg.sft_token_weight),
        "reference_in_group": _make(C, "reference in group (LUFFY)", "the reference answer joins its prompt's "
                                    "group as an off-policy member", value=cfg.reference_in_group),
        "per_prompt_switch": _make(C, "per-prompt switch (HPT)", "SFT for prompts whose samples all score "
                                   "below the threshold, RL for the others (mode hybrid)",
                                   value=cfg.per_prompt_switch),
        "switch_threshold": _make(F, "HPT threshold", "the reward a sample must reach for its prompt to count "
                                  "as solved", min=0, max=1, step=0.05, value=cfg.switch_threshold),
        "sampler": _make(D, "sampler", "nucleus: temperature + top-p samples; beam: the k best beams "
                         "(off-policy)", options=SAMPLERS, value=cfg.sampler),
        "num_beams": _make(S, "beams", "beam: beams kept per prompt, >= k", min=1, max=8, value=cfg.num_beams),
        "selfplay_refresh": _make(S, "self-play refresh", "selfplay: copy the generator into the frozen "
                                  "opponent every N steps", min=1, max=50, value=cfg.selfplay_refresh),
        "lora_r": _make(S, "LoRA rank r", "adapter rank (both adapters)", min=1, max=64, value=cfg.lora_r),
        "lora_alpha": _make(S, "LoRA alpha", "scaling numerator, usually 2 r", min=1, max=128,
                            value=cfg.lora_alpha),
        "lora_dropout": _make(F, "LoRA dropout", "dropout on the adapter input", min=0, max=0.5,
                              step=0.01, value=cfg.lora_dropout),
        "lr": _make(W.FloatLogSlider, "learning rate", "generator (LoRA) learning rate", base=10,
                    min=min(-6, math.floor(math.log10(cfg.lr))), max=max(-2, math.ceil(math.log10(cfg.lr))),
                    step=0.1, value=cfg.lr, readout_format=".1e"),
        "model": _make(W.Text, "model", "'auto', 'smollm2-135m', 'tiny-gpt2' or a Hub causal-LM id",
                       value=cfg.model),
        "steps": _make(S, "steps", "training steps of one run", min=1, max=200, value=steps),
        "prompts_per_step": _make(S, "prompts a step (B)", "prompts per step", min=1, max=16,
                                  value=cfg.prompts_per_step),
        "samples_per_prompt": _make(S, "samples a prompt (k)", "responses per prompt; loo needs k >= 2",
                                    min=1, max=8, value=cfg.samples_per_prompt),
        "max_new_tokens": _make(S, "max new tokens", "response length cap", min=4, max=128,
                                value=cfg.max_new_tokens),
        "seed": _make(W.BoundedIntText, "seed", "seeds python, numpy, torch and the data order",
                      min=0, max=2**31 - 1, value=cfg.seed),
    }


def _fit(widget: W.Widget, value) -> None:
    """Set ``value``, first widening a slider's range to hold it (the config validates it)."""
    if isinstance(widget, W.FloatLogSlider):
        if not value > 0:
            raise ValueError(f"{widget.description} must be > 0, got {value!r}")
        exponent = math.log10(value)
        widget.max, widget.min = max(widget.max, math.ceil(exponent)), min(widget.min, math.floor(exponent))
    elif hasattr(widget, "max") and isinstance(value, (int, float)):
        widget.max, widget.min = max(widget.max, value), min(widget.min, value)
    widget.value = value


class Playground:
    """Sliders and dropdowns for a hybrid run, Run / Stop / Save, a live dashboard, the
    last step's samples, and every run of the session overlaid in a comparison plot.

    ``model``: the generator ("auto", "tiny-gpt2", ...); ``steps``: default run length
    (5 in quick mode, else 20); ``quick``: start from the "quick" preset (default: LAB_QUICK);
    ``examples``: restrict the training data; ``out_root``: where Save writes
    ``playground-<timestamp>``; ``redraw_every``: seconds between dashboard redraws;
    ``**config``: other :class:`HybridConfig` fields (kept as they are by the panel).
    """

    def __init__(self, model: str = "auto", steps: int | None = None, quick: bool | None = None,
                 examples=None, out_root: str | Path = "runs", redraw_every: float = 2.0, **config):
        quick = quick_mode() if quick is None else quick
        self.base = preset("quick" if quick else "default", model=model, **config)
        self.examples, self.out_root, self.redraw_every = examples, Path(out_root), redraw_every
        self.runs: list[Run] = []
        self.callbacks: list = []  # extra ``fn(trainer, row)`` hooks, called after each step
        self.trainer = None  # the trainer of the latest run
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._draw_lock = threading.Lock()  # pyplot is not thread-safe
        self._error: BaseException | None = None
        self._last_draw = -math.inf

        self.controls = _controls(self.base, steps or (5 if quick else 20))
        self.weights = {name: _make(W.FloatSlider, f"{name} weight", f"weight of the {name} reward",
                                    min=0, max=2, step=0.05, value=self.base.reward_weights.get(name, 0.0))
                        for name in REWARD_NAMES}
        self.run_button = W.Button(description="Run", button_style="success", icon="play",
                                   tooltip="train with these settings (in the background)")
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop",
                                    disabled=True, tooltip="end the run after the current step")
        self.save_button = W.Button(description="Save", icon="save", disabled=True,
                                    tooltip="save the latest run and the comparison under runs/")
        self.status = W.HTML()
        self.dashboard = W.Image(format="png", layout=W.Layout(width="100%", max_width="1000px",
                                                               display="none"))
        self.samples_view = W.HTML(samples_table(None))
        self.metric = W.Dropdown(options=METRICS, value="reward", description="metric", style=STYLE)
        self.compare_view = W.Image(format="png", layout=W.Layout(width="100%", max_width="720px",
                                                                  display="none"))
        self.runs_view = W.HTML(runs_table([]))
        for widget, name in ((self.run_button, "run"), (self.stop_button, "stop"),
                             (self.save_button, "save"), (self.status, "status"),
                             (self.dashboard, "dashboard"), (self.samples_view, "samples"),
                             (self.compare_view, "compare"), (self.runs_view, "runs"),
                             (self.metric, "metric")):
            widget.add_class(f"lab-{name}")

        self.run_button.on_click(lambda _: self.run())
        self.stop_button.on_click(lambda _: self.stop())
        self.save_button.on_click(lambda _: self.save())
        self.metric.observe(lambda _: self._draw_runs(), names="value")
        for widget in (*self.controls.values(), *self.weights.values()):
            widget.observe(lambda _: self._changed(), names="value")
        self.widget = self._layout()
        self._changed()

    def _layout(self) -> W.VBox:
        def grid(children):
            return W.GridBox(list(children), layout=W.Layout(
                grid_template_columns="repeat(auto-fill, 430px)", padding="6px"))

        knobs = [grid(self.controls[n] for n in names) for names in TABS.values()]
        knobs.insert(1, grid(self.weights.values()))
        controls = W.Tab(knobs, titles=(*list(TABS)[:1], "Reward weights", *list(TABS)[1:]))
        views = W.Tab([self.dashboard, self.samples_view,
                       W.VBox([self.metric, self.compare_view, self.runs_view])],
                      titles=("Dashboard", "Samples", "Runs"))
        title = W.HTML("<b>LoRA-GAN playground</b>: set the knobs, press <b>Run</b>; "
                       "every run of this session is kept under <i>Runs</i>.")
        buttons = W.HBox([self.run_button, self.stop_button, self.save_button, self.status])
        return W.VBox([title, controls, buttons, views]).add_class("lab-playground")

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # --- configuration -------------------------------------------------------------------
    def config(self) -> HybridConfig | None:
        """The :class:`HybridConfig` the widgets show; ``None`` (the reason in the status
        line) when the combination is invalid."""
        values = {name: w.value for name, w in self.controls.items() if name != "steps"}
        values["model"] = values["model"].strip()
        weights = {name: w.value for name, w in self.weights.items() if w.value}
        values["reward_weights"] = weights or {name: 0.0 for name in self.weights}
        try:
            return self.base.replace(**values)
        except ValueError as err:
            self._say(f"invalid settings: {html.escape(str(err))}", error=True)
            return None

    def set(self, **values) -> "Playground":
        """Set controls by config field name (``steps`` too; ``reward_weights`` as a dict,
        absent names get 0); returns the panel, so ``panel.set(lora_r=2).run(block=True)``."""
        for name, value in values.items():
            if name == "reward_weights":
                unknown = sorted(set(value) - set(self.weights))
                if unknown:
                    raise ValueError(f"unknown reward(s) {unknown}; known: {', '.join(self.weights)}")
                for reward, slider in self.weights.items():
                    _fit(slider, value.get(reward, 0.0))
            elif name in self.controls:
                _fit(self.controls[name], value)
            else:
                raise ValueError(f"{name!r} is not a playground control; known: "
                                 f"{', '.join([*self.controls, 'reward_weights'])}")
        return self

    def _changed(self) -> None:
        """Grey out knobs that the current choices ignore; validate when idle."""
        c = self.controls
        hybrid = c["mode"].value == "hybrid"
        mixed = hybrid and c["sft_schedule"].value == "none"  # lambda sets the mix (else mu does)
        c["lambda_rl"].disabled = c["lambda_schedule"].disabled = not mixed
        c["lambda_warmup_steps"].disabled = not mixed or c["lambda_schedule"].value != "linear"
        c["reward_mix"].disabled = c["reward_source"].value != "mix"
        c["ppo_epochs"].disabled = c["clip_range"].disabled = c["policy_loss"].value != "ppo"
        c["mu"].disabled = c["sft_schedule"].value == "none"
        c["switch_threshold"].disabled = not c["per_prompt_switch"].value
        c["num_beams"].disabled = c["sampler"].value != "beam"
        c["selfplay_refresh"].disabled = c["mode"].value != "selfplay"
        if not self.running and self.config() is not None:
            self._say(f"ready: press Run ({len(self.runs)} run(s) so far)")

    # --- running ---------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def history(self) -> pd.DataFrame:
        """The history of the run in progress, else of the latest run."""
        if self.trainer is not None:
            return self.trainer.history
        return self.runs[-1].history if self.runs else pd.DataFrame()

    def run(self, block: bool = False) -> Run | None:
        """Start a run with the widgets' settings in a background thread. ``block=True``
        waits and returns its :class:`Run` (re-raising a training error)."""
        if self.running:
            self._say("a run is in progress: press Stop or wait", error=True)
            return None
        config = self.config()
        if config is None:
            return None
        self._stop.clear()
        self._error, self.trainer = None, None
        self._thread = threading.Thread(target=self._train, args=(config, self.controls["steps"].value),
                                        name="lab-playground", daemon=True)
        self.run_button.disabled, self.stop_button.disabled, self.save_button.disabled = True, False, True
        self._thread.start()
        return self.wait() if block else None

    def wait(self, timeout: float | None = None) -> Run | None:
        """Block until the run in progress ends; returns the latest :class:`Run`."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"the run is still going after {timeout} s")
        if self._error is not None:
            raise RuntimeError(f"the run failed: {self._error}") from self._error
        return self.runs[-1] if self.runs else None

    def stop(self) -> None:
        """End the run in progress after its current step (thread-safe)."""
        self._stop.set()
        if self.trainer is not None:
            self.trainer.request_stop()
        if self.running:
            self._say("stopping after the current step …")

    def _train(self, config: HybridConfig, steps: int) -> None:
        from lab.trainer import HybridTrainer

        start = time.perf_counter()
        self._say(f"loading {html.escape(config.model)} …")
        trainer, prefix, error = None, "", False
        try:
            trainer = self.trainer = HybridTrainer(config, examples=self.examples, verbose=False)
            self._last_draw = -math.inf
            trainer.run(steps, progress=False, callbacks=[
                *self.callbacks, lambda t, row: self._on_step(t, row, steps, start)])
        except Exception as err:  # shown in the status line; wait() re-raises it
            self._error, error = err, True
        finally:
            if trainer is not None and trainer.rows:
                run = Run(config, trainer.history, trainer.samples, steps,
                          time.perf_counter() - start, stopped=len(trainer.rows) < steps)
                self.runs.append(run)
                self._draw(trainer)
                self._draw_runs()
                prefix = f"run {len(self.runs)} {'stopped' if run.stopped else 'done'} · "
                self._say(prefix + self._progress(trainer.rows[-1], steps, start))
            if error:
                self._say(f"{prefix}error: {html.escape(f'{type(self._error).__name__}: {self._error}')}",
                          error=True)
            self.run_button.disabled, self.stop_button.disabled = False, True
            self.save_button.disabled = self.trainer is None

    def _on_step(self, trainer, row: dict, steps: int, start: float) -> None:
        if self._stop.is_set():
            trainer.request_stop()
        self._say("running · " + self._progress(row, steps, start))
        if time.perf_counter() - self._last_draw >= self.redraw_every and row["step"] < steps:
            self._draw(trainer)

    @staticmethod
    def _progress(row: dict, steps: int, start: float) -> str:
        parts = [f"step {row['step']}/{steps}"]
        parts += [f"{key} {row[key]:.3f}" for key in ("reward", "loss") if key in row]
        return " · ".join(parts + [f"{time.perf_counter() - start:.0f} s"])

    # --- views ------------------------------------------------------------------------------
    def _say(self, text: str, error: bool = False) -> None:
        color = "#b00020" if error else "inherit"
        self.status.value = f'<span style="color:{color}">{text}</span>'

    def dashboard_figure(self):
        """The dashboard of the run in progress (or the latest run)."""
        run = f"{self.trainer.config.mode} run" if self.trainer is not None else "run"
        return plots.dashboard(self.history, title=f"{run}, {len(self.history)} steps")

    def compare_figure(self, metric: str | None = None):
        """``metric`` (default: the dropdown's) of every run of the session, one line each."""
        return plots.compare(self.runs, metric or self.metric.value)

    def _draw(self, trainer) -> None:
        with self._draw_lock:
            self.dashboard.value = png(self.dashboard_figure())
        self.dashboard.layout.display = None
        self.samples_view.value = samples_table(trainer.samples)
        self._last_draw = time.perf_counter()

    def _draw_runs(self) -> None:
        if not self.runs:
            return
        with self._draw_lock:
            self.compare_view.value = png(self.compare_figure(), dpi=80)
        self.compare_view.layout.display = None
        self.runs_view.value = runs_table(self.runs)

    # --- saving -----------------------------------------------------------------------------
    def save(self, out: str | Path | None = None, name: str | None = None) -> Path | None:
        """Save the latest run (checkpoint, history, samples, dashboard) and the session's
        comparison into ``out`` (default ``<out_root>/<name>``, ``name`` a plain folder name
        checked by :func:`lab.runs.run_folder`, else ``playground-<timestamp>``); returns it."""
        if name is not None:
            if out is not None:
                raise ValueError("pass out= (a folder) or name= (a run name under out_root), not both")
            try:
                out = run_folder(self.out_root, name)  # ValueError for '../x', 'a/b', ...
                if out.exists():  # never mix two runs' checkpoints in one folder
                    raise ValueError(f"{out} already exists; choose another run name")
            except ValueError as err:
                self._say(f"not saved: {html.escape(str(err))}", error=True)
                raise
        if self.running:
            self._say("a run is in progress: Stop it or wait before saving", error=True)
            return None
        if self.trainer is None:
            self._say("nothing to save yet: press Run first", error=True)
            return None
        if out is None:
            out = self.out_root / f"playground-{time.strftime('%Y%m%d-%H%M%S')}"
            while out.exists():
                out = out.with_name(out.name + "-1")
        try:
            with self._draw_lock:
                out = save_session(self.trainer, self.runs, Path(out), self.metric.value)
        except OSError as err:  # full disk, no permission: say so; the earlier checkpoints stay
            self._say(f"not saved: {html.escape(err.strerror if err.strerror and err.filename is None else str(err))}",
                      error=True)
            raise
        self._say(f"saved to <code>{html.escape(str(out.resolve()))}</code>")
        return out
