"""On-policy distillation: the generator learns from its own samples by the reverse KL to a
teacher, token by token (``mode="distill"``).

- Self-distillation (SDFT, arXiv 2601.19897; the default): the teacher is the same backbone, with
  the current adapter (``distill_teacher="policy"``) or with adapters off (``"base"``), shown the
  reference answer before the prompt (:data:`DEMONSTRATION`). It knows what a good answer looks
  like, so its next-token distribution on the student's own sample says which tokens to change,
  without a second model and without a reward.
- A larger teacher (``distill_from=MODEL``, on-policy distillation as in Thinking Machines, Oct
  2025): any causal LM with the generator's tokenizer, shown the plain prompt.

The loss (:func:`reverse_kl`) is ``KL(student || teacher)`` summed over the vocabulary at each
sampled position and averaged over the response tokens: mode-seeking, 0 exactly where the two
agree, so a teacher that sees the same context as the student teaches nothing.

Shapes: ``B`` prompts, ``k`` samples each, ``N = B * k``, ``T`` response tokens, ``V`` the vocabulary.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from lab import generator
from lab.core.tensors import eval_mode, left_pad, model_device, right_pad
from lab.models import load

DEMONSTRATION = "Here is an example of a good answer:\n{reference}\n\n"  # before the prompt, which ends where the answer starts


def reverse_kl(student_logits: torch.Tensor, teacher_logprobs: torch.Tensor,
               mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, per_token)``: ``KL(p_student || p_teacher) = sum_v p_s(v) (log p_s(v) - log p_t(v))``
    at each position (N, T), exact over the vocabulary, and its mean over the tokens where ``mask``
    is 1. ``student_logits`` (N, T, V) carry the gradient; ``teacher_logprobs`` (N, T, V) do not.

    >>> logits = torch.tensor([[[2.0, 0.0]]])
    >>> reverse_kl(logits, logits.log_softmax(-1), torch.ones(1, 1))[0].item()
    0.0
    """
    if student_logits.shape != teacher_logprobs.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher log-probs "
                         f"{tuple(teacher_logprobs.shape)} differ: the teacher needs the generator's vocabulary")
    student = F.log_softmax(student_logits.float(), dim=-1)  # (N, T, V)
    on = mask.to(student.dtype)  # (N, T)
    per_token = (student.exp() * (student - teacher_logprobs.detach().float())).sum(-1) * on  # (N, T)
    return per_token.sum() / on.sum().clamp(min=1), per_token.detach()


class Teacher:
    """The teacher's next-token log-probs on the student's samples (:meth:`logprobs`).

    ``model``: the generator's own peft model (``adapter``: the adapter it uses, None for the base
    with adapters off) or a separate causal LM; ``conditioned``: shown the reference answer first.
    """

    def __init__(self, model, tokenizer, adapter: str | None, conditioned: bool, max_prompt_tokens: int):
        self.model, self.tokenizer, self.adapter = model, tokenizer, adapter
        self.conditioned, self.max_prompt_tokens = conditioned, max_prompt_tokens

    @classmethod
    def for_config(cls, config, model, tokenizer, device) -> "Teacher":
        """The teacher a :class:`lab.config.HybridConfig` names: ``distill_from`` (loaded here, its
        tokenizer checked) or the generator itself (SDFT)."""
        if config.distill_from:
            teacher, teacher_tokenizer = load(config.distill_from, device, config.dtype)
            if teacher_tokenizer.get_vocab() != tokenizer.get_vocab():
                raise ValueError(f"distill_from={config.distill_from!r} has another tokenizer than the generator "
                                 f"{config.model!r}; the reverse KL compares next-token distributions token by token, "
                                 "so the teacher must share the tokenizer (a larger model of the same family)")
            widths = (teacher.get_output_embeddings().weight.shape[0], model.get_output_embeddings().weight.shape[0])
            if widths[0] != widths[1]:
                raise ValueError(f"distill_from={config.distill_from!r} predicts {widths[0]} tokens, the generator "
                                 f"{widths[1]}: the reverse KL needs the same output vocabulary")
            teacher.eval().requires_grad_(False)
            return cls(teacher, tokenizer, None, conditioned=False, max_prompt_tokens=config.max_prompt_tokens)
        adapter = "generator" if config.distill_teacher == "policy" else None
        return cls(model, tokenizer, adapter, conditioned=True, max_prompt_tokens=config.max_prompt_tokens)

    def context_ids(self, prompt_ids: list[int], reference: str) -> list[int]:
        """What the teacher reads before the answer: the student's prompt tokens exactly, after the
        demonstration of ``reference`` if conditioned (after a leading BOS, which stays first)."""
        if not self.conditioned:
            return list(prompt_ids)
        demo = self.tokenizer(DEMONSTRATION.format(reference=reference), add_special_tokens=False)["input_ids"]
        demo = demo[:self.max_prompt_tokens]  # a long reference: its start
        bos = self.tokenizer.bos_token_id
        head = 1 if prompt_ids and bos is not None and prompt_ids[0] == bos else 0
        return list(prompt_ids[:head]) + demo + list(prompt_ids[head:])

    @torch.no_grad()
    def logprobs(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, references: list[str],
                 responses: list[list[int]]) -> torch.Tensor:
        """Log-probs (N, T, V) of every next token at each of the ``responses``' positions (N token
        lists, ``N / B`` per prompt, prompt-major), right-padded as the objective pads them. ``prompt_ids``,
        ``prompt_mask`` (B, P): the prompts exactly as the student saw them (left-padded)."""
        device = model_device(self.model)
        rows = [ids[mask.bool()].tolist() for ids, mask in zip(prompt_ids, prompt_mask)]  # B unpadded prompts
        ids, mask = left_pad([self.context_ids(row, ref) for row, ref in zip(rows, references, strict=True)],
                             self.tokenizer.pad_token_id, device)  # (B, P')
        conts, cont_mask = right_pad(responses, self.tokenizer.pad_token_id, device)  # (N, T)
        index = torch.arange(len(rows), device=device).repeat_interleave(len(responses) // len(rows))  # (N,)
        if self.adapter is None and hasattr(self.model, "disable_adapter"):
            adapters = self.model.disable_adapter()  # the base: the generator's backbone, adapters off
        else:
            adapters = contextlib.nullcontext()  # the current adapter, or a teacher of its own
        with adapters, eval_mode(self.model):  # no dropout: the teacher's distribution, not a noisy draw
            logits = generator.continuation_logits(self.model, ids, mask, conts, cont_mask, index)  # (N, T, V)
        return F.log_softmax(logits.float(), dim=-1)
