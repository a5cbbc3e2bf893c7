"""method="wavelet-cnn": perfect reconstruction, sizes, colour, 16-bit, N sources, the band decisions, and the
training recipe of sub-band pairs (fusionlab.data)."""
import cv2
import numpy as np
import pytest

import pyfusion
from pyfusion import models
from fusionlab import data
from pyfusion.io import FusionInputError, from_unit
from pyfusion.methods import wavelet_cnn as wc

LOW, HIGH = models.get("wavelet_low"), models.get("wavelet_high")


def const_fns(low=1.0, high=1.0):
    return (lambda a, b: np.full(LOW.score_shape(*a.shape[:2]), low, np.float32),
            lambda a, b: np.full(HIGH.score_shape(*a.shape[:2]), high, np.float32))


def energy_fns():
    """Fake band nets: 1 where A's band has more local energy (the sharper source), else 0."""
    def score(a, b, m):
        ea = cv2.boxFilter(np.square(a).reshape(a.shape[0], a.shape[1], -1).sum(-1), -1, (16, 16))
        eb = cv2.boxFilter(np.square(b).reshape(b.shape[0], b.shape[1], -1).sum(-1), -1, (16, 16))
        sh = m.score_shape(*a.shape[:2])
        return (ea > eb)[7::2, 7::2][: sh[0], : sh[1]].astype(np.float32)

    def low(a, b):      # the LL band: local variance instead of energy
        return score(a - cv2.blur(a, (5, 5)), b - cv2.blur(b, (5, 5)), LOW)

    return low, (lambda a, b: score(a, b, HIGH))


@pytest.mark.parametrize("shape", [(32, 32), (37, 53), (101, 77), (64, 48, 3), (45, 33, 1)])
@pytest.mark.parametrize("levels,deep", [(1, "derive"), (3, "derive"), (1, "net")])
def test_fusing_an_image_with_itself_returns_it(shape, levels, deep):
    x = np.random.default_rng(0).random(shape)
    r = pyfusion.fuse([x, x, x], method="wavelet-cnn", score_fn=energy_fns(), levels=levels, deep=deep)
    assert r.fused.shape == x.shape and r.fused.dtype == x.dtype
    assert np.abs(r.fused - x).max() < 1e-12


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_integer_sources_come_back_exactly(dtype):
    x = from_unit(np.random.default_rng(1).random((40, 56, 3)), dtype)
    r = pyfusion.fuse([x, x], method="wavelet-cnn", score_fn=const_fns(0.3, 0.8))
    np.testing.assert_array_equal(r.fused, x)


@pytest.mark.parametrize("low,high", [(1.0, 1.0), (0.0, 0.0)])
def test_constant_decisions_take_one_source(low, high):
    rng = np.random.default_rng(2)
    a, b = rng.random((48, 40)), rng.random((48, 40))
    r = pyfusion.fuse([a, b], method="wavelet-cnn", score_fn=const_fns(low, high), levels=2)
    np.testing.assert_allclose(r.fused, a if low else b, atol=1e-12)


def test_low_and_high_decisions_act_on_their_own_bands():
    """Low from A, high from B: the fused image is A's level-1 LL with B's details (Haar, written out here)."""
    rng = np.random.default_rng(3)
    a, b = rng.random((32, 36)), rng.random((32, 36))
    r = pyfusion.fuse([a, b], method="wavelet-cnn", score_fn=const_fns(1.0, 0.0))

    def blocks(x):  # the 2x2 block mean (LL) and the rest (details) of a Haar level
        m = 0.25 * (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2])
        return np.kron(m, np.ones((2, 2)))

    np.testing.assert_allclose(r.fused, np.clip(blocks(a) + (b - blocks(b)), 0, 1), atol=1e-12)  # floats: clipped


def test_synthetic_pair_beats_both_sources():
    """Left half sharp in A, right half in B: the band decisions follow the sharp halves."""
    rng = np.random.default_rng(4)
    sharp = cv2.GaussianBlur(rng.random((96, 128)), (3, 3), 0.7)
    blur = cv2.GaussianBlur(sharp, (0, 0), 2.5)
    left = np.zeros(sharp.shape, bool)
    left[:, :64] = True
    a, b = np.where(left, sharp, blur), np.where(left, blur, sharp)
    r = pyfusion.fuse([a, b], method="wavelet-cnn", score_fn=energy_fns())
    err = lambda x: np.abs(x - sharp)[:, 8:-8].mean()   # noqa: E731
    assert err(r.fused) < 0.5 * min(err(a), err(b))
    assert r.high_decision_map[:, :24].mean() > 0.9 and r.high_decision_map[:, -24:].mean() < 0.1


