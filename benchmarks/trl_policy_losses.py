"""TRL's numbers for the kit's policy-loss test: one hand-built batch through TRL's own
``GRPOTrainer._compute_loss`` under each ``loss_type`` (and GSPO's sequence ratio).

    python benchmarks/trl_policy_losses.py   # needs trl (the dev install); prints JSON

``tests/test_loss_types.py`` holds the printed numbers, so the test runs without TRL and fails
when :func:`lab.losses.policy_loss` drifts from TRL's formulas. The batch: 3 responses of
lengths 4, 2 and 3 (a padded tail), advantages of both signs, ratios inside and outside the
clip range. The loss is TRL's value; ``weights`` is ``-d loss / d log pi`` per token.
"""

import json
from collections import defaultdict
from types import SimpleNamespace

import torch

LOGPROBS = [[-1.0, -0.5, -2.0, -0.3], [-0.7, -1.2, 0.0, 0.0], [-0.2, -1.5, -0.9, 0.0]]
OLD = [[-1.1, -0.9, -1.6, -0.3], [-0.7, -0.8, 0.0, 0.0], [-0.5, -1.5, -0.85, 0.0]]
MASK = [[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]]
ADVANTAGES = [1.0, -0.5, 2.0]
MAX_TOKENS = 5
CASES = [("grpo", "token", 0.2), ("dr_grpo", "token", 0.2), ("bnpo", "token", 0.2), ("dapo", "token", 0.28),
         ("grpo", "sequence", 0.2)]


def trl_loss(loss_type: str, level: str, epsilon_high: float) -> dict:
    from trl import GRPOTrainer  # here, so that the test can import the batch without TRL

    logprobs = torch.tensor(LOGPROBS, requires_grad=True)
    mask = torch.tensor(MASK)
    accelerator = SimpleNamespace(num_processes=1, reduce=lambda x, reduction: x, gather=lambda x: x)
    trainer = SimpleNamespace(  # just what _compute_loss reads
        _get_per_token_logps_and_entropies=lambda *a, **k: (logprobs, torch.zeros_like(logprobs), None),
        top_entropy_quantile=1.0, aux_loss_enabled=False, _entropy_bonus_enabled=False, off_policy_mask_threshold=None,
        importance_sampling_level=level, beta=0.0, loss_type=loss_type, epsilon_low=0.2, epsilon_high=epsilon_high,
        args=SimpleNamespace(delta=None, steps_per_generation=1), use_vllm=False,
        current_gradient_accumulation_steps=1, max_completion_length=MAX_TOKENS, accelerator=accelerator,
        model=SimpleNamespace(training=True), _metrics=defaultdict(lambda: defaultdict(list)))
    inputs = {"prompt_ids": torch.zeros(3, 1, dtype=torch.long), "prompt_mask": torch.ones(3, 1, dtype=torch.long),
              "completion_ids": torch.zeros(3, 4, dtype=torch.long), "completion_mask": mask,
              "advantages": torch.tensor(ADVANTAGES), "old_per_token_logps": torch.tensor(OLD),
              "num_items_in_batch": mask.sum().float()}
    loss = GRPOTrainer._compute_loss(trainer, None, inputs)
    (grad,) = torch.autograd.grad(loss, logprobs)
    return {"loss": round(loss.item(), 8), "weights": [[round(-g, 8) for g in row] for row in grad.tolist()]}


if __name__ == "__main__":
    print(json.dumps({f"{t}/{lvl}": trl_loss(t, lvl, eps) for t, lvl, eps in CASES}, indent=None))
