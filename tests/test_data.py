"""The training-set recipe (fusionlab.data): blur cascade, variance threshold, labels, determinism, shard format."""
import json

import cv2
import h5py
import numpy as np
import pytest

from fusionlab import data
from pyfusion.constants import PATCH


def _image(rng, h=64, w=80):
    img = np.zeros((h, w), np.uint8)
    img[:, : w // 2] = rng.integers(0, 256, (h, w // 2))  # textured left half, flat right half
    img[:, w // 2:] = 128
    return img


def test_blur_cascade_applies_gaussian_repeatedly_with_rounding():
    rng = np.random.default_rng(0)
    g = rng.integers(0, 256, (40, 40)).astype(np.float64)
    levels = data.blur_cascade(g, levels=3)
    assert len(levels) == 3
    ref = g
    for lvl in levels:
        ref = np.clip(np.round(cv2.GaussianBlur(ref, (7, 7), 2.0, 2.0, borderType=cv2.BORDER_REPLICATE)), 0, 255)
        np.testing.assert_array_equal(lvl, ref)
        assert np.all(lvl == np.round(lvl))
    # each level is blurrier: total variation falls strictly
    tv = [np.abs(np.diff(x, axis=1)).sum() for x in [g] + levels]
    assert all(a > b for a, b in zip(tv, tv[1:]))


def test_gaussian_kernel_is_sigma2_7x7():
    k = cv2.getGaussianKernel(7, 2.0)[:, 0]
    x = np.arange(-3, 4)
    ref = np.exp(-x**2 / 8.0)
    np.testing.assert_allclose(k, ref / ref.sum(), rtol=1e-6)


def test_patch_variance_matches_numpy_unbiased_var():
    rng = np.random.default_rng(1)
    g = rng.integers(0, 256, (30, 37)).astype(np.float64)
    v = data.patch_variance(g)
    assert v.shape == (30 - PATCH + 1, 37 - PATCH + 1)
    for y, x in [(0, 0), (5, 7), (14, 21)]:
        assert v[y, x] == pytest.approx(g[y:y + 16, x:x + 16].var(ddof=1), rel=1e-9)


def test_sample_places_respects_variance_threshold():
    rng = np.random.default_rng(2)
    img = _image(rng).astype(np.float64)
    places = data.sample_places(img, 500, np.random.default_rng(0))
    assert len(places) > 0
    for y, x in places:
        assert img[y:y + 16, x:x + 16].var(ddof=1) > 25
    flat = np.full((40, 40), 100.0)
    assert len(data.sample_places(flat, 10, np.random.default_rng(0))) == 0
    # no duplicates
    assert len({tuple(p) for p in places}) == len(places)


def test_make_pairs_label_and_swap_convention():
    rng = np.random.default_rng(3)
    clear = rng.integers(0, 256, (32, 32)).astype(np.float64)
    blurred = clear * 0.5
    places = np.array([[0, 0], [3, 5]])
    pair, label = data.make_pairs(clear, blurred, places)
    assert pair.shape == (4, 2, 16, 16) and pair.dtype == np.float32
    np.testing.assert_array_equal(label, [1, 1, 0, 0])
    np.testing.assert_allclose(pair[1, 0], clear[3:19, 5:21] / 255, rtol=1e-6)   # positive: A clear
    np.testing.assert_allclose(pair[1, 1], blurred[3:19, 5:21] / 255, rtol=1e-6)  # B blurred
    np.testing.assert_array_equal(pair[3, 0], pair[1, 1])                           # negative: swapped
    np.testing.assert_array_equal(pair[3, 1], pair[1, 0])
    assert pair.min() >= 0 and pair.max() <= 1


def test_quota_spreads_exactly():
    q = data.quota(1003, 10, 5)
    assert q.sum() == 1003 and q.max() - q.min() <= 1


@pytest.fixture()
def image_dir(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(4)
    for i in range(3):
        cv2.imwrite(str(d / f"im{i}.png"), _image(rng, 70 + i, 90))
    (d / "broken.jpg").write_bytes(b"not a jpeg")
    return d


def test_make_dataset_is_deterministic_shuffled_and_readable(image_dir, tmp_path):
    m1 = data.make_dataset([image_dir], tmp_path / "a", examples=300, seed=7, shard_size=128, progress=False)
    m2 = data.make_dataset([image_dir], tmp_path / "b", examples=300, seed=7, shard_size=128, progress=False)
    assert m1["examples"] == 300 and m1["positives"] == 150
    assert m1["images_used"] == 3 and m1["images_skipped"] == 1
    assert [s["sha256"] for s in m1["shards"]] == [s["sha256"] for s in m2["shards"]]   # byte-identical
    for s in m1["shards"]:
        assert (tmp_path / "a" / s["file"]).read_bytes() == (tmp_path / "b" / s["file"]).read_bytes()
    m3 = data.make_dataset([image_dir], tmp_path / "c", examples=300, seed=8, shard_size=128, progress=False)
    assert [s["sha256"] for s in m3["shards"]] != [s["sha256"] for s in m1["shards"]]
    files = (tmp_path / "a" / "list.txt").read_text().split()
    assert len(files) == 3
    labels = []
    for f in files:
        with h5py.File(f, "r") as h:
            assert h["pair"].dtype == np.float32 and h["pair"].shape[1:] == (2, 16, 16)
            assert h["label"].dtype == np.float32 and h["label"].ndim == 1
            labels.append(h["label"][...])
    lab = np.concatenate(labels)
    assert lab.sum() == 150
    # shuffled: labels are not in blocks of 1s then 0s
    assert np.abs(np.diff(lab)).sum() > 50
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["seed"] == 7
    assert not list(tmp_path.glob(".*tmp*"))


def test_make_dataset_refuses_existing_output_and_leaves_nothing(image_dir, tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError):
        data.make_dataset([image_dir], tmp_path / "out", examples=10, seed=1, progress=False)
    with pytest.raises(ValueError):
        data.make_dataset([image_dir], tmp_path / "odd", examples=11, seed=1, progress=False)
    assert not (tmp_path / "odd").exists() and not list(tmp_path.glob(".*tmp*"))


def test_hdf5_shard_feeds_caffe(caffe, image_dir, tmp_path):
    """Caffe's HDF5Data layer reads the shards as written (pair N x 2 x 16 x 16, label N)."""
    data.make_dataset([image_dir], tmp_path / "d", examples=64, seed=1, shard_size=64, progress=False)
    proto = tmp_path / "net.prototxt"
    proto.write_text(
        'layer { name: "data" type: "HDF5Data" top: "pair" top: "label" '
        f'hdf5_data_param {{ source: "{tmp_path / "d" / "list.txt"}" batch_size: 16 }} }}\n')
    net = caffe.Net(str(proto), caffe.TEST)
    net.forward()
    with h5py.File((tmp_path / "d" / "list.txt").read_text().split()[0], "r") as h:
        np.testing.assert_array_equal(net.blobs["pair"].data, h["pair"][:16])
        np.testing.assert_array_equal(net.blobs["label"].data, h["label"][:16])


@pytest.mark.parametrize("net,levels,patch", [("cnn_blur3", 3, 16), ("cnn_patch8", 5, 8)])
def test_make_dataset_follows_the_ablation_recipes(image_dir, tmp_path, net, levels, patch):
    man = data.make_dataset([image_dir], tmp_path / net, examples=60, seed=3, net=net, progress=False)
    assert man["recipe"]["blur"]["levels"] == levels and man["recipe"]["patch"] == patch
    with h5py.File(tmp_path / net / man["shards"][0]["file"], "r") as h:
        assert h["pair"].shape[1:] == (2, patch, patch)
