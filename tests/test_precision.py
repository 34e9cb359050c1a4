"""fp16 on a CUDA GPU without bf16 (Colab's T4), checked on the CPU by simulation: ``dtype: auto``
picks fp16 there, and the optimizer's gradient scaler scales the loss, unscales the gradients,
steps as without it, and backs off on an overflow instead of stepping."""

import pytest
import torch

from lab import models
from lab.runtime import precision
from lab.runtime.guards import finite_update


@pytest.mark.parametrize("has_bf16, expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_on_a_cuda_gpu_picks_bf16_where_it_has_it_else_fp16(monkeypatch, has_bf16, expected):
    monkeypatch.delenv("LAB_DTYPE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: has_bf16)  # the capability check
    assert models.pick_dtype(torch.device("cuda"), "auto") == expected
    assert precision.needs_scaler(expected, torch.device("cuda")) == (expected == torch.float16)
    assert not precision.needs_scaler(torch.float16, torch.device("cpu"))


def test_a_model_gets_a_scaler_only_with_fp16_weights_on_cuda():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)
    assert precision.attach(optimizer, torch.nn.Linear(2, 2)) is None  # fp32 on the CPU
    assert precision.attach_all({"generator": (optimizer, torch.nn.Linear(2, 2).half())}) == {}  # fp16, not CUDA


CPU_SCALER = pytest.mark.skipif(not hasattr(torch.amp, "GradScaler"),
                                reason="simulates the T4's scaler with torch.amp's CPU one (torch >= 2.3)")


def steps(scaled: bool, grad_scale: float = 1.0):
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    optimizer = torch.optim.SGD([w], lr=0.1)
    scaler = precision.register(optimizer, torch.amp.GradScaler("cpu", init_scale=1024.0)) if scaled else None
    stepped, norm, overflow = finite_update(optimizer, [w], (w * w).sum() * grad_scale, max_norm=10.0)
    return w.detach(), stepped, norm, scaler, overflow


@CPU_SCALER
def test_the_scaler_steps_exactly_as_without_it_and_reports_the_true_gradient_norm():
    plain, scaled = steps(False), steps(True)
    assert torch.allclose(plain[0], scaled[0]) and scaled[1] and scaled[2] == pytest.approx(plain[2])
    assert scaled[3].get_scale() == 1024.0  # no overflow: the scale stays (it grows after 2000 good steps)


@CPU_SCALER
def test_an_overflow_skips_the_step_and_backs_off_the_scale():
    w, stepped, norm, scaler, overflow = steps(True, grad_scale=1e36)  # the scaled gradient overflows fp32
    assert not stepped and w.tolist() == [1.0, -2.0] and scaler.get_scale() == 512.0
    assert overflow  # said apart: the run's non-finite guard ignores it


@CPU_SCALER
def test_a_scaler_overflow_is_not_a_skipped_update_of_the_generator(examples):
    from lab import objective
    from tiny import make

    trainer = make(examples, mode="sft", baseline="ema")
    precision.register(trainer.opt_gen, torch.amp.GradScaler("cpu", init_scale=1e38))  # the first step overflows
    batch = trainer.batch(1)
    prompt_ids, prompt_mask = trainer.tokenizer([e.prompt for e in batch], return_tensors="pt", padding=True).values()
    from lab import generator

    gen = objective.GeneratorBatch(prompt_ids, prompt_mask, generator.answer_tokens(
        trainer.tokenizer, [e.completion for e in batch]), None, None)
    logs = objective.update(trainer.model, trainer.opt_gen, trainer.gen_params, gen, trainer.config, 0.0,
                            trainer.tokenizer.pad_token_id)
    assert logs["skipped_updates"] == 0 and logs["scaler_overflows"] == 1
