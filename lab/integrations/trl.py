"""TRL hand-off: the kit's SFT term and online critic inside TRL's ``GRPOTrainer``.

The kit's hybrid objective is ``SFT on the reference answers + lambda * RL on the samples``.
TRL's ``GRPOTrainer`` brings the RL half (and vLLM generation, DeepSpeed ZeRO, FSDP); this
module adds the rest, built from the kit's own pieces:

| piece | what |
| --- | --- |
| :func:`to_dataset` | ``lab.data`` examples -> a ``datasets.Dataset``: ``prompt`` + ``references`` |
| ``HybridGRPOConfig`` | ``GRPOConfig`` + ``sft_coef`` and ``reference_column`` |
| ``HybridGRPOTrainer`` | ``GRPOTrainer`` whose ``compute_loss`` returns ``grpo_loss + sft_coef * sft_loss`` |
| :class:`DiscriminatorReward` | the kit's critic as a TRL reward function, trained online |

Reward functions need no wrapper: TRL calls each one as ``fn(prompts=..., completions=...,
completion_ids=..., trainer_state=..., log_extra=..., log_metric=..., **columns)``, every
dataset column but ``prompt`` passed as a keyword list with one value per completion. The
kit's rewards read the reference answers from the keyword ``references``, so
:func:`to_dataset` names that column ``references`` (one answer per row; TRL repeats it for
each of a prompt's generations) and ``Reward(...).as_trl()`` works as it is::

    from lab import models
    from lab.rewards import Reward
    from lab.integrations.trl import HybridGRPOConfig, HybridGRPOTrainer, to_dataset

    model, tokenizer = models.load("smollm2-135m")
    trainer = HybridGRPOTrainer(
        model=model, processing_class=tokenizer, train_dataset=to_dataset(),
        reward_funcs=Reward({"rouge": 1.0, "length": 0.5}).as_trl(),
        peft_config=models.lora_config(model, r=8, alpha=16, dropout=0.0),
        args=HybridGRPOConfig(output_dir="runs/trl", sft_coef=1.0, num_generations=2,
                              per_device_train_batch_size=8, max_completion_length=32, beta=0.0))
    trainer.train()   # trainer.state.log_history holds "sft_loss" beside TRL's own metrics

trl is imported on first use of ``HybridGRPOConfig`` / ``HybridGRPOTrainer``; without it
they raise an ``ImportError`` that says how to install the ``[trl]`` extra.
"""

from __future__ import annotations

import functools
import math

import torch

from lab import generator, losses
from lab.advantages import pairwise_accuracy
from lab.data import Example, load_examples
from lab.discriminator import Discriminator, train_step
from lab.core.tensors import right_pad

TRL_MISSING = ('lab.integrations.trl needs TRL (tested with trl 1.16): install the kit\'s [trl] extra, '
               'pip install "lora-gan-lab[trl]" (in a clone: pip install -e ".[trl]").')
_LAZY = ("HybridGRPOConfig", "HybridGRPOTrainer")
__all__ = ["DiscriminatorReward", "to_dataset", "require_trl", *_LAZY]


ROLLOUT_HOOK = "_generate_and_score_completions"  # TRL's private rollout method, checked by require_trl


def require_trl():
    """``(GRPOConfig, GRPOTrainer)`` from TRL, or an ``ImportError`` saying how to install it."""
    try:
        from trl import GRPOConfig, GRPOTrainer  # absolute: the package trl, not this module
    except ImportError as err:
        raise ImportError(TRL_MISSING) from err
    if not callable(getattr(GRPOTrainer, ROLLOUT_HOOK, None)):  # private: TRL may rename it in any release
        raise ImportError(f"this TRL ({_version('trl')}) has no GRPOTrainer.{ROLLOUT_HOOK}, the rollout the kit's "
                          "SFT term hooks into; install the tested range: pip install 'trl>=1.16,<2'")
    return GRPOConfig, GRPOTrainer


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown version"


def __getattr__(name):  # PEP 562: the TRL subclasses are built on first use
    if name in _LAZY:
        return _trl_classes()[name]
    raise AttributeError(f"module 'lab.integrations.trl' has no attribute {name!r}")


def to_dataset(examples: list[Example] | None = None, source: str = "bundled", split: str = "train",
               reference_column: str = "references", limit: int | None = None, tokenizer=None):
    """Examples as a TRL dataset: column ``prompt`` (the formatted prompt text, as the kit's
    trainer sees it) and ``reference_column`` (the reference answer), one row per example.

    ``examples``: a list of :class:`lab.data.Example`, in the order to train on; ``None`` loads
    ``load_examples(source, split, tokenizer=tokenizer, limit=limit)`` (``tokenizer``: format
    the prompts with its chat template). Keep ``reference_column="references"`` for the kit's
    rewards, which read that keyword.

    >>> ds = to_dataset(limit=3)
    >>> ds.column_names, len(ds)
    (['prompt', 'references'], 3)
    >>> ds[0]["prompt"].startswith("### Prompt:")
    True
    """
    from datasets import Dataset

    if examples is None:
        examples = load_examples(source, split, tokenizer=tokenizer, limit=limit)
    return Dataset.from_dict({"prompt": [e.prompt for e in examples],
                              reference_column: [e.completion for e in examples]})


