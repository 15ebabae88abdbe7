"""Tests for the score's reliability (d2c_hf.selection.reliability) and the estimator options of DifficultyScorer
(draws, antithetic pairs, timestep grids, per-timestep standardisation, the probe) through condense(),
the sharded runner, the card and the gate."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from d2c_hf.selection.estimator import check_estimator
from d2c_hf.selection.noise import noise_seed, pixel_keys, sample_noise
from d2c_hf.selection.reliability import (
    Reliability,
    ReliabilityError,
    Standardization,
    check_reliability,
    reliability_from_halves,
    score_reliability,
    spearman_brown,
)
from d2c_hf.selection.scorer import DifficultyScorer
from d2c_hf.utils.images import preprocess_images


def _scores(dataset, column="difficulty") -> np.ndarray:
    return np.asarray(dataset.with_format("numpy")[column])


# ------------------------------------------------------------------ the statistic (known answers)


def test_identical_and_reversed_estimates():
    labels = np.repeat([0, 1], 6)
    a = np.arange(12, dtype=float)
    assert score_reliability(a, a, labels).reliability == pytest.approx(1.0)
    reversed_within = np.concatenate([a[:6][::-1], a[6:][::-1]])
    report = score_reliability(a, reversed_within, labels)
    assert report.correlation == pytest.approx(-1.0) and report.reliability == pytest.approx(-1.0)
    # a between-class shift does not count: only the within-class ranking matters
    shifted = a + 100 * labels
    assert score_reliability(a, shifted, labels).reliability == pytest.approx(1.0)


def test_class_size_weighting_and_spearman_brown():
    # class 0: 9 rows in perfect agreement (r = 1); class 1: 3 rows reversed (r = -1): (9 - 3) / 12
    a = np.concatenate([np.arange(9.0), np.arange(3.0)])
    b = np.concatenate([np.arange(9.0), np.arange(3.0)[::-1]])
    labels = np.array([0] * 9 + [1] * 3)
    report = score_reliability(a, b, labels)
    assert report.correlation == pytest.approx(0.5) and report.num_rows == 12 and report.num_classes == 2
    half = score_reliability(a, b, labels, length_factor=2)
    assert half.method == "split-half" and half.reliability == pytest.approx(2 * 0.5 / 1.5)
    assert spearman_brown(0.5, 3) == pytest.approx(0.75) and spearman_brown(-0.2, 2) == -0.2
    assert half.spread["max"] == pytest.approx(1.0)


def test_ties_use_average_ranks():
    labels = np.zeros(4, int)
    # Spearman of [1, 1, 2, 3] and [1, 2, 3, 4] = Pearson of ranks [0.5, 0.5, 2, 3] and [0, 1, 2, 3]
    expected = np.corrcoef([0.5, 0.5, 2, 3], [0, 1, 2, 3])[0, 1]
    assert score_reliability([1, 1, 2, 3], [1, 2, 3, 4], labels).correlation == pytest.approx(expected)


def test_what_cannot_be_computed_is_reported_not_nan():
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 2])
    a = np.array([1.0, 2.0, 5.0, 5.0, 5.0, 1.0, 2.0, 3.0])
    b = np.array([2.0, 1.0, 1.0, 2.0, 3.0, 1.0, 2.0, 3.0])
    report = score_reliability(a, b, labels)
    assert report.skipped[0].startswith("2 row(s)") and report.skipped[1] == "constant scores in one estimate"
    assert report.num_classes == 1 and report.reliability == pytest.approx(1.0)
    none = score_reliability(a[:5], b[:5], labels[:5])
    assert none.reliability is None and not none.computable and "no class" in none.reason
    assert "not computable" in none.summary() and "nan" not in none.summary().lower()
    # rows without a second estimate (a probe's) are left out, not counted as NaN
    probe = score_reliability(np.arange(6.0), [0, 1, 2, np.nan, np.nan, np.nan], np.zeros(6, int))
    assert probe.num_rows == 3 and probe.reliability == pytest.approx(1.0)
    assert score_reliability([], [], np.zeros(0, int)).reason == "no rows"
    with pytest.raises(ValueError, match="one value per row"):
        score_reliability([1, 2], [1], [0, 0])


def test_split_half_predicts_the_reliability_of_the_full_estimate():
    """Scores = image signal + Gaussian draw noise: the split-half estimate of D draws (Spearman–Brown)
    matches the theoretical reliability var_s / (var_s + var_n / D) and the test-retest one."""
    rng = np.random.default_rng(0)
    n, steps, draws = 6000, 3, 4
    labels = np.arange(n) % 10
    signal = rng.normal(size=(n, 1, 1))
    errors = signal + rng.normal(scale=2.0, size=(n, steps, 2 * draws))  # per-draw noise var 4 per timestep
    halves = np.stack([errors[:, :, 0:draws:2].mean(2), errors[:, :, 1:draws:2].mean(2)], axis=2)
    report = reliability_from_halves(halves, labels, num_draws=draws)
    theory = 1 / (1 + 4 / (steps * draws))  # Pearson; Spearman is close for Gaussians
    retest = score_reliability(errors[:, :, :draws].mean((1, 2)), errors[:, :, draws:].mean((1, 2)), labels)
    assert report.reliability == pytest.approx(theory, abs=0.03)
    assert report.reliability == pytest.approx(retest.reliability, abs=0.03)
    # the prediction for other draw counts: exact for D, and close to the truth for 2 D
    assert report.predict(draws) == pytest.approx(report.reliability)
    assert report.predict(2 * draws) == pytest.approx(1 / (1 + 4 / (steps * 2 * draws)), abs=0.03)
    need = report.draws_for(0.95)
    assert report.predict(need) >= 0.95 > report.predict(need - 1)
    # odd D: the last draw is in neither half, the correction uses k = D / floor(D / 2)
    odd = reliability_from_halves(halves, labels, num_draws=3)
    assert odd.length_factor == 3 and odd.reliability > report.correlation


def test_standardization_equalises_timesteps():
    rng = np.random.default_rng(1)
    per_t = np.stack([rng.normal(10, 5, 100), rng.normal(0.1, 0.01, 100)], axis=1)
    stats = Standardization.fit(per_t)
    z = stats.apply(per_t)
    expected = ((per_t - per_t.mean(0)) / per_t.std(0)).mean(1)
    np.testing.assert_allclose(z, expected, rtol=1e-5)
    constant = Standardization.fit(np.ones((5, 2)))
    assert np.all(constant.std == 1) and np.all(constant.apply(np.ones((5, 2))) == 0)


def test_gate_warns_and_stops(caplog):
    low = score_reliability(np.arange(10.0), np.arange(10.0)[::-1], np.zeros(10, int))
    with caplog.at_level(logging.WARNING, logger="d2c_hf.selection.reliability"):
        check_reliability(low, warn_below=0.5)
    assert any("close to random" in r.getMessage() and "num_draws" in r.getMessage() for r in caplog.records)
    with pytest.raises(ReliabilityError, match="below min_reliability=0.8"):
        check_reliability(low, min_reliability=0.8)
    with pytest.raises(ReliabilityError, match="computed no reliability"):
        check_reliability(None, min_reliability=0.8)
    check_reliability(None)  # nothing asked for: nothing to do
    assert Reliability.from_dict(low.to_dict()) == low


# ------------------------------------------------------------------ the estimator


def test_estimator_options_are_checked_without_a_model():
    assert check_estimator() == (10, "midpoints")
    assert check_estimator(None, [50, 150]) == (2, (50.0, 150.0))
    for kwargs, message in (
        ({"num_draws": 0}, "num_draws must be a positive integer"),
        ({"num_draws": 1.5}, "num_draws must be a positive integer"),
        ({"antithetic": "yes"}, "antithetic must be True or False"),
        ({"timestep_grid": "uniform"}, "timestep_grid must be one of"),
        ({"timestep_grid": []}, "timestep_grid is empty"),
        ({"timestep_grid": [50, 50]}, "repeats a timestep"),
        ({"timestep_grid": [50, -1]}, "non-negative"),
        ({"timestep_grid": [0.1, float("nan")]}, "finite numbers"),
        ({"num_timesteps": 3, "timestep_grid": [1, 2]}, "num_timesteps=3 but timestep_grid lists 2"),
        ({"reliability_probe": -1}, "reliability_probe must be a non-negative integer"),
    ):
        with pytest.raises(ValueError, match=message):
            check_estimator(**kwargs)


def test_bad_estimator_options_fail_before_any_model_loads(monkeypatch):
    import d2c_hf.selection.denoisers as scoring
    from d2c_hf.run.options import ScoreOptions

    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(scoring, "load_model", no_load)
    with pytest.raises(ValueError, match="num_draws"):
        DifficultyScorer.from_pretrained("/nonexistent/scorer", num_draws=0)
    with pytest.raises(ValueError, match="warn_reliability"):
        DifficultyScorer.from_pretrained("/nonexistent/scorer", warn_reliability=1.5)
    for kwargs, message in (
        ({"num_draws": -2}, "num_draws"),
        ({"timestep_grid": "grid"}, "timestep_grid"),
        ({"min_reliability": 2}, r"min_reliability must be a number in \[0, 1\]"),
        ({"warn_reliability": -0.1}, "warn_reliability"),
        ({"min_reliability": True}, "min_reliability"),
    ):
        with pytest.raises(ValueError, match=message):
            ScoreOptions(scorer=None, **kwargs)


def test_draw_zero_is_the_one_draw_stream_and_further_draws_are_new():
    keys = np.array([3, 99], np.uint64)
    first = sample_noise(keys, 7, 4, (2, 2))
    assert noise_seed(7, 3) == noise_seed(7, 3, 0) != noise_seed(7, 3, 1)
    assert torch.equal(sample_noise(keys, 7, 4, (2, 2), draw=0), first)
    second = sample_noise(keys, 7, 4, (2, 2), draw=1)
    assert not torch.allclose(second, first) and torch.equal(sample_noise(keys, 7, 4, (2, 2), draw=1), second)


@pytest.fixture(scope="module")
def batch(digits_small):
    pixels, _ = preprocess_images(digits_small.select(range(12))["image"], 32)
    return pixels, np.asarray(digits_small.select(range(12))["label"])


def test_more_draws_keep_draw_zero_and_average_the_draws(local_hub, batch):
    pixels, labels = batch
    one = DifficultyScorer.from_pretrained(local_hub.pixel_dit, num_timesteps=3)
    three = DifficultyScorer.from_pretrained(local_hub.pixel_dit, num_timesteps=3, num_draws=3)
    x0, keys = one.encode(pixels), pixel_keys(pixels)
    d1, p1 = one.score_pixels(pixels, labels)
    errors = three.draw_errors(x0, labels, keys, range(3)).cpu().numpy()  # (B, T, 3)
    np.testing.assert_allclose(errors[:, :, 0], p1, rtol=1e-6)  # draw 0 = the one-draw score
    assert not np.allclose(errors[:, :, 1], p1)  # draw 1 is new noise
    scored = three.score_batch(x0, labels, keys)
    np.testing.assert_allclose(scored.per_timestep, errors.mean(2), rtol=1e-6)
    np.testing.assert_allclose(scored.difficulty, errors.mean((1, 2)), rtol=1e-6)
    np.testing.assert_allclose(scored.halves[:, :, 0], errors[:, :, 0], rtol=1e-6)  # even draws (3 -> 1 each)
    np.testing.assert_allclose(scored.halves[:, :, 1], errors[:, :, 1], rtol=1e-6)
    assert three.forward_passes_per_image == 9 and three.config["num_draws"] == 3
    assert three.fingerprint != one.fingerprint


def test_antithetic_pairs_average_eps_and_minus_eps(local_hub, batch):
    """Known answer with the real DDPM noising: the antithetic error of a draw is the mean of the errors
    of eps and -eps, each computed here by hand from the same common random numbers."""
    pixels, labels = batch
    scorer = DifficultyScorer.from_pretrained(local_hub.pixel_dit, num_timesteps=2, antithetic=True)
    x0, keys = scorer.encode(pixels), pixel_keys(pixels)
    got = scorer.draw_errors(x0, labels, keys, [0]).cpu().numpy()[:, :, 0]
    eps = sample_noise(keys, scorer.seed, 2, x0.shape[1:])
    expected = np.zeros_like(got)
    with torch.inference_mode():
        for i, t in enumerate(scorer.adapter.timesteps.tolist()):
            for sign in (1.0, -1.0):
                noise = sign * eps[:, i]
                step = torch.full((len(x0),), t, dtype=torch.int64)
                x_t = scorer.adapter.scheduler.add_noise(x0, noise, step)
                out = scorer.model(x_t, timestep=step, class_labels=torch.as_tensor(labels)).sample[:, :3]
                expected[:, i] += 0.5 * (out - noise).square().mean((1, 2, 3)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert scorer.forward_passes_per_image == 4


def test_stratified_timesteps_fall_in_their_bins(local_hub):
    scorer = DifficultyScorer.from_pretrained(
        local_hub.pixel_dit, num_timesteps=4, timestep_grid="stratified"
    )
    edges = np.array([0, 250, 500, 750, 1000])
    offsets = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.9999, 0.9999, 0.9999, 0.9999], [0.5, 0.5, 0.5, 0.5]])
    t = scorer.adapter.stratified(offsets).numpy()
    np.testing.assert_array_equal(t[0], edges[:-1])
    np.testing.assert_array_equal(t[1], edges[1:] - 1)
    np.testing.assert_array_equal(t[2], edges[:-1] + 125)
    assert scorer.config["timestep_grid"] == "stratified in bins"
    assert scorer.config["noising"]["timesteps"] == "stratified"


def test_explicit_grid(local_hub, batch):
    pixels, labels = batch
    scorer = DifficultyScorer.from_pretrained(local_hub.pixel_dit, timestep_grid=[150, 250, 350])
    reference = DifficultyScorer.from_pretrained(local_hub.pixel_dit, num_timesteps=10)
    assert scorer.num_timesteps == 3 and scorer.timesteps == [150, 250, 350]
    _, grid = scorer.score_pixels(pixels, labels)
    _, full = reference.score_pixels(pixels, labels)
    assert grid.shape == (12, 3) and not np.allclose(
        grid, full[:, 1:4]
    )  # other noise slices, same grid points
    with pytest.raises(ValueError, match=r"integer timesteps in \[0, 1000\)"):
        DifficultyScorer.from_pretrained(local_hub.pixel_dit, timestep_grid=[0.5, 0.7])


# ------------------------------------------------------------------ apply: invariance, probe, standardisation


OPTIONS = {"num_draws": 2, "antithetic": True, "timestep_grid": "stratified", "standardize_timesteps": True}


def test_new_options_keep_scores_independent_of_batching_and_order(local_hub, digits_small):
    rows = digits_small.select(range(20))
    a = DifficultyScorer.from_pretrained(local_hub.pixel_dit, num_timesteps=3, batch_size=16, **OPTIONS)
    b = DifficultyScorer.from_pretrained(
        local_hub.pixel_dit, num_timesteps=3, batch_size=3, max_forward_batch=5, **OPTIONS
    )
    reference = _scores(a.apply(rows))
    order = np.random.default_rng(0).permutation(len(rows))
    shuffled = _scores(b.apply(rows.select(order)))
    np.testing.assert_allclose(shuffled, reference[order], rtol=0, atol=1e-6)
    assert a.reliability.method == "split-half" and a.reliability.details["standardized"]
    assert a.reliability.reliability == pytest.approx(b.reliability.reliability, abs=1e-5)


def test_apply_standardises_and_reports_what_the_halves_say(local_hub, digits_small, caplog):
    rows = digits_small.select(range(30))
    raw = DifficultyScorer.from_pretrained(
        local_hub.pixel_dit, num_timesteps=3, num_draws=2, return_per_timestep=True
    )
    std = DifficultyScorer.from_pretrained(
        local_hub.pixel_dit, num_timesteps=3, num_draws=2, standardize_timesteps=True, warn_reliability=1.0
    )
    scored = raw.apply(rows)
    with caplog.at_level(logging.WARNING, logger="d2c_hf.selection.reliability"):
        standardised = std.apply(rows)
    assert any("close to random" in r.getMessage() for r in caplog.records)  # warn_reliability=1.0
    per_t = _scores(scored, "difficulty_per_timestep")
    expected = ((per_t - per_t.mean(0)) / per_t.std(0)).mean(1)
    np.testing.assert_allclose(_scores(standardised), expected, rtol=1e-4, atol=1e-5)
    assert standardised.column_names == ["image", "label", "difficulty"]  # helper columns dropped
    assert scored.column_names == ["image", "label", "difficulty", "difficulty_per_timestep"]
    np.testing.assert_allclose(std.standardization.mean, per_t.mean(0), rtol=1e-5)
    assert raw.reliability.computable and raw.reliability.length_factor == 2


def test_probe_measures_a_one_draw_score_without_changing_it(local_hub, digits_small):
    rows = digits_small.select(range(40))
    plain = DifficultyScorer.from_pretrained(local_hub.pixel_dit, num_timesteps=3, reliability_probe=0)
    probed = DifficultyScorer.from_pretrained(local_hub.pixel_dit, num_timesteps=3, reliability_probe=24)
    reference = _scores(plain.apply(rows))
    assert not plain.reliability.computable and "reliability_probe" in plain.reliability.reason
    np.testing.assert_array_equal(_scores(probed.apply(rows)), reference)
    plan = probed.probe
    assert plan["classes"] == [0, 1, 2, 3, 5, 6, 7, 8] and plan["fraction"] == pytest.approx(
        24 * 10 / (8 * 40)
    )
    report = probed.reliability
    assert report.method == "test-retest" and report.length_factor == 1
    labels = np.asarray(rows["label"])
    keys = pixel_keys(preprocess_images(rows["image"], 32)[0])
    mask = probed.probe_mask(labels, keys)
    assert mask.sum() == report.num_rows + sum(
        int(v.split()[0]) for v in report.skipped.values() if "row" in v
    )
    assert not mask[np.isin(labels, [4, 9])].any()
    assert report.details["extra_forward_passes"] == int(mask.sum()) * 3
    # membership is a function of the key: a shuffled dataset probes the same images
    order = np.random.default_rng(1).permutation(len(rows))
    np.testing.assert_array_equal(probed.probe_mask(labels[order], keys[order]), mask[order])
    # more draws: the split halves are free, there is no probe
    two = DifficultyScorer.from_pretrained(
        local_hub.pixel_dit, num_timesteps=3, num_draws=2, reliability_probe=24
    )
    two.apply(rows)
    assert two.probe is None and two.reliability.method == "split-half"


def test_iterable_dataset_keeps_the_halves_and_refuses_standardisation(local_hub, digits_small):
    rows = digits_small.select(range(6))
    scorer = DifficultyScorer.from_pretrained(local_hub.pixel_dit, num_timesteps=2, num_draws=2)
    streamed = list(scorer.apply(rows.to_iterable_dataset()))
    assert np.asarray(streamed[0]["difficulty_halves"]).shape == (2, 2)
    std = DifficultyScorer.from_pretrained(local_hub.pixel_dit, num_timesteps=2, standardize_timesteps=True)
    with pytest.raises(ValueError, match="standardize_timesteps needs every row"):
        std.apply(rows.to_iterable_dataset())


# ------------------------------------------------------------------ condense, the card, the gate


def test_condense_records_reliability_on_info_and_card(local_hub, digits_small, tmp_path):
    from d2c_hf import CondensedDataset, condense

    condensed = condense(
        digits_small.select(range(40)),
        images_per_class=2,
        scorer=local_hub.pixel_dit,
        vae=None,
        attach=(),
        resolution=32,
        num_timesteps=3,
        num_draws=2,
        batch_size=8,
        warn_reliability=1.0,  # any measured reliability of a random tiny model is below it
    )
    scoring = condensed.info["scoring"]
    assert scoring["num_draws"] == 2 and scoring["warn_reliability"] == 1.0
    assert scoring["reliability"]["method"] == "split-half"
    assert condensed.reliability.reliability == pytest.approx(scoring["reliability"]["reliability"])
    condensed.save_to_disk(tmp_path / "c")
    card = (tmp_path / "c" / "README.md").read_text()
    assert "| score reliability | reliability " in card and "3 timesteps x 2 noise draws" in card
    assert condensed.reliability.reliability < 1.0
    assert "Warning: the selection is close to random" in card and "raise num_draws" in card
    loaded = CondensedDataset.load(tmp_path / "c")
    assert "score reliability" in loaded.summary() and loaded.reliability == condensed.reliability


def test_min_reliability_stops_condense_before_selection(local_hub, digits_small, monkeypatch):
    import d2c_hf.run.pipeline as pipeline
    from d2c_hf import condense

    def no_selection(*args, **kwargs):
        raise AssertionError("selection ran")

    monkeypatch.setattr(pipeline, "select_rows", no_selection)
    with pytest.raises(ReliabilityError, match="min_reliability=0.99"):
        condense(
            digits_small.select(range(30)),
            images_per_class=2,
            scorer=local_hub.pixel_dit,
            vae=None,
            attach=(),
            resolution=32,
            num_timesteps=2,
            num_draws=2,
            min_reliability=0.99,
        )
    with pytest.raises(TypeError, match="has its own estimator"):
        condense(
            digits_small.select(range(30)),
            images_per_class=2,
            scorer=DifficultyScorer.from_pretrained(local_hub.pixel_dit),
            attach=(),
            resolution=32,
            num_draws=4,
        )
