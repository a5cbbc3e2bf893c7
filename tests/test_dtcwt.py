"""The dual-tree complex wavelet transform (pyfusion.dtcwt) and the DT-CWT fusion baseline (method "dtcwt").

References: N. Kingsbury, "Complex wavelets for shift invariant analysis and filtering of signals", ACHA 10 (3)
(2001) 234-253; I.W. Selesnick, R.G. Baraniuk, N.G. Kingsbury, "The dual-tree complex wavelet transform", IEEE
Signal Processing Magazine 22 (6) (2005) 123-151; Y. Liu et al., "Multi-focus image fusion: A Survey of the state
of the art", Information Fusion 64 (2020) 71-91 (published DTCWT images under ../shared/data/mfif/results/dtcwt).
"""
import time

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, gaussian_filter1d

import pyfusion
from pyfusion import dtcwt
from pyfusion.cli import main
from pyfusion.io import read_image, write_image
from pyfusion.methods import dtcwt as method

FILTERS = [("near_sym_a", "qshift_06"), ("near_sym_b", "qshift_b"), ("legall", "qshift_a")]


# ------------------------------------------------------------------------------------------------ transform
def test_filters_are_the_published_pairs():
    """Level 1: biorthogonal (h0o * g0o + h1o * g1o is a delay, the aliasing term cancels); Q-shift: tree a
    orthonormal to its even shifts, tree b its reverse."""
    for name in dtcwt.BIORT:
        f = dtcwt.biort_filters(name)
        assert f["h0o"].sum() == pytest.approx(1.0) and f["g0o"].sum() == pytest.approx(1.0)
        pr = np.convolve(f["h0o"], f["g0o"]) + np.convolve(f["h1o"], f["g1o"])
        alias = sum(np.convolve(f[h] * (-1.0) ** np.arange(len(f[h])), f[g]) for h, g in (("h0o", "g0o"), ("h1o", "g1o")))
        assert np.count_nonzero(np.abs(pr) > 1e-12) == 1 and pr.max() == pytest.approx(1.0), name
        assert np.abs(alias).max() < 1e-12, name
    for name in dtcwt.QSHIFT:
        q = dtcwt.qshift_filters(name)
        auto = np.correlate(q["h0a"], q["h0a"], "full")[len(q["h0a"]) - 1::2]
        assert auto[0] == pytest.approx(1.0) and np.abs(auto[1:]).max() < 1e-6, name
        np.testing.assert_array_equal(q["h0b"], q["h0a"][::-1])
    with pytest.raises(ValueError, match="unknown level-1 filters 'nope'"):
        dtcwt.forward(np.zeros((8, 8)), biort="nope")