def test_maps_and_errors():
    x = np.random.default_rng(5).random((40, 40))
    r = pyfusion.fuse([x, x], method="wavelet-cnn", score_fn=const_fns())
    assert set(r.maps) == set(wc.MAPS)
    assert r.low_decision_map.shape == (20, 20) and r.high_score_map.shape == HIGH.score_shape(20, 20)
    with pytest.raises(FusionInputError, match="smaller than 32x32"):
        pyfusion.fuse([x[:31], x[:31]], method="wavelet-cnn", score_fn=const_fns())
    with pytest.raises(ValueError, match="levels"):
        pyfusion.fuse([x, x], method="wavelet-cnn", score_fn=const_fns(), levels=0)
    with pytest.raises(ValueError, match="at least 64x64"):
        pyfusion.fuse([x, x], method="wavelet-cnn", score_fn=const_fns(), levels=2, deep="net")
    with pytest.raises(ValueError, match="shape"):
        pyfusion.fuse([x, x], method="wavelet-cnn", score_fn=(lambda a, b: np.zeros((2, 2)), const_fns()[1]))


def test_derive_decision_is_the_block_mean():
    w = np.arange(15, dtype=float).reshape(3, 5)
    got = wc.derive_decision(w, (2, 3))
    padded = np.pad(w, ((0, 1), (0, 1)), mode="edge")
    want = padded.reshape(2, 2, 3, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(got, want)


def test_band_pairs_are_the_scaled_haar_bands_of_the_patches():
    """The recipe's sub-band pairs, written out with explicit 2x2 Haar sums (not PyWavelets)."""
    rng = np.random.default_rng(6)
    pair = rng.random((5, 2, 32, 32))
    out = data.band_pairs(pair)
    assert out["low"].shape == (5, 2, 16, 16) and out["high"].shape == (5, 6, 16, 16)
    p, q, r, s = pair[..., 0::2, 0::2], pair[..., 0::2, 1::2], pair[..., 1::2, 0::2], pair[..., 1::2, 1::2]
    ll = (p + q + r + s) / 2                         # orthonormal Haar: sums / 2
    lh = (p + q - r - s) / 2                         # PyWavelets' cH: rows differ (horizontal detail)
    hl = (p - q + r - s) / 2                         # cV: columns differ
    hh = (p - q - r + s) / 2
    np.testing.assert_allclose(out["low"], ll * data.BAND_SCALE["low"], atol=1e-6)
    for i, band in enumerate((lh, hl, hh)):
        np.testing.assert_allclose(out["high"][:, i], band[:, 0] * data.BAND_SCALE["high"], atol=1e-6)
        np.testing.assert_allclose(out["high"][:, 3 + i], band[:, 1] * data.BAND_SCALE["high"], atol=1e-6)
    np.testing.assert_allclose(out["low"][:, 0], pair[:, 0].reshape(5, 16, 2, 16, 2).mean((2, 4)), atol=1e-6)


def test_wavelet_dataset_recipe(tmp_path):
    """Sub-band pairs from 32x32 clear/blurred patches: (clear, blurred) = 1 with A's bands first; both datasets
    share their places and labels; the clear patch has more high-band energy than the blurred one."""
    import h5py

    rng = np.random.default_rng(7)
    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    for k in range(3):
        cv2.imwrite(str(img_dir / f"{k}.png"), rng.integers(0, 256, (70, 90), dtype=np.uint8))
    m = data.make_dataset([img_dir], tmp_path / "w", examples=60, seed=1, net="wavelet_high", progress=False)
    assert m["recipe"]["patch"] == 32 and m["recipe"]["bands"]["wavelet"] == "haar"
    assert m["recipe"]["datasets"] == {"low": [2, 16, 16], "high": [6, 16, 16]}
    with h5py.File(tmp_path / "w" / "shard_0000.h5") as f:
        low, high, label = f["low"][...], f["high"][...], f["label"][...]
    assert len(label) == 60 and label.sum() == 30
    ea, eb = np.square(high[:, :3]).sum((1, 2, 3)), np.square(high[:, 3:]).sum((1, 2, 3))
    assert np.all((ea > eb) == (label == 1))
    assert low.min() >= 0 and low.max() <= 1
    # the same dataset serves the low net: its train_val reads the "low" top
    assert 'top: "low"' in models.get("wavelet_low").train_val.read_text()


@pytest.mark.parametrize("name", ["wavelet_low", "wavelet_high"])
def test_shipped_band_nets_agree_on_every_backend(name, shared_data, caffe, winograd, onnxruntime):
    """The shipped band nets on the Haar bands of a real pair (Lytro c_02, a 200 x 200 crop): caffe, onnx and
    winograd within 1e-4, whole and tiled under a small --max-memory budget."""
    from pyfusion import backends, net
    from pyfusion.io import read_image, to_gray, to_unit

    d = shared_data / "mfif" / "sources" / "color"
    bands = []
    for k in (1, 2):
        g = to_gray(to_unit(read_image(d / f"c_02_{k}.tif")))[160:360, 160:360]
        ll, high = wc.dwt(g, 1)
        bands.append(ll * data.BAND_SCALE["low"] if name == "wavelet_low"
                     else np.stack(high, -1) * data.BAND_SCALE["high"])
    a, b = (x.astype(np.float32) for x in bands)
    ref = net.score_map(a, b, model=name, backend="caffe")
    assert ref.std() > 0.01
    small = backends.get("winograd").peak_bytes(models.get(name), 48, 48)
    for be in ("onnx", "winograd"):
        assert np.abs(net.score_map(a, b, model=name, backend=be) - ref).max() <= 1e-4, be
        assert np.abs(net.score_map(a, b, model=name, backend=be, max_bytes=small) - ref).max() <= 1e-4, be


# ------------------------------------------------------------------------------------ transform="dtcwt"
def _sources(shape, seed=8):
    """A textured image sharp on the left half in A and on the right half in B, and the sharp image."""
    rng = np.random.default_rng(seed)
    sharp = cv2.GaussianBlur(rng.random(shape), (3, 3), 0.7).reshape(shape)
    blur = cv2.GaussianBlur(sharp, (0, 0), 2.5).reshape(shape)
    left = np.zeros(shape, bool)
    left[:, : shape[1] // 2] = True
    return np.where(left, sharp, blur), np.where(left, blur, sharp), sharp


@pytest.mark.parametrize("options", [{}, {"levels": 3}, {"levels": 2, "deep": "net"}, {"bands": "joint"}])
def test_transform_haar_is_the_default(options):
    a, b, _ = _sources((64, 72, 3))
    a, b = from_unit(a, np.uint8), from_unit(b, np.uint8)
    want = pyfusion.fuse([a, b], method="wavelet-cnn", score_fn=energy_fns(), **options)
    got = pyfusion.fuse([a, b], method="wavelet-cnn", score_fn=energy_fns(), transform="haar", **options)
    assert got.fused.tobytes() == want.fused.tobytes()
    for k in wc.MAPS:
        assert got.maps[k].tobytes() == want.maps[k].tobytes()


@pytest.mark.parametrize("shape", [(32, 32), (37, 53), (101, 77), (64, 48, 3), (45, 33, 1)])
@pytest.mark.parametrize("levels", [1, 3])
def test_dtcwt_fusing_an_image_with_itself_returns_it(shape, levels):
    x = np.random.default_rng(0).random(shape)
    r = pyfusion.fuse([x, x, x], method="wavelet-cnn", transform="dtcwt", score_fn=energy_fns(), levels=levels)
    assert r.fused.shape == x.shape and r.fused.dtype == x.dtype
    assert np.abs(r.fused - x).max() < 1e-10


@pytest.mark.parametrize("shape", [(48, 40), (37, 53, 3)])
@pytest.mark.parametrize("levels", [1, 2, 4])
def test_dtcwt_low_and_high_decisions_act_on_their_own_bands(shape, levels):
    """Low from A and high from B: A's DT-CWT lowpass with B's complex sub-bands at every level, per channel."""
    from pyfusion import dtcwt

    rng = np.random.default_rng(9)
    a, b = rng.random(shape), rng.random(shape)
    for low, high, want_from in [(1.0, 1.0, a), (0.0, 0.0, b)]:
        r = pyfusion.fuse([a, b], method="wavelet-cnn", transform="dtcwt", score_fn=const_fns(low, high), levels=levels)
        np.testing.assert_allclose(r.fused, want_from, atol=1e-10)
    r = pyfusion.fuse([a, b], method="wavelet-cnn", transform="dtcwt", score_fn=const_fns(1.0, 0.0), levels=levels)
    ca, cb = (dtcwt.forward(np.moveaxis(x, -1, 0) if x.ndim == 3 else x, levels=levels) for x in (a, b))
    want = dtcwt.inverse(dtcwt.Pyramid(ca.lowpass, cb.highpasses, ca.shape))
    want = np.moveaxis(want, 0, -1) if a.ndim == 3 else want
    np.testing.assert_allclose(r.fused, np.clip(want, 0, 1), atol=1e-10)


def test_dtcwt_net_inputs_match_the_haar_bands():
    """The low input is the level-1 lowpass's 2x2 block mean; the high input's three channels respond to the
    orientations of the Haar bands they replace (LH, HL, HH) and, on white noise, have their mean square."""
    from pyfusion import dtcwt

    noise = np.random.default_rng(10).random((256, 256))
    low, high = wc.dtcwt_net_inputs(noise)
    lp = dtcwt.forward(noise, levels=1).lowpass
    np.testing.assert_allclose(low, lp.reshape(128, 2, 128, 2).mean((1, 3)), atol=1e-12)
    ll, haar = wc.dwt(noise, 1)
    haar = np.stack(haar, -1) * data.BAND_SCALE["high"]
    assert high.shape == haar.shape and low.shape == ll.shape
    np.testing.assert_allclose(np.square(high).mean((0, 1)), np.square(haar).mean((0, 1)), rtol=0.05)
    y, x = np.mgrid[:128, :128]
    for stripes in (np.cos(2.4 * y), np.cos(2.4 * x), np.cos(1.7 * (x + y))):   # horizontal, vertical, diagonal
        _, high = wc.dtcwt_net_inputs(stripes)
        _, haar = wc.dwt(stripes, 1)
        inner = (slice(8, -8), slice(8, -8))
        assert np.argmax(high[inner].mean((0, 1))) == np.argmax([np.abs(h[inner]).mean() for h in haar])


@pytest.mark.parametrize("shape", [(96, 128), (91, 117, 3)])
def test_dtcwt_synthetic_pair_beats_both_sources(shape):
    a, b, sharp = _sources(shape, seed=4)
    r = pyfusion.fuse([a, b], method="wavelet-cnn", transform="dtcwt", score_fn=energy_fns(), levels=2)
    err = lambda x: np.abs(x - sharp)[:, 8:-8].mean()   # noqa: E731
    assert err(r.fused) < 0.5 * min(err(a), err(b))
    assert r.high_decision_map[:, :20].mean() > 0.9 and r.high_decision_map[:, -20:].mean() < 0.1


def test_dtcwt_with_the_shipped_nets_three_sources_in_series_and_threads():
    """The shipped band nets on DT-CWT inputs: better than either source; three sources = the pair's result
    fused with the third; one or two threads give the same bytes."""
    a, b, sharp = _sources((96, 128, 3), seed=11)
    a, b, c = (from_unit(x, np.uint8) for x in (a, b, np.clip(sharp * 0.98, 0, 1)))
    fuse = lambda imgs, **kw: pyfusion.fuse(imgs, method="wavelet-cnn", transform="dtcwt", **kw)   # noqa: E731
    r = fuse([a, b], threads=1)
    truth = from_unit(sharp, np.uint8).astype(float)
    err = lambda x: np.abs(x.astype(float) - truth)[:, 8:-8].mean()   # noqa: E731
    assert err(r.fused) < 0.7 * min(err(a), err(b))
    assert fuse([a, b], threads=2).fused.tobytes() == r.fused.tobytes()
    assert fuse([a, b, c]).fused.tobytes() == fuse([r.fused, c]).fused.tobytes()


def test_dtcwt_errors_are_one_line(tmp_path, capsys):
    from pyfusion.cli import main

    x = np.random.default_rng(12).random((40, 40))
    with pytest.raises(ValueError, match="transform must be 'haar' or 'dtcwt', got 'db2'"):
        wc.fuse([x, x], score_fn=const_fns(), transform="db2")
    with pytest.raises(ValueError, match="deep='net' needs transform='haar'"):
        pyfusion.fuse([x, x], method="wavelet-cnn", transform="dtcwt", score_fn=const_fns(), deep="net")
    paths = [str(tmp_path / f"{k}.png") for k in "ab"]
    for p in paths:
        cv2.imwrite(p, from_unit(x, np.uint8))
    args = ["fuse", *paths, "-o", str(tmp_path / "f.png"), "--method", "wavelet-cnn", "--transform"]
    assert main(args + ["nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--transform 'nope': choose from haar, dtcwt" in err, err
    assert main(args + ["dtcwt", "--threads", "1"]) == 0
    want = pyfusion.fuse([from_unit(x, np.uint8)] * 2, method="wavelet-cnn", transform="dtcwt").fused
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "f.png"), cv2.IMREAD_UNCHANGED), want)
