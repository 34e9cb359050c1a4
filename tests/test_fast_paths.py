"""The speed paths give the plain path's results: a discriminator nothing reads is not trained
(the generator's update is unchanged), bf16 weights train like fp32 within a tolerance,
decoding with the adapter folded into the weights samples the same answers, the fast decoder
(preallocated cache, ready-made mask, prepacked bf16 weights) gives the plain loop's tokens,
greedy and sampled, and where its self-check fails the plain loop serves, with one warning."""

import contextlib
import copy
import functools
import warnings
from unittest import mock

import pytest
import torch

from lab.config import HybridConfig
import tiny


def _lora(trainer, adapter):
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if f".{adapter}." in n}


@pytest.mark.parametrize("changes, used", [
    ({}, True), ({"baseline": "ema"}, False), ({"mode": "rl", "baseline": "ema"}, False),
    ({"baseline": "ema", "train_discriminator": "always"}, True), ({"baseline": "critic"}, True),
    ({"reward_source": "discriminator"}, True), ({"mode": "selfplay"}, True),
    ({"baseline": "ema", "lambda_schedule": "adaptive"}, True),
    ({"baseline": "ema", "discriminator_aux_weight": 0.5}, True),
])
def test_the_discriminator_trains_only_when_its_scores_are_read(changes, used):
    assert HybridConfig(**changes).discriminator_used is used


def test_skipping_an_unread_discriminator_leaves_the_generator_update_unchanged(examples):
    fast = tiny.make(examples, baseline="ema")  # the D-free hybrid: EMA baseline, the true reward: nothing reads D
    disc_before = _lora(fast, "discriminator")
    fast.run(2, progress=False)  # each trainer seeds the global RNG: build the second one after
    plain = tiny.make(examples, baseline="ema", train_discriminator="always")
    plain.run(2, progress=False)
    assert "d_loss" not in fast.history and "time_disc" not in fast.history
    assert "d_loss" in plain.history and plain.history["time_disc"].notna().all()
    for name, value in _lora(fast, "discriminator").items():  # not trained
        assert torch.equal(value, disc_before[name])
    for column in ("loss", "loss_sft", "loss_rl", "reward", "grad_norm"):  # the generator's step: identical
        assert fast.history[column].tolist() == pytest.approx(plain.history[column].tolist(), abs=1e-6)
    plain_lora = _lora(plain, "generator")
    for name, value in _lora(fast, "generator").items():
        assert torch.allclose(value, plain_lora[name], atol=1e-6)
    assert fast.samples["d_pred"].isna().all()  # no score was computed, none is invented


def test_bf16_weights_train_like_fp32_within_tolerance(examples):
    runs = {}
    for dtype in ("float32", "bfloat16"):
        runs[dtype] = tiny.make(examples, dtype=dtype, mode="sft")
        runs[dtype].run(3, progress=False)
    bf16 = runs["bfloat16"].model
    assert next(bf16.get_base_model().parameters()).dtype == torch.bfloat16
    assert {p.dtype for p in runs["bfloat16"].gen_params} == {torch.float32}  # adapters train in fp32
    fp32, half = runs["float32"].history["loss_sft"], runs["bfloat16"].history["loss_sft"]
    # bf16 keeps 8 bits of mantissa: per-token log-probs differ by ~1e-2 relative; the mean loss
    # of a step agrees within 2% (measured: under 0.5% on tiny-gpt2)
    assert half.tolist() == pytest.approx(fp32.tolist(), rel=0.02)
    hybrid = tiny.make(examples, dtype="bfloat16")
    hybrid.run(1, progress=False)
    assert hybrid.history[["loss", "reward"]].notna().all().all()


