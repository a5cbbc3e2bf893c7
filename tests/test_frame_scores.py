"""Per-frame focus scores (pyfusion.net.frame_scores) of the onnx and caffe backends: the shipped nets' scores
equal the winograd backend's, whole and tiled; nets that are not siamese have none."""
import cv2
import numpy as np
import pytest

from pyfusion import net

BACKENDS = ["onnx", "caffe"]


@pytest.fixture(scope="module")
def frame():
    """A 130x151 grayscale float32 cut of skimage's astronaut (odd width: a ceil in the score shape)."""
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)[100:230, 150:301].astype(np.float32) / 255


def _need(backend, request):
    """The backend's fixture (skips outside CI where onnxruntime or pycaffe is missing, fails under CI)."""
    request.getfixturevalue("onnxruntime" if backend == "onnx" else "caffe")


@pytest.mark.parametrize("backend", BACKENDS)
def test_frame_scores_match_winograd_on_the_shipped_net(backend, frame, winograd, request):
    _need(backend, request)
    want = net.frame_scores(frame, backend="winograd", threads=1)
    got = net.frame_scores(frame, backend=backend, threads=1)
    assert got.dtype == np.float32 and got.shape == want.shape == net.score_map(frame, frame).shape
    assert want.std() > 1.0                                               # scores to compare, not a constant
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    tiled = net.frame_scores(frame, backend=backend, threads=1, tile=(10, 20))
    np.testing.assert_allclose(tiled, got, atol=1e-4, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_frame_scores_of_a_three_channel_net(backend, frame, winograd, request):
    """wavelet_high: three input channels per source."""
    _need(backend, request)
    bands = np.stack([frame, frame[::-1], frame[:, ::-1]], axis=2) - 0.5
    want = net.frame_scores(bands, model="wavelet_high", backend="winograd", threads=1)
    got = net.frame_scores(bands, model="wavelet_high", backend=backend, threads=1)
    assert got.shape == want.shape and want.std() > 0
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_frame_scores_only_for_siamese_nets(backend, request):
    _need(backend, request)
    with pytest.raises(NotImplementedError, match="siamese"):
        net.frame_scores(np.zeros((32, 32), np.float32), model="cnn_pseudo", backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_pass_fusion_runs_on_the_backend(backend, winograd, request):
    """fuse() of three frames in one pass with backend=...: the winograd result, up to float rounding in the
    label decisions."""
    _need(backend, request)
    import pyfusion
    from fusionlab import synthetic
    from skimage import data

    photo = np.ascontiguousarray(data.astronaut()[100:196, 150:278])
    s = synthetic.make_stack(photo, np.random.default_rng([0, 1]), frames=3, step=2.0, name="t")
    want = pyfusion.fuse(list(s.frames), backend="winograd", threads=1)
    got = pyfusion.fuse(list(s.frames), backend=backend, threads=1)
    assert got.fused.shape == want.fused.shape
    assert np.mean(got.maps["depth_map"] == want.maps["depth_map"]) > 0.999
