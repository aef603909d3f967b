"""Refusal Index estimator and baseline metrics: reference values from scipy/sklearn and analytic cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats

from trustlab.metrics.refusal import (
    accuracy_given_attempted,
    auroc,
    bvn_cdf,
    direct_refusal_index,
    expected_calibration_error,
    iso_ri_accuracy,
    pearson_to_spearman,
    rankdata,
    refusal_index,
    refusal_index_from_counts,
    refusal_index_from_rates,
    simpleqa_f_score,
    spearman,
    spearman_to_pearson,
    tetrachoric_rho,
    tetrachoric_rho_mle,
    two_pass_counts,
    weighted_score,
)


@pytest.mark.parametrize("seed", range(5))
def test_spearman_matches_scipy_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 6, 300).astype(float)  # many ties
    y = 0.5 * x + rng.normal(size=300)
    y[::7] = 1.0  # ties in y too
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    np.testing.assert_allclose(rankdata(x), stats.rankdata(x))


def test_spearman_edge_cases() -> None:
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        spearman([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        spearman([1.0, np.nan], [1.0, 2.0])


def test_bvn_cdf_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    for h, k, r in [(0.0, 0.0, 0.3), (0.0, 1.2, -0.5), (-1.0, 0.0, 0.9), *(tuple(v) for v in
                    np.c_[rng.normal(size=(20, 2)) * 1.5, rng.uniform(-0.98, 0.98, 20)])]:
        ref = stats.multivariate_normal(mean=[0, 0], cov=[[1, r], [r, 1]]).cdf([h, k])
        assert float(bvn_cdf(h, k, r)) == pytest.approx(ref, abs=1e-7)
    assert float(bvn_cdf(0.3, -0.2, 1.0)) == pytest.approx(special.ndtr(-0.2))
    assert float(bvn_cdf(0.3, -0.2, -1.0)) == pytest.approx(max(0.0, special.ndtr(0.3) + special.ndtr(-0.2) - 1))
    assert float(bvn_cdf(0.4, 0.7, 0.0)) == pytest.approx(special.ndtr(0.4) * special.ndtr(0.7), abs=1e-14)


def test_rho_spearman_conversion_roundtrip() -> None:
    for r in (-0.9, 0.0, 0.5, 0.99):
        assert spearman_to_pearson(pearson_to_spearman(r)) == pytest.approx(r)
    assert pearson_to_spearman(1.0) == pytest.approx(1.0)


@pytest.mark.parametrize("counts", [(300, 200, 900, 2600), (120, 380, 1500, 2000), (50, 950, 200, 800)])
def test_closed_form_root_equals_bounded_mle(counts: tuple[int, int, int, int]) -> None:
    rho, boundary = tetrachoric_rho(*counts)
    assert not boundary
    assert rho == pytest.approx(tetrachoric_rho_mle(*counts), abs=1e-4)


def test_independence_gives_zero_ri() -> None:
    # n11/n = r·μ exactly -> ρ = 0 -> RI = 0
    n, r, mu = 10_000, 0.3, 0.6
    n11 = int(n * r * mu)
    est = refusal_index_from_counts(n11, int(n * r) - n11, int(n * mu) - n11, n - int(n * r) - int(n * mu) + n11, n_boot=0)
    assert est.ri == pytest.approx(0.0, abs=1e-9)
    assert est.refusal_rate == pytest.approx(r) and est.error_rate == pytest.approx(mu)


def test_boundary_and_undefined_cases() -> None:
    est = refusal_index_from_counts(300, 0, 300, 400, n_boot=0)  # every refused question is would-be wrong
    assert est.boundary and est.rho == 1.0 and est.ri == pytest.approx(1.0)
    est = refusal_index_from_counts(0, 0, 400, 600, n_boot=50)
    assert math.isnan(est.ri) and "no refusals" in est.undefined_reason and math.isnan(est.ci_low)
    est = refusal_index_from_counts(100, 0, 0, 0, n_boot=0)
    assert math.isnan(est.ri) and est.undefined_reason


def test_ri_is_monotone_in_n11() -> None:
    ris = [refusal_index_from_counts(n11, 1000 - n11, 2400 - n11, 1600 + n11, n_boot=0).ri for n11 in range(300, 900, 60)]
    assert all(b > a for a, b in zip(ris, ris[1:], strict=False))


def test_two_pass_counts_combines_passes() -> None:
    refused = np.array([1, 1, 0, 0, 0], bool)
    wrong1 = np.array([0, 0, 1, 0, 1], bool)  # ignored where refused
    wrong2 = np.array([1, 0, 1, 1, 1], bool)  # used only where refused
    assert two_pass_counts(refused, wrong1, wrong2) == (1, 1, 2, 1)


def test_rates_only_form_equals_counts_form() -> None:
    c = (450, 850, 2150, 876)
    n = sum(c)
    est = refusal_index_from_counts(*c, n_boot=0)
    r, mu, acc = (c[0] + c[1]) / n, (c[0] + c[2]) / n, c[3] / n
    assert refusal_index_from_rates(r, acc, mu) == pytest.approx(est.ri, abs=1e-6)


@pytest.mark.parametrize("q", [0.1, 0.3, 0.6])
def test_recovers_latent_ri_under_threshold_model(q: float) -> None:
    rng = np.random.default_rng(42)
    rho = 0.5
    z = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=4326)
    refused = z[:, 0] > special.ndtri(1 - q)
    wrong = z[:, 1] > special.ndtri(1 - 0.6)
    est = refusal_index(refused, wrong, n_boot=300, seed=1)
    truth = spearman(z[:, 0], z[:, 1])
    assert abs(est.ri - truth) < 0.05
    assert est.ci_low < est.ri < est.ci_high
    assert est.n_boot_valid == 300
    assert refusal_index(refused, wrong, n_boot=300, seed=1).ci_low == est.ci_low  # seeded


def test_iso_ri_curve_endpoints_and_independence() -> None:
    mu = 0.6
    grid = np.array([1e-9, 0.3, 1 - 1e-9])
    c = iso_ri_accuracy(grid, mu, 0.5)
    assert c[0] == pytest.approx(1 - mu, abs=1e-6) and c[-1] == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(iso_ri_accuracy(grid, mu, 0.0), (1 - grid) * (1 - mu), atol=1e-9)


def test_simpleqa_formulas() -> None:
    # simple-evals: accuracy_given_attempted = correct / (correct + incorrect); f1 = 2·cga·correct / (cga + correct)
    correct, incorrect, n = 30, 50, 100
    cga = accuracy_given_attempted(correct, incorrect)
    assert cga == pytest.approx(correct / (correct + incorrect), abs=1e-12)
    assert simpleqa_f_score(correct / n, cga) == pytest.approx(2 * cga * 0.3 / (cga + 0.3), abs=1e-12)
    assert math.isnan(accuracy_given_attempted(0, 0))
    assert weighted_score(0.3, 0.5, penalty=1.0) == pytest.approx(-0.2)


def test_auroc_matches_mann_whitney() -> None:
    rng = np.random.default_rng(3)
    y = rng.random(200) < 0.4
    s = np.round(y * 0.5 + rng.random(200), 1)  # ties
    u = stats.mannwhitneyu(s[y], s[~y]).statistic  # AUROC = U / (n_pos · n_neg), ties counted 1/2
    assert auroc(s, y) == pytest.approx(u / (y.sum() * (~y).sum()), abs=1e-12)
    assert math.isnan(auroc([0.1, 0.2], [True, True]))


def test_ece_hand_computed() -> None:
    conf = np.array([0.05, 0.15, 0.15, 0.95, 0.95, 0.95, 0.95])
    correct = np.array([0, 0, 1, 1, 1, 1, 0])
    # bins: [0,.1]: conf .05 acc 0 -> |0-.05|·1/7; (.1,.2]: conf .15 acc .5 -> .35·2/7; (.9,1]: conf .95 acc .75 -> .2·4/7
    want = (0.05 * 1 + 0.35 * 2 + 0.2 * 4) / 7
    assert expected_calibration_error(conf, correct) == pytest.approx(want)
    with pytest.raises(ValueError):
        expected_calibration_error([1.2], [1])


def test_direct_ri_is_spearman_of_frequencies() -> None:
    fr = [0.0, 0.2, 0.5, 0.9]
    fw = [0.1, 0.1, 0.6, 0.8]
    assert direct_refusal_index(fr, fw) == pytest.approx(stats.spearmanr(fr, fw).statistic)
