"""The ``pyfusion`` command (pyfusion.cli): generated method flags, one-line errors, help, info, metrics."""
import hashlib
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

import pyfusion
from pyfusion.cli import main
from pyfusion.fusion import METHODS, evaluate, method_options
from pyfusion.io import read_image, write_image

SHIPPED = ("cnn", "wavelet_low", "wavelet_high")


@pytest.fixture
def pair(tmp_path):
    """A textured 48x64 RGB image, sharp on the left in A and on the right in B; paths and arrays."""
    rng = np.random.default_rng(0)
    sharp = cv2.GaussianBlur(rng.random((48, 64, 3)), (0, 0), 0.7)
    blur = cv2.GaussianBlur(sharp, (0, 0), 2.5)
    left = np.zeros(sharp.shape, bool)
    left[:, :32] = True
    imgs = [np.round(np.where(m, sharp, blur) * 255).astype(np.uint8) for m in (left, ~left)]
    paths = [str(write_image(tmp_path / f"{n}.png", img)) for n, img in zip("ab", imgs)]
    truth = np.round(sharp * 255).astype(np.uint8)
    return paths, imgs, str(write_image(tmp_path / "truth.png", truth))


def one_error_line(capsys, command="fuse") -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"pyfusion {command}: error: ") and "Traceback" not in err, err
    return err


def test_an_option_the_method_does_not_take_is_one_line_naming_its_options(tmp_path, capsys):
    out = tmp_path / "f.png"
    args = ["fuse", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(out)]
    assert main(args + ["--method", "dwt", "--model", "cnn"]) == 2
    err = one_error_line(capsys)
    dwt = [o.name for o in method_options("dwt")]
    assert f"method 'dwt' takes no option 'model'; its options: {', '.join(dwt)}" in err
    assert main(args + ["--bogus", "1"]) == 2                         # no method declares it
    err = one_error_line(capsys)
    assert "unrecognized arguments: --bogus 1; --method cnn takes --threads, --progress, --model" in err
    assert main(args + ["--method", "dwt", "--levels", "two"]) == 2   # converted by the method's declared type
    assert "--levels 'two': expected int" in one_error_line(capsys)
    assert main(args + ["--method", "dwt", "--high-rule", "nope"]) == 2
    assert "--high-rule 'nope': choose from abs_max" in one_error_line(capsys)
    assert not out.exists()


def test_flags_are_generated_from_every_methods_declared_options(capsys):
    assert main(["fuse", "--help"]) == 0
    text = capsys.readouterr().out
    for method in METHODS:
        for o in method_options(method):
            assert (o.flag in text) == o.cli, (method, o.name)


@pytest.mark.parametrize("command", ["fuse", "batch", "metrics", "info"])
def test_each_help_ends_with_examples(capsys, command):
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    examples = text[text.rindex("examples:"):].splitlines()[1:]
    assert examples and all(line.strip().startswith(f"pyfusion {command}") for line in examples), text


def test_top_level_help_and_version(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert all(command in text for command in ("fuse", "batch", "metrics", "info"))
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"pyfusion {pyfusion.__version__}"
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


def info(*args) -> str:
    """``python -m pyfusion info ...``'s output (a subprocess: the backends' checks import their packages)."""
    r = subprocess.run([sys.executable, "-m", "pyfusion", "info", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    return r.stdout


def test_info_json_lists_methods_backends_and_the_shipped_models():
    from pyfusion.backends import BACKENDS, winograd

    report = json.loads(info("--json"))
    assert report["version"] == pyfusion.__version__
    assert report["methods"] == dict(METHODS) and set(report["methods"]) == {"cnn", "dwt", "wavelet-cnn", "cnn-plus", "dtcwt"}
    assert list(report["backends"]) == list(BACKENDS)
    for b in report["backends"].values():
        assert isinstance(b["available"], bool) and (b["why_not"] is None) == b["available"]
    assert report["winograd_isa"] == winograd.isa()
    models = {m["name"]: m for m in report["models"]}
    for name in SHIPPED:
        m = models[name]
        assert m["ok"], m
        with open(m["file"], "rb") as f:
            assert m["sha256"] == hashlib.sha256(f.read()).hexdigest()


def test_info_text():
    text = info()
    assert text.startswith(f"pyfusion {pyfusion.__version__}\nmethods:\n")
    for word in (*METHODS, "winograd", "onnx", "caffe", "torch", *SHIPPED):
        assert word in text


def test_metrics_json_and_table(pair, tmp_path, capsys):
    paths, imgs, truth = pair
    fused = str(write_image(tmp_path / "f.png", pyfusion.fuse(imgs, method="dwt").fused))
    assert main(["metrics", *paths, "--fused", fused, "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert list(got) == ["QMI", "QNCIE", "QG", "QP", "QE", "QY", "QCB", "QCV"]
    assert got == evaluate(imgs, read_image(fused))
    assert main(["metrics", *paths, "--fused", fused, "--reference", truth, "--json"]) == 0
    with_ref = json.loads(capsys.readouterr().out)
    assert list(with_ref) == [*got, "PSNR", "SSIM"] and with_ref["PSNR"] > 20 and 0 < with_ref["SSIM"] <= 1
    assert main(["metrics", *paths, "--fused", fused, "--reference", truth]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert [r.split()[0] for r in rows] == list(with_ref)
    assert float(rows[-2].split()[1]) == pytest.approx(with_ref["PSNR"], abs=1e-4)
    write_image(tmp_path / "small.png", imgs[0][:, :-2])
    assert main(["metrics", *paths, "--fused", str(tmp_path / "small.png")]) == 2
    assert "differs" in one_error_line(capsys, "metrics")


def test_the_command_writes_the_librarys_image(pair, tmp_path):
    """python -m pyfusion fuse (a subprocess) and the in-process main give the bytes of pyfusion.fuse's image."""
    paths, imgs, _ = pair
    out = tmp_path / "sub.png"
    r = subprocess.run([sys.executable, "-m", "pyfusion", "fuse", *paths, "-o", str(out), "--method", "dwt",
                        "--levels", "3", "--colour", "gray"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert main(["fuse", *paths, "-o", str(tmp_path / "in.png"), "--method", "dwt", "--levels", "3",
                 "--colour", "gray"]) == 0
    assert out.read_bytes() == (tmp_path / "in.png").read_bytes()
    lib = pyfusion.fuse(imgs, method="dwt", levels=3, colour="gray").fused
    assert not np.array_equal(lib, pyfusion.fuse(imgs, method="dwt").fused)    # the flags reached the method
    np.testing.assert_array_equal(read_image(out), lib)


def test_interrupt_exits_130_and_writes_nothing(pair, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pyfusion.fusion, "fuse", interrupted)
    out = tmp_path / "f.png"
    assert main(["fuse", *pair[0], "-o", str(out), "--method", "dwt"]) == 130
    assert capsys.readouterr().err == "pyfusion fuse: interrupted\n" and not out.exists()
