"""Held-out metrics on hand-made answers and tiny-gpt2, and the interval code on fixed numbers."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from lab import evaluate
from lab.eval import stats
from lab.config import HybridConfig
from lab.data import load_examples
from lab.trainer import HybridTrainer


@pytest.fixture(scope="module")
def heldout():
    return load_examples("bundled", "heldout", limit=3)


# --- metrics on hand-made strings ----------------------------------------------------------
def test_identical_answer_scores_top_and_unrelated_scores_low():
    refs = ["The capital of France is Paris.", "Water boils at 100 degrees Celsius."]
    same = evaluate.score_responses(["", ""], refs, refs)
    other = evaluate.score_responses(["", ""], ["I like green bicycles.", "Jazz began in New Orleans."], refs)
    assert same["rouge_l"].tolist() == [1.0, 1.0]
    assert same["bleu"].tolist() == [1.0, 1.0]
    assert same["semantic"].min() > 0.999
    assert (other["semantic"] < 0.5).all() and (other["rouge_l"] < 0.3).all()
    assert same["disc"].isna().all() and same["nll"].isna().all()  # no critic, no perplexity model given


def test_repetition_rate_and_words():
    frame = evaluate.score_responses([""] * 2, ["go go go go go", "a plain answer, here!"], ["x", "y"])
    assert frame["repetition"].tolist() == [1.0, 0.0]
    assert frame["words"].tolist() == [5, 4]  # metrics.tokens: punctuation is not a word


def test_summarize_distinct_n_by_hand_and_ppl_is_exp_mean_nll():
    df = pd.DataFrame({"decoding": ["greedy", "greedy", "sampled"],
                       "completion": ["a b A b", "c d.", "x y z"],
                       "semantic": [0.2, 0.4, 1.0], "nll": [1.0, 3.0, math.nan]})
    table = evaluate.summarize(df)
    # greedy unigrams a b a b c d (case and punctuation do not count): 4 unique of 6;
    # bigrams ab ba ab cd: 3 unique of 4
    assert table.loc["greedy", "distinct_1"] == pytest.approx(4 / 6)
    assert table.loc["greedy", "distinct_2"] == pytest.approx(3 / 4)
    assert table.loc["greedy", "semantic"] == pytest.approx(0.3)
    assert table.loc["greedy", "ppl"] == pytest.approx(math.exp(2.0))
    assert math.isnan(table.loc["sampled", "ppl"]) and table.loc["sampled", "n"] == 1


# --- intervals ------------------------------------------------------------------------------
def test_mean_ci_matches_scipy_t_interval():
    values = [0.61, 0.55, 0.70, 0.58, 0.66]
    mean, low, high = stats.mean_ci(values)
    ref = sps.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=sps.sem(values))
    assert mean == pytest.approx(np.mean(values))
    assert (low, high) == pytest.approx(ref)


def test_single_seed_has_no_interval_and_equal_values_a_zero_width_one():
    mean, low, high = stats.mean_ci([0.4])
    assert mean == 0.4 and math.isnan(low) and math.isnan(high)
    assert not stats.significant(low, high)
    assert stats.mean_ci([0.3, 0.3]) == (0.3, 0.3, 0.3)


def test_paired_difference_on_fixed_numbers():
    a, b = [0.50, 0.62, 0.58], [0.45, 0.55, 0.50]
    diff, low, high = stats.paired_difference(a, b)
    d = np.subtract(a, b)  # 0.05, 0.07, 0.08
    ref = sps.t.interval(0.95, 2, loc=d.mean(), scale=d.std(ddof=1) / math.sqrt(3))
    assert diff == pytest.approx(0.2 / 3)
    assert (low, high) == pytest.approx(ref)
    assert stats.significant(low, high)  # consistent gains: the interval excludes 0
    with pytest.raises(ValueError):
        stats.paired_difference([1.0, 2.0], [1.0])


def test_summarize_results_pairs_by_seed_and_flags_significance():
    results = pd.DataFrame(
        [("sft", s, "m", v) for s, v in enumerate([0.40, 0.50, 0.45])]
        + [("hybrid", s, "m", v) for s, v in enumerate([0.50, 0.61, 0.54])]  # +0.10, +0.11, +0.09
        + [("rl", s, "m", v) for s, v in enumerate([0.20, 0.90, 0.30])],  # noisy
        columns=["arm", "seed", "metric", "value"])
    summary = stats.summarize_results(results).set_index("arm")
    assert list(summary.index) == ["sft", "hybrid", "rl"]
    assert summary.loc["hybrid", "diff"] == pytest.approx(0.10)
    assert summary.loc["hybrid", "significant"] and not summary.loc["rl", "significant"]
    assert math.isnan(summary.loc["sft", "diff"]) and summary.loc["hybrid", "n_pairs"] == 3
    assert summary.loc["sft", "ci_low"] == pytest.approx(stats.mean_ci([0.40, 0.50, 0.45])[1])


# --- models ---------------------------------------------------------------------------------
def test_evaluate_model_rows_and_seeded_sampling(tiny, heldout):
    model, tokenizer = tiny
    run = dict(max_new_tokens=5, seed=3)
    training = model.training
    first = evaluate.evaluate_model(model, tokenizer, heldout, **run)
    again = evaluate.evaluate_model(model, tokenizer, heldout, **run)
    assert len(first) == 2 * len(heldout)
    assert list(first["decoding"].unique()) == ["greedy", "sampled"]
    assert first["completion"].tolist() == again["completion"].tolist()  # sampling is seeded
    assert first["reference"].tolist()[:3] == [e.completion for e in heldout]
    nonempty = first["completion"].str.strip() != ""
    assert np.isfinite(first.loc[nonempty, "ppl"]).all()
    assert np.allclose(first.loc[nonempty, "ppl"], np.exp(first.loc[nonempty, "nll"]))
    assert set(evaluate.summarize(first).columns) >= set(evaluate.SUMMARY_METRICS)
    assert model.training == training  # eval mode only during the call


def test_evaluate_trainer_scores_with_its_discriminator_and_evaluate_run_reloads(heldout, tmp_path):
    config = HybridConfig(model="tiny-gpt2", device="cpu", prompts_per_step=2, samples_per_prompt=2,
                          max_new_tokens=4)
    trainer = HybridTrainer(config, examples=load_examples("bundled", "train", limit=4), verbose=False)
    trainer.run(1, out_dir=tmp_path, progress=False)
    frame = evaluate.evaluate_trainer(trainer, heldout, decodings=("greedy",))
    assert len(frame) == len(heldout) and np.isfinite(frame["disc"]).all()
    assert trainer.model.active_adapter == "generator"
    saved = evaluate.evaluate_run(tmp_path, examples=heldout, decodings=("greedy",), device="cpu")
    assert saved["completion"].tolist() == frame["completion"].tolist()  # same generator, reloaded
    assert saved["disc"].isna().all()


def test_unknown_decoding_is_rejected(tiny, heldout):
    with pytest.raises(ValueError, match="decoding"):
        evaluate.evaluate_model(*tiny, heldout, decodings=("beam",))



def test_heldout_follows_the_source_and_a_local_file_is_evaluated_whole(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text('{"instruction": "Say hi.", "output": "Hi."}\n{"instruction": "Say bye.", "output": "Bye."}\n')
    assert [e.completion for e in evaluate.heldout(None, str(path))] == ["Hi.", "Bye."]
    assert evaluate.heldout(2) == load_examples("bundled", "heldout", limit=2)
    assert "training rows" in evaluate.describe_source(str(path), trained_on=str(path))
    assert "training rows" not in evaluate.describe_source(str(path), trained_on="bundled")
