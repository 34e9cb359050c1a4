"""Tensor plumbing shared by the generator, the discriminator and the rewards.

Padding, tokenizing, prompt grouping, position ids, the positions whose logits to keep,
the response mask up to the first EOS, the model's device and :func:`eval_mode`. Plain torch
only: nothing here knows about policies, rewards or critics, or about a transformers version.

Shapes: ``U`` distinct prompts, ``N`` rows, ``P`` prompt tokens (left padded), ``T``
continuation tokens (right padded).
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


def model_device(model) -> torch.device:
    """The device of the model's first parameter."""
    return next(model.parameters()).device


@contextmanager
def eval_mode(*modules):
    """Put ``modules`` in eval mode (no dropout) for the block, then restore each one's mode.

    >>> layer = torch.nn.Dropout(0.5)
    >>> with eval_mode(layer):
    ...     layer.training
    False
    >>> layer.training
    True
    """
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


def left_pad(rows: list[list[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id lists -> left-padded ``(input_ids, attention_mask)``, each (N, max length).

    >>> left_pad([[5, 6], [7]], 0)
    (tensor([[5, 6],
            [0, 7]]), tensor([[1, 1],
            [0, 1]]))
    """
    return _pad(rows, pad_id, device, left=True)


def right_pad(rows: list[list[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id lists -> right-padded ``(input_ids, mask)``, each (N, max length).

    >>> right_pad([[5, 6], [7]], 0)[0]
    tensor([[5, 6],
            [7, 0]])
    """
    return _pad(rows, pad_id, device, left=False)


def _pad(rows: list[list[int]], pad_id: int, device, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (N, W)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (N, W)
    for i, row in enumerate(rows):
        if row:
            cols = slice(width - len(row), width) if left else slice(0, len(row))
            input_ids[i, cols] = torch.tensor(row, dtype=torch.long)
            mask[i, cols] = 1
    return input_ids.to(device), mask.to(device)


def encode(tokenizer, texts: list[str], max_length: int, device=None,
           add_special_tokens: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenize, keep each text's last ``max_length`` tokens, left-pad: ``(input_ids, attention_mask)``."""
    ids = tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]
    return left_pad([row[-max_length:] for row in ids], tokenizer.pad_token_id, device)


def group_prompts(prompts: list[list[int]], device=None) -> tuple[list[list[int]], torch.Tensor]:
    """Each distinct token list once, in first-seen order, and the (N,) index of every row's
    one: what :func:`lab.generator.forward_after_prompts` takes to compute a shared prompt once.

    >>> group_prompts([[1, 2], [3], [1, 2]])
    ([[1, 2], [3]], tensor([0, 1, 0]))
    """
    first: dict[tuple, int] = {}
    index = [first.setdefault(tuple(p), len(first)) for p in prompts]
    return [list(p) for p in first], torch.tensor(index, device=device)


def until_first_eos(tokens: torch.Tensor, eos_id: int) -> torch.Tensor:
    """1 on tokens up to and including the first ``eos_id`` of each row, 0 after it.

    >>> until_first_eos(torch.tensor([[4, 2, 5, 2]]), eos_id=2)
    tensor([[1, 1, 0, 0]])
    """
    is_eos = (tokens == eos_id).long()  # (N, T)
    eos_before = is_eos.cumsum(-1) - is_eos  # (N, T) EOS tokens strictly before t
    return (eos_before == 0).long()  # (N, T)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that start at 0 on the first real token: ``cumsum - 1`` clamped at 0.

    With left padding the first real token then sits at position 0 in every row, as in
    ``generate``, so log-probs computed later match the ones the sampler used.

    >>> position_ids(torch.tensor([[0, 1, 1], [1, 1, 1]]))
    tensor([[0, 0, 1],
            [0, 1, 2]])
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (N, L)


def kept_positions(length: int, count: int, device=None) -> torch.Tensor:
    """``logits_to_keep`` for the last ``count`` of ``length`` positions, as an index tensor (count,).

    An int ``logits_to_keep`` makes transformers slice a strided view of the hidden states, which
    ``torch.matmul`` cannot fold into one matrix product with a frozen LM head: it multiplies a
    batch of expanded copies of the head's weight instead (README, section Benchmark). Gathered
    rows give the same logits from one product.

    >>> kept_positions(5, 2)
    tensor([3, 4])
    """
    return torch.arange(length - count, length, device=device)
