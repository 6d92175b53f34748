"""Variability metrics (seed 002 §5.1): known values, naive-loop equivalences, published CKA numbers, Table 5.5."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import spearmanr

from ablab.analysis import variability as v

# Hand-made 3-model example, 4 examples, 2 classes (no ties in any sum). Predictions:
# A = [0, 1, 1, 0] (acc 50 %), B = [1, 0, 1, 1] (75 %), C = [1, 1, 0, 1] (25 %).
LABELS = np.array([0, 0, 1, 1])
THREE = np.array([
    [[2, 0], [0, 1], [0, 3], [1, 0]],
    [[0, 1], [3, 0], [0, 1], [0, 2]],
    [[0, 4], [0, 2], [2, 0], [0, 3]],
], dtype=np.float32)


def _random_logits(r=6, n=40, c=5, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, c))
    return (base + 0.8 * rng.normal(size=(r, n, c))).astype(np.float32), rng.integers(0, c, n)


def test_identical_logits_give_no_variability():
    logits = np.repeat(_random_logits(1)[0], 5, axis=0)
    labels = _random_logits(1)[1]
    out = v.variability(logits, labels, resamples=200)
    assert out["acc_sd"].value == 0.0 and out["loss_sd"].value == 0.0
    assert out["disagreement"].value == 0.0
    assert out["spearman"].value == pytest.approx(1.0, abs=1e-12)
    assert out["ensemble_delta"].value == 0.0


def test_eq_5_1_on_a_hand_made_three_model_example():
    # by hand: A+B = [2,1],[3,1],[0,4],[1,2] -> [0,0,1,1]: 100 %; Δ_AB = 100 − (50+75)/2 = 37.5
    #          A+C = [2,4],[0,3],[2,3],[1,3] -> [1,1,1,1]: 50 %;  Δ_AC = 50 − (50+25)/2 = 12.5
    #          B+C = [0,5],[3,2],[2,1],[0,5] -> [1,0,0,1]: 50 %;  Δ_BC = 50 − (75+25)/2 = 0
    np.testing.assert_array_equal(v.accuracy_percent(THREE, LABELS), [50.0, 75.0, 25.0])
    delta = v.pair_ensemble_delta(THREE, LABELS)
    assert (delta[0, 1], delta[0, 2], delta[1, 2]) == (37.5, 12.5, 0.0)
    assert v.variability(THREE, LABELS, resamples=100)["ensemble_delta"].value == pytest.approx(50.0 / 3)


def test_disagreement_on_the_hand_made_example():
    # A/B differ on examples 0, 1, 3; A/C on 0, 2, 3; B/C on 1, 2
    dis = v.pair_disagreement(THREE)
    assert (dis[0, 1], dis[0, 2], dis[1, 2]) == (75.0, 75.0, 50.0)
    assert v.mean_over_pairs(dis) == pytest.approx(200.0 / 3)


def test_the_ensemble_averages_logits_not_probabilities():
    # averaged logits [2, 1, 1.95] pick class 0; averaged softmax [.31, .40, .29] picks class 1
    a = np.array([[[4.0, 0.0, 3.9]]], dtype=np.float32)
    b = np.array([[[0.0, 2.0, 0.0]]], dtype=np.float32)
    logits = np.concatenate([a, b])  # logits sum [4, 2, 3.9] -> 0; probabilities favour class 1
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    assert probs.mean(0).argmax() == 1
    assert v.pair_ensemble_accuracy(logits, np.array([0]))[0, 1] == 100.0


def test_pairwise_matrices_equal_a_naive_double_loop():
    logits, labels = _random_logits(r=7)
    acc = v.accuracy_percent(logits, labels)
    dis, rho = v.pair_disagreement(logits), v.pair_spearman(logits)
    delta = v.pair_ensemble_delta(logits, labels)
    for i, j in itertools.combinations(range(7), 2):
        pi, pj = logits[i].argmax(-1), logits[j].argmax(-1)
        assert dis[i, j] == pytest.approx(100.0 * np.mean(pi != pj), abs=1e-12)
        assert rho[i, j] == pytest.approx(spearmanr(logits[i].ravel(), logits[j].ravel())[0], abs=1e-12)
        ens = 100.0 * np.mean(((logits[i] + logits[j]) / 2).argmax(-1) == labels)
        assert delta[i, j] == pytest.approx(ens - (acc[i] + acc[j]) / 2, abs=1e-12)
        assert delta[j, i] == delta[i, j] and dis[j, i] == dis[i, j]


def test_spearman_is_the_authors_rank_formula_without_ties():
    logits, _ = _random_logits(r=2, n=30, c=4, seed=3)
    x, y = logits[0].ravel(), logits[1].ravel()
    d = np.argsort(np.argsort(x)) - np.argsort(np.argsort(y)).astype(np.float64)
    n = len(x)
    assert v.pair_spearman(logits)[0, 1] == pytest.approx(1 - 6 * (d ** 2).sum() / (n * (n * n - 1)), abs=1e-12)


def test_cross_entropy_matches_a_direct_computation():
    logits, labels = _random_logits(r=3)
    z = logits.astype(np.float64)
    direct = [np.mean([np.log(np.exp(z[r, n]).sum()) - z[r, n, labels[n]] for n in range(len(labels))])
              for r in range(3)]
    np.testing.assert_allclose(v.cross_entropy(logits, labels), direct, rtol=1e-12)


def test_sd_has_ddof_zero():
    assert v.sd([1.0, 3.0]) == 1.0 and v.sd([5.0]) == 0.0


def test_bootstrap_is_deterministic_with_its_seed_and_equals_a_naive_loop(monkeypatch):
    values = np.random.default_rng(4).normal(size=12)
    first = v.bootstrap_sd_error(values, resamples=500, seed=7)
    assert first == v.bootstrap_sd_error(values, resamples=500, seed=7)
    assert first != v.bootstrap_sd_error(values, resamples=500, seed=8)
    rng = np.random.default_rng(7)
    naive = np.std([np.std(values[rng.integers(0, 12, size=12)]) for _ in range(500)])
    monkeypatch.setattr(v, "_BOOTSTRAP_CHUNK", 12 * 37)  # several chunks, one stream
    assert v.bootstrap_sd_error(values, resamples=500, seed=7) == pytest.approx(naive, rel=1e-12)
    assert first == pytest.approx(naive, rel=1e-12)
    assert np.isnan(v.bootstrap_sd_error([1.0]))


def test_bootstrap_sd_of_sd_is_near_the_delta_method_and_normal_theory():
    # per sample: SD(s) ≈ √(m₄ − m₂²) / (2 s √R) (delta method, the sample's own moments);
    # C5-11, on average over Gaussian samples: ≈ s / √(2(R − 1))
    ratios = []
    for seed in range(6):
        values = np.random.default_rng(seed).normal(size=100)
        d = values - values.mean()
        m2, m4 = (d ** 2).mean(), (d ** 4).mean()
        error = v.bootstrap_sd_error(values)
        assert error == pytest.approx(np.sqrt(m4 - m2 ** 2) / (2 * np.sqrt(m2) * 10), rel=0.05)
        ratios.append(error / (np.std(values) / np.sqrt(2 * 99)))
    assert np.mean(ratios) == pytest.approx(1.0, rel=0.10)


def test_jackknife_equals_leaving_each_model_out_by_hand():
    logits, _ = _random_logits(r=6)
    m = v.pair_disagreement(logits)
    left = [np.mean([m[i, j] for i, j in itertools.combinations([x for x in range(6) if x != k], 2)]) for k in range(6)]
    expected = np.sqrt(5 / 6 * np.sum((np.array(left) - np.mean(left)) ** 2))
    assert v.jackknife_pair_error(m) == pytest.approx(expected, rel=1e-12)
    assert np.isnan(v.jackknife_pair_error(m[:2, :2]))


def test_two_models_give_pair_values_without_error_bars_and_one_model_gives_none():
    logits, labels = _random_logits(r=2)
    two = v.variability(logits, labels, resamples=100)
    assert np.isfinite(two["disagreement"].value) and np.isnan(two["disagreement"].error)
    one = v.variability(logits[:1], labels, resamples=100)
    assert one["acc_sd"].value == 0.0 and np.isnan(one["acc_sd"].error) and np.isnan(one["spearman"].value)


def test_bad_logits_are_one_clear_error():
    logits, labels = _random_logits(r=3)
    logits[1, 0, 0] = np.nan
    with pytest.raises(ValueError, match="diverged"):
        v.variability(logits, labels)
    with pytest.raises(ValueError, match="classes"):
        v.variability(logits[:, :, 0], labels)
    with pytest.raises(ValueError, match="labels"):
        v.variability(np.zeros((2, 4, 3)), np.zeros(5, int))


# Table 5.5 (seed002.md §5.3): Acc SD, CE SD, Dis %, ρ, Δ %, printed VR %
TABLE_5_5_SINGLE = (0.26, 0.0072, 10.7, 0.871, 1.82)
TABLE_5_5 = {
    "Ensemble N=2": ((0.19, 0.0044, 6.9, 0.929, 0.89), 39),
    "Ensemble N=3": ((0.15, 0.0033, 5.5, 0.951, 0.59), 55),
    "Ensemble N=4": ((0.17, 0.0030, 4.6, 0.963, 0.43), 60),
    "Ensemble N=5": ((0.12, 0.0028, 4.1, 0.970, 0.34), 67),
    "Acc. Ens.": ((0.19, 0.0044, 6.1, 0.957, 0.63), 48),
    "Single/Flip-TTA": ((0.24, 0.0061, 8.2, 0.905, 1.20), 21),
    "Single/Flip-Crop-TTA": ((0.19, 0.0049, 6.9, 0.922, 0.92), 37),
    "Acc. Ens./Flip-TTA": ((0.15, 0.0039, 5.0, 0.967, 0.45), 58),
    "Acc. Ens./Flip-Crop-TTA": ((0.16, 0.0033, 4.6, 0.972, 0.38), 61),
}


@pytest.mark.parametrize("row", list(TABLE_5_5))
def test_variability_reduction_reproduces_table_5_5(row):
    values, printed = TABLE_5_5[row]
    vr = v.variability_reduction(dict(zip(v.METRICS, values)), dict(zip(v.METRICS, TABLE_5_5_SINGLE)))
    assert round(vr) == printed


def test_variability_reduction_uses_one_minus_rho():
    values, _ = TABLE_5_5["Ensemble N=2"]
    base = dict(zip(v.METRICS, TABLE_5_5_SINGLE))
    assert v.variability_reduction(dict(zip(v.METRICS, values)), base) == pytest.approx(39.48, abs=0.01)
    assert v.variability_reduction(base, base) == 0.0


# ---- CKA

def _demo_xy():
    """The construction of Kornblith et al.'s published demo (google-research representation_similarity/Demo.ipynb)."""
    rs = np.random.RandomState(1337)
    x = rs.randn(100, 10)
    return x, rs.randn(100, 10) + x