class DiscriminatorReward:
    """The kit's critic as a TRL reward function, trained online on the true reward.

    Each call, on the completions of one TRL generation batch:

    1. ``R``: the true reward of the completions (``reward``: a :class:`lab.rewards.Reward`,
       or any TRL-signature reward function), computed once per batch;
    2. ``D(x, y)``: the critic's predictions for them, *before* its update;
    3. one :func:`lab.discriminator.train_step` on ``R`` (MSE, AdamW on its LoRA + head);

    and returns ``D(x, y)``. The true reward comes from the companion reward function
    :meth:`true_reward` (``R`` of the same batch, not computed twice), so TRL's
    ``reward_weights`` choose what GRPO maximises, as the kit's ``reward_source`` does::

        critic = DiscriminatorReward(Discriminator(policy, tokenizer), Reward({"rouge": 1.0}))
        reward_funcs = [critic.true_reward, critic]
        reward_weights = [1.0, 0.0]   # the true reward; the critic trains and is logged beside it
        reward_weights = [0.0, 1.0]   # the critic's score alone: the adversarial mode
        reward_weights = [0.5, 0.5]   # a mix

    TRL logs ``rewards/discriminator/mean`` and, through its ``log_metric`` hook,
    ``discriminator/mse`` (before the update) and ``discriminator/accuracy`` (how often the
    critic orders two completions as ``R`` does; 0.5 is chance). GRPO's own baseline is the
    group mean, so the critic is a diagnostic or an adversary here, never a baseline.

    ``disc`` may share the policy's backbone (``Discriminator(policy_peft_model, tokenizer)``
    adds its adapter to the same ``PeftModel``): its gradients are cleared after each update,
    so TRL's optimizer, which also holds the critic's parameters then, never steps them.
    """

    def __init__(self, disc: Discriminator, reward, lr: float = 3e-4,
                 optimizer: torch.optim.Optimizer | None = None):
        self.disc, self.reward = disc, reward
        self.optimizer = optimizer or torch.optim.AdamW(disc.parameters_to_train(), lr=lr)
        self.__name__ = "discriminator"  # TRL names reward functions by __name__
        self._last: tuple | None = None  # ((prompts, completions), R) of the latest batch

    def _true(self, prompts, completions, kwargs) -> torch.Tensor:
        """``R`` (N,) of this batch: computed on its first request, then reused."""
        key = (tuple(prompts), tuple(completions))
        if self._last is None or self._last[0] != key:
            out = self.reward(prompts, completions, **kwargs)
            values = getattr(out, "total", out)  # a kit Reward returns a RewardOutput
            self._last = (key, torch.tensor([math.nan if v is None else float(v) for v in values]))
        return self._last[1]

    def true_reward(self, prompts, completions, log_metric=None, **kwargs) -> list[float]:
        """The true reward ``R`` of the batch, as a TRL reward function (named ``true_reward``)."""
        return self._true(prompts, completions, kwargs).tolist()

    def __call__(self, prompts, completions, log_metric=None, **kwargs) -> list[float]:
        target = self._true(prompts, completions, kwargs)  # (N,)
        with torch.enable_grad():
            out = train_step(self.disc, self.optimizer, prompts, completions, target)
        self.optimizer.zero_grad(set_to_none=True)  # nothing left for an optimizer that shares the backbone
        scores = out["scores"].float().cpu()  # (N,) predictions before the update
        if log_metric is not None:
            log_metric("discriminator/mse", out["mse"])
            accuracy = pairwise_accuracy(scores, target)
            if accuracy == accuracy:  # NaN when every R ties
                log_metric("discriminator/accuracy", accuracy)
        return scores.tolist()


