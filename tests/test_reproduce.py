"""Recovering the authors' decision from their fused image (pyfusion.reproduce)."""
import numpy as np
import pytest

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


def _check_psnr255(fn):
    """PSNR = 10 log10(255^2 / MSE) (8-bit peak): MSE = 1 gives 20 log10(255) = 48.1308... dB, MSE = 16^2 gives
    20 log10(255 / 16), equal images give inf."""
    x = np.arange(16.0).reshape(4, 4)
    assert fn(x, x + 1) == pytest.approx(20 * np.log10(255), rel=1e-12)
    assert fn(x, x - 16) == pytest.approx(20 * np.log10(255 / 16), rel=1e-12)
    y = x.copy()
    y[0, 0] += 8  # one pixel off by 8 of 16: MSE = 64 / 16 = 4
    assert fn(x, y) == pytest.approx(10 * np.log10(255 ** 2 / 4), rel=1e-12)
    assert fn(x, x) == float("inf")


def test_psnr255():
    _check_psnr255(psnr255)


# plausible wrong PSNRs: peak 1 instead of 255, RMSE in place of MSE, sum instead of mean of the squared error
_WRONG_PSNR = {
    "peak 1": lambda x, y: psnr255(x, y) - 20 * np.log10(255),
    "rmse": lambda x, y: psnr255(x, y) / 2 + 10 * np.log10(255),
    "sum of squares": lambda x, y: psnr255(x, y) - 10 * np.log10(np.size(x)),
}


@pytest.mark.parametrize("wrong", sorted(_WRONG_PSNR))
def test_psnr255_check_rejects_wrong_formulas(wrong):
    with pytest.raises(AssertionError):
        _check_psnr255(_WRONG_PSNR[wrong])


def test_survey_pairs_lists_all_30(shared_data):
    pairs = survey_pairs(shared_data / "mfif")
    assert len(pairs) == 30
    assert all(p.exists() for _, a, b, r in pairs for p in (a, b, r))