def test_folded_adapter_decodes_the_same_function_and_restores_the_weights():
    from lab import generator, models
    from lab.fast.folding import folded

    model, tok = models.load("tiny-gpt2", "cpu", "float32", verbose=False)
    model = models.add_lora(model, "generator", r=4, alpha=8, dropout=0.0)
    with torch.no_grad():  # a trained-looking adapter: B != 0
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    ids = tok(["The capital of France is"], return_tensors="pt")["input_ids"]  # (1, P)
    weights = {n: p for n, p in model.named_parameters() if "lora_" not in n}
    with torch.no_grad():
        plain = model(input_ids=ids).logits  # (1, P, V)
        with folded(model):
            fold = model(input_ids=ids).logits
        with model.disable_adapter():
            base = model(input_ids=ids).logits
    assert torch.allclose(fold, plain, atol=1e-5) and not torch.allclose(base, plain, atol=1e-3)
    assert all(p is weights[n] for n, p in model.named_parameters() if "lora_" not in n)  # put back
    assert all(p.requires_grad for n, p in model.named_parameters() if ".generator." in n)
    prompts = ["Name a colour.", "Count to three."]
    draws = []
    for fold in (lambda m: contextlib.nullcontext(m), folded):  # unfolded, then folded: same seeds
        torch.manual_seed(0)
        with mock.patch("lab.fast.decoder.folded", fold):
            draws.append(generator.sample(model, tok, prompts, k=2, max_new_tokens=8).completions)
    assert draws[0] == draws[1]