@functools.cache
def _trl_classes() -> dict:
    """Build ``HybridGRPOConfig`` and ``HybridGRPOTrainer`` on TRL's classes (once)."""
    from dataclasses import dataclass, field

    GRPOConfig, GRPOTrainer = require_trl()

    @dataclass
    class HybridGRPOConfig(GRPOConfig):
        """``GRPOConfig`` plus the kit's SFT term. Everything else is TRL's, with TRL's defaults."""

        sft_coef: float = field(default=1.0, metadata={"help": (
            "weight of the SFT term on the reference answers: loss = grpo_loss + sft_coef * sft_loss; "
            "0 is plain GRPO; 0.1-2 (the kit's lambda_rl=0.5 is sft_coef=2 up to the overall scale)")})
        reference_column: str = field(default="references", metadata={"help": (
            "dataset column holding each prompt's reference answer; 'references' is the keyword the "
            "kit's rewards read")})

        def __post_init__(self):
            super().__post_init__()
            if isinstance(self.sft_coef, bool) or not isinstance(self.sft_coef, (int, float)) \
                    or not math.isfinite(self.sft_coef) or self.sft_coef < 0:
                raise ValueError(f"sft_coef={self.sft_coef!r} must be a finite number >= 0 (0: plain GRPO)")
            if not isinstance(self.reference_column, str) or not self.reference_column:
                raise ValueError("reference_column must name the dataset column of the reference answers, "
                                 "e.g. 'references'")

    class HybridGRPOTrainer(GRPOTrainer):
        """TRL's GRPO plus the kit's SFT term: ``loss = grpo_loss + sft_coef * sft_loss``.

        ``compute_loss`` (the method TRL and transformers document for changing the objective)
        adds :meth:`sft_loss`, the completion-only cross-entropy of each prompt's reference
        answer, and logs it as ``sft_loss`` in ``trainer.state.log_history``. The reference
        answers reach it through one hook on TRL's rollout, ``_generate_and_score_completions``,
        which tokenises them beside the completions, so they follow TRL's shuffling and
        splitting of the batch. Takes ``args=HybridGRPOConfig(...)``; a dataset with the column
        ``args.reference_column`` (:func:`to_dataset`); everything else as ``GRPOTrainer``.
        """

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if not isinstance(self.args, HybridGRPOConfig):
                raise TypeError("HybridGRPOTrainer takes args=HybridGRPOConfig(...) (GRPOConfig plus "
                                "sft_coef and reference_column)")
            columns = getattr(self.train_dataset, "column_names", None)
            column = self.args.reference_column
            if self.args.sft_coef > 0 and columns is not None and column not in columns:
                raise ValueError(f"The training dataset has no column {column!r} for the SFT term (it has "
                                 f"{columns}); build it with lab.integrations.trl.to_dataset, or set reference_column")

        def _generate_and_score_completions(self, inputs):
            """TRL's rollout, plus ``sft_answer_ids``: each row's reference answer tokens + EOS."""
            output = super()._generate_and_score_completions(inputs)
            if self.args.sft_coef > 0:
                column = self.args.reference_column
                if column not in inputs[0]:
                    raise ValueError(f"The batch has no column {column!r} for the SFT term; keep "
                                     f"remove_unused_columns=False (GRPO's default)")
                output["sft_answer_ids"] = generator.answer_tokens(self._tokenizer, [x[column] for x in inputs])
            return output

        def sft_loss(self, model, inputs) -> torch.Tensor:
            """``-1/|y| sum_t log p(y_t | x, y_<t)`` over the reference answers (and EOS) of the
            batch's distinct (prompt, reference) pairs (a prompt's k rows count once), the prompts
            exactly as TRL tokenised them: :func:`lab.generator.response_logprobs` (one forward
            over ``prompt + answer``) and :func:`lab.losses.mean_nll`, the pieces of
            :func:`lab.generator.sft_loss`. Temperature 1, as in the kit."""
            prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]  # (n, P) left-padded
            answers = inputs["sft_answer_ids"]  # n token lists
            first: dict[tuple, int] = {}
            for i, (ids, mask, answer) in enumerate(zip(prompt_ids.tolist(), prompt_mask.tolist(), answers)):
                first.setdefault((tuple(t for t, m in zip(ids, mask) if m), tuple(answer)), i)
            rows = torch.tensor(list(first.values()), device=prompt_ids.device)  # (m,) one row per pair
            answer_ids, answer_mask = right_pad([answers[i] for i in rows.tolist()], self._tokenizer.pad_token_id,
                                                prompt_ids.device)  # (m, T)
            input_ids = torch.cat([prompt_ids[rows], answer_ids], dim=1)  # (m, P + T)
            attention_mask = torch.cat([prompt_mask[rows], answer_mask], dim=1)  # (m, P + T)
            response_mask = torch.cat([torch.zeros_like(prompt_mask[rows]), answer_mask], dim=1)  # (m, P + T)
            out = generator.response_logprobs(model, input_ids, attention_mask, response_mask)  # tokens: (m, P+T-1)
            return losses.mean_nll(out.tokens, response_mask[:, 1:])

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)  # GRPO (+ KL, entropy)
            if self.args.sft_coef == 0:
                return loss
            mode = "train" if self.model.training else "eval"
            sft = self.sft_loss(model, inputs)
            self._metrics[mode]["sft_loss"].append(self.accelerator.gather(sft.detach()).mean().item())
            # TRL divides its loss by the micro-batches of an optimizer step; the SFT term likewise
            scale = self.current_gradient_accumulation_steps if mode == "train" else 1
            return loss + self.args.sft_coef * sft / scale

    for cls in (HybridGRPOConfig, HybridGRPOTrainer):  # importable and picklable as lab.integrations.trl.<name>
        cls.__module__, cls.__qualname__ = __name__, cls.__name__
    return {"HybridGRPOConfig": HybridGRPOConfig, "HybridGRPOTrainer": HybridGRPOTrainer}
