"""LoRA-GAN Lab: a teaching kit for hybrid SFT + REINFORCE training of small language models.

The top of ``lab/`` holds what the notebooks teach, as plain code; the folders hold the rest,
by job. Imports run only downward (``tests/test_layers.py`` checks it)::

    __main__                     the CLI: python -m lab train | sample | eval | ablate | ...
      |
    experiments/  integrations/  arms, the ablation, its report and figures | TRL
      |
    ui/                          playground, controls, plots, run list, a run's output files
      |
    evaluate.py  eval/           held-out evaluation | multiple choice, statistics, diagnostics
      |
    trainer.py  checkpoint.py    the seed's step: sample -> score -> critic -> advantages -> update
      |
    objective.py  variants/      the generator's objective | self-play, CHORD/SRFT/LUFFY/HPT mixes, distillation
      |
    rewards.py  generator.py  losses.py  discriminator.py  warm_start.py  advantages.py  signals/
                                 the pieces of a step (signals/: the truthfulness reward)
      |
    data.py  models.py           examples from sources | model names -> models, LoRA
      |
    config.py                    HybridConfig: every knob, in sections, with presets
      |
    readers/  runtime/  fast/    dataset sources, config text | processes, guards, quantization, the
                                 Hub, RNG streams, step records, tracking | opt-in speed, checked
                                 against the plain path, the only home of private APIs
      |
    core/                        tensors, seeding, n-gram statistics, value checks: no kit knowledge

Modules and folders load lazily: ``import lab`` is fast, and ``lab.models``, ``lab.ui.plots``
... import on first use.
"""

import importlib
import logging
import os

# torchao (an optional dependency that peft imports whenever it is installed) logs at import that it
# cannot load its CUDA-only kernels, and torch logs deprecations of its registrations: noise a newcomer
# reads as a broken install. Real errors still show.
for _name in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_name).setLevel(logging.ERROR)

_MODULES = ("advantages", "checkpoint", "config", "data", "discriminator", "evaluate", "generator", "losses",
            "models", "objective", "rewards", "trainer", "warm_start")
_FOLDERS = ("core", "eval", "experiments", "fast", "integrations", "readers", "runtime", "signals", "ui", "variants")
__all__ = [*_MODULES, *_FOLDERS, "quick_mode", "set_seed"]
__version__ = "0.1.0"


def lazy_submodules(package: str):
    """A module ``__getattr__`` that imports ``package.NAME`` on first access of ``NAME``."""

    def __getattr__(name):
        try:
            return importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{package}.{name}":
                raise
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None

    return __getattr__


__getattr__ = lazy_submodules(__name__)

from lab.core.seeding import set_seed  # noqa: E402 (after lazy_submodules, which lab.core imports)


def quick_mode() -> bool:
    """True when ``LAB_QUICK=1``: notebooks and demos shrink step counts and sample sizes."""
    return os.environ.get("LAB_QUICK", "0").lower() in ("1", "true", "yes")