@pytest.mark.parametrize("arch", ["llama", "llama-eager", "gpt2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_lean_decoder_gives_generates_tokens(arch, dtype):
    from lab import generator, models
    from lab.fast import decoder
    from lab.core import tensors

    if arch.startswith("llama"):
        model, tok = tiny.llama(dtype, "eager" if arch.endswith("eager") else "sdpa")
    else:
        model, tok = models.load("tiny-gpt2", "cpu", dtype, verbose=False)
    prompts = ["### Prompt:\nName a colour.\n\n### Response:\n", "Hi", "Count: one two"]
    used, preallocate = [], decoder.preallocate
    with mock.patch.object(decoder, "preallocate", lambda *args: used.append(preallocate(*args)) or used[-1]):
        ours = generator.sample(model, tok, prompts, k=2, max_new_tokens=12, do_sample=False)
    assert used and all(used)  # the preallocated cache was used (eager: with the 2D mask), check included
    ids, mask = tensors.encode(tok, ours.prompts, 256)
    theirs = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False,
                            pad_token_id=tok.pad_token_id)  # (6, P + 12)
    assert ours.completions == [tok.decode(row[ids.shape[1]:], skip_special_tokens=True).strip() for row in theirs]


PROMPTS = ["### Prompt:\nName a colour.\n\n### Response:\n", "Hi", "Count: one two"]


def _model(arch, dtype):
    from lab import models

    if arch.startswith("llama"):
        return tiny.llama(dtype, "eager" if arch.endswith("eager") else "sdpa")
    return models.load("tiny-gpt2", "cpu", dtype, verbose=False)


@pytest.mark.parametrize("arch", ["llama", "llama-eager", "gpt2"])
@pytest.mark.parametrize("dtype, sampling", [
    (torch.float32, dict(do_sample=False)), (torch.float32, dict(temperature=0.7, top_p=0.9)),
    (torch.float32, dict(temperature=1.3, top_p=1.0)), (torch.bfloat16, dict(do_sample=False)),
])
def test_the_fast_decoder_gives_the_plain_loops_tokens_and_draws_the_same_random_numbers(arch, dtype, sampling):
    from lab import generator
    from lab.core import tensors
    from lab.fast import decoder

    model, tok = _model(arch, dtype)
    ids, mask = tensors.encode(tok, PROMPTS, 256)  # (B, P) left padded
    draws = []
    for decode in (generator.decode, functools.partial(decoder.decode, next_token=generator.next_token)):
        torch.manual_seed(0)
        tokens = decode(model, ids, mask, 3, 12, tok.eos_token_id, tok.pad_token_id, **sampling)  # (9, T)
        draws.append((tokens, torch.rand(4)))  # the next random numbers: the same RNG consumption
    (plain, after_plain), (fast, after_fast) = draws
    assert torch.equal(plain, fast) and torch.equal(after_plain, after_fast)


def test_sample_uses_the_fast_decoder_where_its_check_passes_without_drawing_random_numbers(tiny):
    from lab import generator
    from lab.fast import check, decoder

    model, tok = copy.deepcopy(tiny[0]), tiny[1]  # a model the check has not seen
    calls = []
    fast = decoder.decode
    torch.manual_seed(0)
    state = torch.get_rng_state()
    assert check.same_greedy_tokens(model, functools.partial(fast, next_token=generator.next_token), generator.decode,
                                    tok.eos_token_id, tok.pad_token_id) is None
    assert torch.equal(state, torch.get_rng_state())  # greedy: the check leaves the random stream as it was
    spy = (lambda *args, **kwargs: calls.append(1) or fast(*args, **kwargs))
    with warnings.catch_warnings(), mock.patch.object(decoder, "decode", spy):
        warnings.simplefilter("error")  # no warning either
        generator.sample(model, tok, PROMPTS, k=2, max_new_tokens=6)
        generator.sample(model, tok, PROMPTS, k=2, max_new_tokens=6)
    assert len(calls) == 3  # the check once, then each sample


@pytest.mark.parametrize("failure", ["differs", "raises"])
def test_sample_falls_back_to_the_plain_loop_with_one_warning(tiny, failure):
    from lab import generator
    from lab.core import tensors
    from lab.fast import decoder

    model, tok = copy.deepcopy(tiny[0]), tiny[1]  # a model the check has not seen
    fast = decoder.decode
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        if failure == "raises" and len(calls) > 1:  # the check passes, the next decode fails midway
            torch.rand(5)  # after drawing random numbers: the plain loop must start from the same ones
            raise RuntimeError("a transformers upgrade changed the cache")
        tokens = fast(*args, **kwargs)  # (N, T)
        return tokens if failure == "raises" else (tokens + 1) % len(tok)  # other tokens

    ids, mask = tensors.encode(tok, PROMPTS, 256)  # (B, P)
    torch.manual_seed(1)
    want = [generator.decode(model, ids, mask, 2, 6, tok.eos_token_id, tok.pad_token_id, 0.7, 0.9) for _ in range(2)]
    torch.manual_seed(1)
    with mock.patch.object(decoder, "decode", broken), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = [generator.sample(model, tok, PROMPTS, k=2, max_new_tokens=6) for _ in range(2)]
    messages = [str(w.message) for w in caught if "lab.fast" in str(w.message)]
    assert len(messages) == 1 and ("differ from the plain loop's" if failure == "differs" else "raised") in messages[0]
    assert len(calls) == (1 if failure == "differs" else 2)  # the check, the decode that raised; none after
    for samples, tokens in zip(got, want):  # the plain loop's tokens, from the same random numbers
        assert samples.input_ids[:, samples.prompt_len:].tolist() == tokens.tolist()


def test_the_preallocated_cache_returns_what_concatenation_would():
    from transformers import DynamicCache

    from lab.fast.compat import preallocate

    torch.manual_seed(0)
    keys, values = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 4, 8)  # (N, H, P, D)
    plain, fast = DynamicCache(), DynamicCache()
    for cache in (plain, fast):
        cache.update(keys, values, 0)
    assert preallocate(fast, capacity=6)
    for step in range(4):  # the last two steps pass the capacity: concatenation again
        new_k, new_v = torch.randn(2, 3, 1, 8), torch.randn(2, 3, 1, 8)
        (pk, pv), (fk, fv) = plain.update(new_k, new_v, 0), fast.update(new_k, new_v, 0)
        assert torch.equal(pk, fk) and torch.equal(pv, fv) and fast.get_seq_length() == 5 + step
    assert not preallocate(DynamicCache(), capacity=6)  # nothing to preallocate: unchanged


