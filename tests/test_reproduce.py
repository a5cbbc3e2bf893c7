"""Recovering the authors' decision from their fused image (pyfusion.reproduce)."""
import numpy as np

from pyfusion.reproduce import compare, estimate_decision, psnr255, survey_pairs


def test_estimate_decision_recovers_a_known_map():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 255, (20, 30, 3))
    b = rng.uniform(0, 255, (20, 30, 3))
    d = (np.arange(30) < 12).astype(float)[None, :].repeat(20, 0)
    f = d[..., None] * a + (1 - d[..., None]) * b
    est, mask = estimate_decision(a, b, f)
    np.testing.assert_allclose(est[mask], d[mask], atol=1e-9)
    r = compare(a, b, f, f, d)
    assert r["decision_agreement"] == 1.0 and r["psnr_db"] == float("inf")
    r = compare(a, b, f, f, 1 - d)
    assert r["decision_agreement"] == 0.0


def test_pixels_where_sources_agree_are_not_judged():
    a = np.full((4, 4), 100.0)
    b = a.copy()
    b[0, 0] = 200.0
    est, mask = estimate_decision(a, b, a)
    assert mask.sum() == 1 and est[0, 0] == 1.0


def test_psnr255():
    x = np.zeros((4, 4))
    assert abs(psnr255(x, x + 1) - 48.1308) < 1e-3


def test_survey_pairs_lists_all_30(shared_data):
    pairs = survey_pairs(shared_data / "mfif")
    assert len(pairs) == 30
    assert all(p.exists() for _, a, b, r in pairs for p in (a, b, r))
