"""TRL's policy-loss family (``loss_type``) in :func:`lab.losses.policy_loss`: the same numbers as
TRL 1.16's ``GRPOTrainer._compute_loss`` on one hand-built batch (printed by
``python benchmarks/trl_policy_losses.py``), and at ratio 1 every type's gradient is REINFORCE's
up to a positive per-response factor, its normalisation."""

import pytest
import torch

from benchmarks.trl_policy_losses import ADVANTAGES, LOGPROBS, MASK, MAX_TOKENS, OLD
from lab import losses

# (loss_type, importance_sampling_level, epsilon_high) -> TRL's loss and -d loss / d log pi per token
TRL = {
    ("grpo", "token", 0.2): {"loss": -0.88156414, "weights": [[0.09209758, -0.0, 0.05586001, 0.08333334], [-0.08333334, -0.0, -0.0, -0.0], [-0.0, 0.22222222, 0.21138433, 0.0]]},  # noqa: E501
    ("dr_grpo", "token", 0.2): {"loss": -0.6251967, "weights": [[0.07367807, -0.0, 0.04468801, 0.06666667], [-0.03333334, -0.0, -0.0, -0.0], [-0.0, 0.13333334, 0.12683061, 0.0]]},  # noqa: E501
    ("bnpo", "token", 0.2): {"loss": -1.04199457, "weights": [[0.12279677, -0.0, 0.07448, 0.11111111], [-0.05555556, -0.0, -0.0, -0.0], [-0.0, 0.22222222, 0.21138433, 0.0]]},  # noqa: E501
    ("dapo", "token", 0.28): {"loss": -1.06866121, "weights": [[0.12279677, -0.0, 0.07448, 0.11111111], [-0.05555556, -0.0, -0.0, -0.0], [-0.0, 0.22222222, 0.21138433, 0.0]]},  # noqa: E501
    ("grpo", "sequence", 0.2): {"loss": -0.9299193, "weights": [[0.08544293, 0.08544293, 0.08544293, 0.08544293], [-0.06822756, -0.06822756, -0.0, -0.0], [0.24153423, 0.24153423, 0.24153423, 0.0]]},  # noqa: E501
}


def batch():
    return (torch.tensor(LOGPROBS, requires_grad=True), torch.tensor(OLD), torch.tensor(ADVANTAGES),
            torch.tensor(MASK))


@pytest.mark.parametrize("case", list(TRL), ids=lambda c: f"{c[0]}-{c[1]}")
def test_each_loss_type_matches_trl_on_a_batch_of_unequal_lengths_and_mixed_signs(case):
    loss_type, level, epsilon_high = case
    logprobs, old, advantages, mask = batch()
    loss, stats = losses.policy_loss(logprobs, old, advantages, mask, loss_type, 0.2, epsilon_high, level,
                                     max_tokens=MAX_TOKENS)
    assert loss.item() == pytest.approx(TRL[case]["loss"], abs=1e-6)
    weights = losses.token_weights(loss, logprobs)
    assert torch.allclose(weights, torch.tensor(TRL[case]["weights"]), atol=1e-6)
    assert not stats["clipped"][~torch.tensor(MASK).bool()].any()  # padding is never counted
    assert stats["clipped"].any() == (level == "token")  # two token ratios leave [0.8, 1.2]; no sequence ratio


def test_dapo_clips_higher_and_divides_by_the_whole_steps_tokens():
    up = torch.tensor([[1.25, 1.0]]).log().requires_grad_()  # a good answer's first token: ratio 1.25
    args = (torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2), "dapo", 0.2)
    assert losses.policy_loss(up, *args, 0.2)[1]["clip_frac"] == 0.5  # clipped at 1.2 ...
    assert losses.policy_loss(up, *args, 0.28)[1]["clip_frac"] == 0  # ... not at DAPO's 1.28
    logprobs, old, advantages, mask = batch()
    half = losses.policy_loss(logprobs, old, advantages, mask, "dapo", normalizer=2 * mask.sum())[0]
    assert half.item() == pytest.approx(losses.policy_loss(logprobs, old, advantages, mask, "bnpo")[0].item() / 2)


@pytest.mark.parametrize("loss_type,level", [("ppo", "token"), ("grpo", "token"), ("dr_grpo", "token"),
                                             ("bnpo", "token"), ("dapo", "token"), ("grpo", "sequence")])
def test_at_ratio_one_every_type_is_reinforce_up_to_a_positive_per_response_factor(loss_type, level):
    logprobs, _, advantages, mask = batch()
    reinforce = losses.reinforce_loss((logprobs * mask).sum(-1), advantages)
    base = losses.token_weights(reinforce, logprobs)  # A_i / N on each token of response i
    loss, stats = losses.policy_loss(logprobs, logprobs.detach(), advantages, mask, loss_type, level=level,
                                     max_tokens=MAX_TOKENS)
    assert stats["clip_frac"] == 0 and torch.allclose(stats["ratio"], torch.ones(3, 4))
    weights = losses.token_weights(loss, logprobs)
    lengths, n = mask.sum(-1).float(), len(mask)
    factor = {"ppo": torch.ones(n), "grpo": 1 / lengths, "dr_grpo": torch.full((n,), n / (n * MAX_TOKENS)),
              "bnpo": torch.full((n,), n / lengths.sum()), "dapo": torch.full((n,), n / lengths.sum())}[loss_type]
    assert torch.allclose(weights, base * factor[:, None] * mask, atol=1e-7)


def test_bad_loss_settings_say_what_to_fix():
    logprobs, old, advantages, mask = batch()
    with pytest.raises(ValueError, match="max_tokens"):
        losses.policy_loss(logprobs, old, advantages, mask, "dr_grpo")
    with pytest.raises(ValueError, match="'token' or 'sequence'"):
        losses.policy_loss(logprobs, old, advantages, mask, level="seq")
    with pytest.raises(ValueError, match="Unknown clipped loss_type"):
        losses.policy_loss(logprobs, old, advantages, mask, "reinforce")


@pytest.mark.parametrize("changes", [dict(loss_type="grpo"), dict(loss_type="dr_grpo"), dict(loss_type="bnpo"),
                                     dict(loss_type="dapo", epsilon_high=0.28),
                                     dict(loss_type="grpo", importance_sampling_level="sequence")],
                         ids=lambda c: "-".join(map(str, c.values())))
def test_each_loss_type_trains_in_the_loop_with_epochs_and_minibatches(examples, changes):
    from tiny import make

    trainer = make(examples, mode="rl", baseline="group", ppo_epochs=2, ppo_minibatches=2, **changes)
    rows = [trainer.step() for _ in range(2)]
    for row in rows:
        assert row["skipped_updates"] == 0 and row["loss_rl"] == row["loss_rl"]
        assert 0 <= row["clip_frac"] <= 1 and row["approx_kl"] >= 0


def test_a_config_saved_with_the_old_name_policy_loss_still_loads():
    from lab.config import HybridConfig

    assert HybridConfig.from_dict({"policy_loss": "ppo"}).loss_type == "ppo"
    assert HybridConfig.from_dict({"objective": {"policy_loss": "grpo"}}).loss_type == "grpo"
    with pytest.raises(ValueError, match="GSPO"):
        HybridConfig(importance_sampling_level="sequence")