@pytest.mark.parametrize("shape", [(64, 64), (37, 50), (101, 77), (2, 3), (520, 520), (2, 3, 33, 47)])
@pytest.mark.parametrize("biort,qshift", FILTERS)
def test_perfect_reconstruction(shape, biort, qshift):
    """Inverse(forward(x)) == x to < 1e-10 on 0-255 random images of even and odd sizes (odd ones are extended
    by a copy of their last row / column and cropped back) and on stacks."""
    x = np.random.default_rng(sum(shape)).random(shape) * 255
    for levels in (1, 4) if shape != (520, 520) else (4,):
        p = dtcwt.forward(x, levels=levels, biort=biort, qshift=qshift)
        assert len(p.highpasses) == levels and p.shape == shape[-2:]
        assert p.highpasses[0].shape == (*shape[:-2], 6, (shape[-2] + 1) // 2, (shape[-1] + 1) // 2)
        assert p.highpasses[0].dtype == np.complex128
        y = dtcwt.inverse(p, biort=biort, qshift=qshift)
        assert y.shape == x.shape
        assert np.abs(y - x).max() < 1e-10


def _stripes(n, angle, period):
    """Cosine stripes lying at ``angle`` degrees counter-clockwise from the horizontal (y up; rows go down)."""
    r, c = np.mgrid[0:n, 0:n].astype(float)
    t = np.deg2rad(angle)
    return np.cos(2 * np.pi / period * (-np.sin(t) * c - np.cos(t) * r))


@pytest.mark.parametrize("level", [1, 2, 3, 4])
def test_oriented_patterns_land_in_their_sub_band(level):
    """Stripes at 15, 45, ..., 165 degrees put most of the level's energy into the sub-band of that orientation
    (the period is matched to the level: 2.5 * 2^(level-1) pixels)."""
    for k, angle in enumerate(dtcwt.ORIENTATIONS):
        p = dtcwt.forward(_stripes(256, angle, 2.5 * 2 ** (level - 1)), levels=level)
        e = (np.abs(p.highpasses[level - 1][:, 2:-2, 2:-2]) ** 2).sum(axis=(-1, -2))
        share = e / e.sum()
        assert np.argmax(share) == k and share[k] > 0.45, (angle, np.round(share, 3))


def test_near_shift_invariance_unlike_the_dwt():
    """The energy of a level's sub-bands barely changes when a blurred vertical edge moves by one pixel; the
    DWT's (PyWavelets bior2.2, the survey DWT's 5/3 filters) changes by a multiple of itself."""
    import pywt   # a dependency of the library

    c = np.arange(128.0)[None, :].repeat(128, 0)
    edges = [gaussian_filter1d(255.0 * (c >= 60 + s), 1.5, axis=1) for s in range(8)]
    for level in (2, 3, 4):
        dt = np.array([np.sum(np.abs(dtcwt.forward(x, levels=4).highpasses[level - 1]) ** 2) for x in edges])
        dw = np.array([sum(np.sum(b ** 2) for b in pywt.wavedec2(x, "bior2.2", level=4, mode="symmetric")[-level])
                       for x in edges])
        step_dt, step_dw = (np.abs(e[1:] / e[:-1] - 1).max() for e in (dt, dw))
        print(f"level {level}: largest change of the band energy for a 1-pixel shift: DT-CWT {100 * step_dt:.1f}%, "
              f"DWT {100 * step_dw:.1f}%")
        assert step_dt < 0.3 and step_dt < step_dw / 4


def test_speed_520_four_levels():
    """Forward + inverse of a 520x520 image, 4 levels (printed; no timed assertion)."""
    x = np.random.default_rng(0).random((520, 520)) * 255
    best = np.inf
    for _ in range(5):
        t0 = time.perf_counter()
        y = dtcwt.inverse(dtcwt.forward(x, levels=4))
        best = min(best, time.perf_counter() - t0)
    print(f"DT-CWT 520x520, 4 levels, forward + inverse: {1000 * best:.1f} ms (best of 5); max error "
          f"{np.abs(y - x).max():.1e}")


def test_matches_pytorch_wavelets():
    """Our coefficients equal pytorch_wavelets' DTCWTForward (an independent implementation) where it imports."""
    try:
        import torch
        from pytorch_wavelets import DTCWTForward
    except Exception as e:  # torch, pytorch_wavelets or its pkg_resources missing
        pytest.skip(f"torch / pytorch_wavelets not importable ({type(e).__name__}: {e})")
    for shape in ((64, 80), (37, 50)):
        x = np.random.default_rng(1).random(shape) * 255
        xfm = DTCWTForward(biort="near_sym_a", qshift="qshift_06", J=4).double()
        yl, yh = xfm(torch.from_numpy(x)[None, None])
        p = dtcwt.forward(x, levels=4)
        np.testing.assert_allclose(yl[0, 0].numpy(), p.lowpass, atol=1e-9)
        for theirs, ours in zip(yh, p.highpasses):
            t = theirs[0, 0].numpy()
            np.testing.assert_allclose(t[..., 0] + 1j * t[..., 1], ours, atol=1e-9)


# -------------------------------------------------------------------------------------------------- method
def _pair(shape, seed=0):
    rng = np.random.default_rng(seed)
    sharp = gaussian_filter(rng.random(shape), 0.7)
    blur = gaussian_filter(sharp, 2.5)
    left = (np.arange(shape[1]) < shape[1] // 2)[None, :]
    left = left[..., None] if len(shape) == 3 else left
    return [np.round(np.where(m, sharp, blur) * 255).astype(np.uint8) for m in (left, ~left)], sharp


@pytest.mark.parametrize("shape", [(48, 64), (37, 53, 3)])
def test_fuse_picks_the_sharp_halves_and_threads_do_not_matter(shape):
    (a, b), sharp = _pair(shape)
    r1 = pyfusion.fuse([a, b], method="dtcwt", threads=1)
    r2 = pyfusion.fuse([a, b], method="dtcwt", threads=2, progress=True)
    np.testing.assert_array_equal(r1.fused, r2.fused)
    assert r1.fused.dtype == np.uint8 and r1.fused.shape == a.shape
    assert r1.decision_map.shape == a.shape and r1.decision_map.dtype == np.uint8
    d = r1.decision_map if r1.decision_map.ndim == 2 else r1.decision_map[..., 0]
    assert (d[:, 4:shape[1] // 2 - 4] == 0).mean() > 0.9 and (d[:, shape[1] // 2 + 4:-4] == 1).mean() > 0.9
    err = [np.abs(x.astype(float) - sharp * 255).mean() for x in (r1.fused, a, b)]
    assert err[0] < 0.6 * min(err[1:])


def test_fusing_copies_returns_the_image():
    x = np.random.default_rng(3).random((29, 45, 3))
    fused, _ = method.fuse_unit([x, x, x], threads=1)
    assert np.abs(fused - x).max() < 1e-12


def test_bad_values_are_one_line_errors():
    (a, b), _ = _pair((32, 32))
    for kw, text in (({"biort": "nope"}, "unknown level-1 filters"), ({"levels": 0}, "levels must be"),
                     ({"border": "x"}, "unknown border"), ({"window": 2}, "window must be")):
        with pytest.raises(ValueError, match=text) as e:
            pyfusion.fuse([a, b], method="dtcwt", **kw)
        assert "\n" not in str(e.value)


def test_command_line_flags_reach_the_method(tmp_path, capsys):
    (a, b), _ = _pair((40, 56, 3))
    paths = [str(write_image(tmp_path / f"{n}.png", x)) for n, x in zip("ab", (a, b))]
    out = tmp_path / "f.png"
    assert main(["fuse", *paths, "-o", str(out), "--method", "dtcwt", "--biort", "legall", "--levels", "3"]) == 0
    np.testing.assert_array_equal(read_image(out), pyfusion.fuse([a, b], method="dtcwt", biort="legall",
                                                                 levels=3).fused)
    assert main(["fuse", *paths, "-o", str(tmp_path / "g.png"), "--method", "dtcwt", "--qshift", "nope"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.slow
def test_published_survey_images_are_reproduced(shared_data):
    """g_01 and c_01 equal the survey's published DTCWT images; g_04 differs at 0.03% of its values (83 dB)."""
    root = shared_data / "mfif"
    for name, kind in (("g_01", "grayscale"), ("c_01", "color"), ("g_04", "grayscale")):
        srcs = [read_image(root / "sources" / kind / f"{name}_{i}.tif") for i in (1, 2)]
        ours = pyfusion.fuse(srcs, method="dtcwt").fused.astype(float)
        theirs = read_image(root / "results" / "dtcwt" / f"{name}_dtcwt.tif").astype(float)
        if name == "g_04":
            assert 10 * np.log10(255 ** 2 / np.mean((ours - theirs) ** 2)) > 80 and np.mean(ours != theirs) < 0.001
        else:
            np.testing.assert_array_equal(ours, theirs)