def test_cka_reproduces_the_published_demo_numbers():
    x, y = _demo_xy()
    assert round(v.linear_cka(x, y), 5) == 0.55761  # "Linear CKA from Examples: 0.55761"
    assert round(v.linear_cka(x, y, debiased=True), 5) == 0.51346  # "(Debiased): 0.51346"


def _reference_biased_cka(x, y):
    """O(n²) from the paper: HSIC = tr(KHLH)/(n−1)², H = I − 11ᵀ/n, K = XXᵀ."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    hsic = lambda k, l: np.trace(k @ h @ l @ h) / (n - 1) ** 2  # noqa: E731
    k, l = x @ x.T, y @ y.T
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def _reference_debiased_cka(x, y):
    """Song et al. 2012 eq. 5 term by term on uncentred Gram matrices (HSIC_u is shift-invariant)."""
    n = len(x)

    def hsic(k, l):
        k, l = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
        one = np.ones(n)
        return (np.trace(k @ l) + one @ k @ one * (one @ l @ one) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * one @ k @ l @ one) / (n * (n - 3))
    k, l = x @ x.T, y @ y.T
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def test_cka_equals_the_direct_formulas_and_is_invariant():
    x, y = _demo_xy()
    x, y = x[:30] + 3.0, y[:30, :7]  # uncentred, different widths
    assert v.linear_cka(x, y) == pytest.approx(_reference_biased_cka(x, y), rel=1e-10)
    assert v.linear_cka(x, y, debiased=True) == pytest.approx(_reference_debiased_cka(x, y), rel=1e-10)
    q, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(10, 10)))
    for debiased in (False, True):
        base = v.linear_cka(x, y, debiased)
        assert v.linear_cka(x @ q, y, debiased) == pytest.approx(base, rel=1e-10)
        assert v.linear_cka(x * 1.337, y * 0.01, debiased) == pytest.approx(base, rel=1e-10)
        assert v.linear_cka(x, x, debiased) == pytest.approx(1.0, rel=1e-12)
    assert v.linear_cka(x @ np.diag(np.arange(1.0, 11.0)), y) != pytest.approx(v.linear_cka(x, y), rel=1e-3)


def test_cka_matrix_equals_pairwise_calls():
    rng = np.random.default_rng(5)
    feats = [rng.normal(size=(20, d)) for d in (3, 6, 4, 6)]
    for debiased in (False, True):
        m = v.cka_matrix(feats, debiased)
        for i, j in itertools.combinations(range(4), 2):
            assert m[i, j] == pytest.approx(v.linear_cka(feats[i], feats[j], debiased), rel=1e-12)
    with pytest.raises(ValueError, match="same examples"):
        v.cka_matrix([feats[0], feats[1][:10]])


def test_average_ranks_equal_scipy_rankdata_with_ties():
    from scipy.stats import rankdata

    values = np.random.default_rng(6).integers(0, 5, size=(4, 30)).astype(np.float32)  # many ties
    np.testing.assert_array_equal(v.average_ranks(values), rankdata(values, axis=1))


def test_pairwise_metrics_with_tied_logits_equal_the_naive_loop():
    # integer logits: ties within examples (argmax takes the first class) and across the flattened vectors
    rng = np.random.default_rng(8)
    logits = rng.integers(0, 3, size=(5, 50, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 50)
    acc = v.accuracy_percent(logits, labels)
    delta, rho = v.pair_ensemble_delta(logits, labels), v.pair_spearman(logits)
    for i, j in itertools.combinations(range(5), 2):
        ens = 100.0 * np.mean((logits[i] + logits[j]).argmax(-1) == labels)
        assert delta[i, j] == pytest.approx(ens - (acc[i] + acc[j]) / 2, abs=1e-12)
        assert rho[i, j] == pytest.approx(spearmanr(logits[i].ravel(), logits[j].ravel())[0], abs=1e-12)
