"""The playground: a control panel that builds a :class:`HybridConfig`, trains in a
background thread under a live dashboard, and keeps every run of the session to compare.

The panel only builds a config and calls the trainer's API, so everything it does can be
done headless (as the tests and notebook 06 do)::

    panel = Playground(model="tiny-gpt2")          # in Jupyter: display(panel)
    run = panel.set(lambda_rl=0.0, steps=3).run(block=True)
    panel.history, panel.runs, panel.compare_figure("reward"), panel.save()
    table = panel.what_if("lambda_rl=1.0", seeds=3, block=True)  # the paired difference, with a verdict

Widgets carry CSS classes (``lab-run``, ``lab-stop``, ``lab-save``, ``lab-status``,
``lab-dashboard``, ``lab-dashboard-note``, ``lab-samples``, ``lab-compare``, ``lab-runs``, ``lab-what-if``) for browser tests.
"""

from __future__ import annotations

import html
import math
import threading
import time
from pathlib import Path

import ipywidgets as W
import pandas as pd

from lab import quick_mode
from lab.config import REWARD_NAMES, HybridConfig, preset
from lab.experiments import whatif
from lab.trainer import HybridTrainer
from lab.ui import plots
from lab.ui.controls import METRICS, STYLE, controls, fit, make, tabs
from lab.ui.runs import Run, png, run_folder, runs_table, samples_table, save_session

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
        self.what_if_table: pd.DataFrame | None = None  # the latest what-if's paired differences
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._draw_lock = threading.Lock()  # pyplot is not thread-safe
        self._error: BaseException | None = None
        self._last_draw = -math.inf

        self.controls = controls(self.base, steps or (5 if quick else 20))
        self.weights = {name: make(W.FloatSlider, f"{name} weight", f"weight of the {name} reward",
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
        self.dashboard_note = W.HTML()  # which panels have no data yet (the browser test reads it)
        self.samples_view = W.HTML(samples_table(None))
        self.metric = W.Dropdown(options=METRICS, value="reward", description="metric", style=STYLE)
        self.compare_view = W.Image(format="png", layout=W.Layout(width="100%", max_width="720px",
                                                                  display="none"))
        self.runs_view = W.HTML(runs_table([]))
        self.what_if_change = W.Text(value="lambda_rl=1.0", description="what if", style=STYLE,
                                     tooltip="the panel's settings (a) against them with this change (b): knob=value")
        self.what_if_seeds = make(W.IntSlider, "seeds", "seeds of each side; more seeds, smaller MDE", min=2, max=8,
                                  value=2)
        self.what_if_button = W.Button(description="Compare", icon="balance-scale",
                                       tooltip="train both sides over the seeds, evaluate on held-out prompts")
        self.what_if_view = W.HTML()
        for widget, name in ((self.run_button, "run"), (self.stop_button, "stop"),
                             (self.save_button, "save"), (self.status, "status"),
                             (self.dashboard, "dashboard"), (self.dashboard_note, "dashboard-note"),
                             (self.samples_view, "samples"),
                             (self.compare_view, "compare"), (self.runs_view, "runs"),
                             (self.metric, "metric"), (self.what_if_view, "what-if")):
            widget.add_class(f"lab-{name}")

        self.run_button.on_click(lambda _: self.run())
        self.stop_button.on_click(lambda _: self.stop())
        self.save_button.on_click(lambda _: self.save())
        self.what_if_button.on_click(lambda _: self.what_if(self.what_if_change.value, self.what_if_seeds.value))
        self.metric.observe(lambda _: self._draw_runs(), names="value")
        for widget in (*self.controls.values(), *self.weights.values()):
            widget.observe(lambda _: self._changed(), names="value")
        self.widget = self._layout()
        self._changed()

    def _layout(self) -> W.VBox:
        def grid(children):
            return W.GridBox(list(children), layout=W.Layout(
                grid_template_columns="repeat(auto-fill, 430px)", padding="6px"))

        sections = tabs(self.controls)  # one tab per config section; the reward weights open the reward tab
        knobs = [grid([*(self.weights.values() if section == "reward" else ()), *(self.controls[n] for n in names)])
                 for section, names in sections.items()]
        controls = W.Tab(knobs, titles=[section.capitalize() for section in sections])
        what_if = W.VBox([W.HBox([self.what_if_change, self.what_if_seeds, self.what_if_button]), self.what_if_view])
        views = W.Tab([W.VBox([self.dashboard, self.dashboard_note]), self.samples_view,
                       W.VBox([self.metric, self.compare_view, self.runs_view]), what_if],
                      titles=("Dashboard", "Samples", "Runs", "What if"))
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
        values = {name: w.value if not w.disabled else getattr(self.base, name)  # a greyed-out knob: its default
                  for name, w in self.controls.items() if name != "steps"}
        values["model"] = values["model"].strip()
        values["discriminator_model"] = values["discriminator_model"].strip() or None  # empty: the shared backbone
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
                    fit(slider, value.get(reward, 0.0))
            elif name in self.controls:
                fit(self.controls[name], value)
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
        plain = c["loss_type"].value == "reinforce"  # no ratio: nothing to clip
        for name in ("ppo_epochs", "clip_range", "epsilon_high", "importance_sampling_level"):
            c[name].disabled = plain
        c["mu"].disabled = c["sft_schedule"].value == "none"
        c["switch_threshold"].disabled = not c["per_prompt_switch"].value
        c["num_beams"].disabled = c["sampler"].value != "beam"
        c["selfplay_refresh"].disabled = c["mode"].value != "selfplay"
        c["distill_teacher"].disabled = c["mode"].value != "distill"
        c["naturalness_weight"].disabled = c["discriminator_loss"].value != "bradley_terry"
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

    def _idle_config(self) -> HybridConfig | None:
        """The panel's config when nothing is running and it is valid; else None, the reason said."""
        if self.running:
            self._say("a run is in progress: press Stop or wait", error=True)
            return None
        return self.config()

    def run(self, block: bool = False) -> Run | None:
        """Start a run with the widgets' settings in a background thread. ``block=True``
        waits and returns its :class:`Run` (re-raising a training error)."""
        config = self._idle_config()
        if config is None:
            return None
        self._stop.clear()
        self._error, self.trainer = None, None
        self._thread = threading.Thread(target=self._train, args=(config, self.controls["steps"].value),
                                        name="lab-playground", daemon=True)
        self.run_button.disabled, self.stop_button.disabled, self.save_button.disabled = True, False, True
        self._thread.start()
        return self.wait() if block else None

    def what_if(self, change: str | dict, seeds: int = 2, steps: int | None = None, eval_limit: int = 12,
                block: bool = False) -> pd.DataFrame | None:
        """Compare the panel's settings (a) with them plus ``change`` (b: ``"knob=value"`` or a dict)
        over ``seeds`` seeds of ``steps`` steps each (default: the panel's), on ``eval_limit`` held-out
        prompts: :func:`lab.experiments.whatif.what_if` in the background, its expected minutes in the
        status line before it starts, its verdict in the What-if tab (it runs to its end: Stop is for
        runs). Both sides train on the panel's dataset. ``block=True`` returns the table."""
        a = self._idle_config()
        if a is None:
            return None
        try:
            if isinstance(change, str):
                name, sep, value = change.partition("=")
                if not sep:
                    raise ValueError(f"write the change as knob=value (e.g. lambda_rl=1.0), not {change!r}")
                change = {name.strip(): value.strip()}
            b = HybridConfig.from_dict({**a.to_dict(), **change})
            steps = steps or self.controls["steps"].value
            minutes = whatif.expected_minutes(a, b, steps, seeds, eval_limit)
        except ValueError as err:
            self._say(f"what if: {html.escape(str(err))}", error=True)
            return None
        self.what_if_view.value = ""  # no stale verdict beside a new question
        self._say(f"what if {html.escape(str(change))}: 2 sides x {seeds} seeds x {steps} steps, "
                  f"about {minutes:.0f} min …")
        self._error, self.what_if_table = None, None
        self._thread = threading.Thread(target=self._compare, args=(a, b, steps, seeds, eval_limit, change),
                                        name="lab-what-if", daemon=True)
        self.run_button.disabled = self.what_if_button.disabled = True
        self._thread.start()
        if block:
            self.wait()
            return self.what_if_table
        return None

    def _compare(self, a: HybridConfig, b: HybridConfig, steps: int, seeds: int, eval_limit: int, change) -> None:
        try:
            table = self.what_if_table = whatif.what_if(a, b, steps, seeds, eval_limit, log=lambda line: self._say(
                f"what if: {html.escape(line)}"))
            lines = "".join(f"<li>{html.escape(v)}</li>" for v in table["verdict"])
            self.what_if_view.value = (f"<b>b = a with {html.escape(str(change))}</b>, {seeds} seeds x {steps} "
                                       f"steps, {eval_limit} held-out prompts, paired per prompt:<ul>{lines}</ul>")
            self._say("what if: done (see the What if tab)")
        except Exception as err:  # shown in the status line; wait() re-raises it
            self._error = err
            self._say(f"what if: error: {html.escape(f'{type(err).__name__}: {err}')}", error=True)
        finally:
            self.run_button.disabled = self.what_if_button.disabled = False

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
            figure = self.dashboard_figure()
            self.dashboard.value = png(figure)
        empty = [ax.get_title().replace(" (no data)", "") for ax in figure.axes if ax.get_title().endswith("(no data)")]
        self.dashboard_note.value = f"panels without data yet: {', '.join(empty)}" if empty else "every panel has data"
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
        checked by :func:`lab.ui.runs.run_folder`, else ``playground-<timestamp>``); returns it."""
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
