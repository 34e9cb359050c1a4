"""The token-level view of one update (notebook 08): the same rollouts under each loss type, per
token, and the heatmap that draws them; "why is the loss 0?" on real numbers."""

import numpy as np
import pytest
import torch

from lab.eval import token_view
from lab.ui import plots
from tiny import make


@pytest.fixture(scope="module")
def rollouts(examples_module):
    trainer = make(examples_module, mode="rl", baseline="group", samples_per_prompt=3)
    return token_view.rollouts(trainer, lr=5e-2)


@pytest.fixture(scope="module")
def examples_module():
    from lab.data import load_examples

    return load_examples("bundled", "train", limit=12)


def test_the_update_moves_the_ratios_and_every_view_covers_the_response_tokens(rollouts):
    on = rollouts.mask.bool()
    assert not torch.allclose(rollouts.new[on], rollouts.old[on])  # one REINFORCE step: ratios left 1
    seen = token_view.views(rollouts)
    assert list(seen) == ["reinforce", "grpo", "dr_grpo", "bnpo", "dapo", "gspo"]
    for view in seen.values():
        assert view.weight.shape == tuple(rollouts.mask.shape)
        assert np.isnan(view.weight[~on.numpy()]).all() and not np.isnan(view.weight[on.numpy()]).any()
    n = len(rollouts.advantages)
    expected = (rollouts.advantages[:, None] / n).expand_as(rollouts.mask).numpy()
    assert np.allclose(seen["reinforce"].weight[on.numpy()], expected[on.numpy()], atol=1e-6)  # A_i / N
    gspo = seen["gspo"]
    for row, keep in zip(gspo.ratio, on.numpy()):  # one ratio per response
        assert np.allclose(row[keep], row[keep][0])


def test_why_the_loss_is_zero_a_zero_mean_advantage_still_has_a_gradient_equal_rewards_none(rollouts):
    k = 3
    fresh = token_view.Rollouts(**{**rollouts.__dict__, "new": rollouts.old})  # ratio 1: the first pass
    view = token_view.token_view(fresh, "grpo")
    per_prompt = rollouts.advantages.view(-1, k).sum(-1)
    assert torch.allclose(per_prompt, torch.zeros_like(per_prompt), atol=1e-5)  # group advantages: mean 0
    assert view.loss == pytest.approx(-float(rollouts.advantages.view(-1, k).mean()), abs=1e-6)  # so loss ~ 0 ...
    assert np.nanmax(np.abs(view.weight)) > 0  # ... but the tokens are still pushed
    tied = token_view.token_view(fresh, "grpo", advantages=torch.zeros(len(rollouts.advantages)))
    assert tied.loss == 0 and np.nanmax(np.abs(tied.weight)) == 0  # a group of equal rewards: nothing moves


def test_the_heatmap_draws_one_panel_per_loss_type(rollouts):
    fig = plots.token_heatmap(token_view.views(rollouts, ["reinforce", "grpo", "dapo", "gspo"]), rollouts.tokens)
    assert len(fig.axes) == 4 and fig.axes[1].get_title().startswith("grpo: loss")
    assert plots.token_heatmap(token_view.views(rollouts, ["grpo"]), rollouts.tokens, field="ratio").axes