def test_prepacked_bf16_linears_give_the_same_products_and_are_restored():
    from lab.fast.prepack import can_prepack, prepacked

    if not can_prepack():
        pytest.skip("this CPU/torch has no oneDNN bf16 linear")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.GELU(), torch.nn.Linear(96, 32, bias=False))
    model = model.to(torch.bfloat16)
    x = torch.randn(8, 1, 64, dtype=torch.bfloat16)  # (N, 1, H): one decode step
    with torch.no_grad():
        plain = model(x)
        with prepacked(model, rows=8):
            assert all("forward" in vars(layer) for layer in (model[0], model[2]))
            fast = model(x)
    assert torch.equal(plain, fast)
    assert not any("forward" in vars(layer) for layer in model)  # Linear.forward again
    with pytest.raises(RuntimeError, match="boom"), prepacked(model, rows=8):
        raise RuntimeError("boom")
    assert not any("forward" in vars(layer) for layer in model)  # restored after an error too


def test_training_attention_gives_the_default_kernels_loss_and_gradients_in_bf16():
    from lab import generator, models
    from lab.fast import attention
    from lab.fast.attention import training_attention

    model, tok = tiny.llama(torch.bfloat16)
    model = models.add_lora(model, "generator", r=4, alpha=8, dropout=0.0)
    prompts, answers = ["Name a colour.", "Count: one two"], ["Red.", "three four five"]

    def loss_and_grads():
        model.zero_grad(set_to_none=True)
        loss = generator.sft_loss(model, tok, prompts, answers)
        loss.backward()
        return loss.detach().float(), [p.grad.float() for p in model.parameters() if p.requires_grad]

    plain_loss, plain_grads = loss_and_grads()
    picks_kernels = attention.sdpa_kernel is not None  # torch >= 2.3
    with training_attention(model):
        # bf16 on a CPU: the math kernel only; before torch 2.3 the default choice stays
        assert torch.backends.cuda.flash_sdp_enabled() is not picks_kernels
        math_loss, math_grads = loss_and_grads()
    torch.testing.assert_close(math_loss, plain_loss, rtol=1e-2, atol=1e-2)
    for a, b in zip(math_grads, plain_grads):
        torch.testing.assert_close(a, b, rtol=0.05, atol=1e-3)
    with training_attention(models.load("tiny-gpt2", "cpu", "float32", verbose=False)[0]):
        assert torch.backends.cuda.math_sdp_enabled()  # fp32: nothing switched (the flash kernel stays allowed)
        assert torch.backends.cuda.flash_sdp_enabled()


def test_one_base_pass_serves_the_kl_and_the_perplexity_reward_with_the_same_results(examples):
    from lab import rewards

    # reference_in_group: the references join the groups and always re-tokenize to their tokens,
    # so the perplexity reward has rows of the shared pass to read whatever the random model samples
    changes = dict(kl_coef=0.2, reward_weights={"perplexity": 1.0, "length": 0.5}, reference_in_group=True)
    shared = tiny.make(examples, **changes)
    calls = []
    read = []
    nll = rewards.BasePass.nll
    with mock.patch.object(rewards, "base_pass", wraps=rewards.base_pass) as spy, \
            mock.patch.object(rewards.BasePass, "nll", lambda self, c, a: read.append(nll(self, c, a)) or read[-1]):
        rows_shared = [shared.step() for _ in range(2)]  # step 1: LoRA B = 0, so KL = 0; step 2: KL > 0
        calls.append(spy.call_count)
    assert any(value is not None for value in read)  # the perplexity reward read rows of the shared pass
    plain = tiny.make(examples, **changes)  # built after the first ran: the constructor seeds torch
    with mock.patch.object(rewards, "base_pass", return_value=None):  # each consumer runs its own pass
        rows_plain = [plain.step() for _ in range(2)]
    assert calls == [2] and rows_shared[1]["kl"] > 0
    for row_shared, row_plain in zip(rows_shared, rows_plain):
        for key in ("reward", "reward_perplexity", "kl", "loss_rl", "loss", "grad_norm"):
            assert row_shared[key] == pytest.approx(row_plain[key], rel=1e-5, abs=1e-6), key
