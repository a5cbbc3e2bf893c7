"""One option model: every method declares its options once; fuse() checks them; the docs' table is generated."""
import inspect

import numpy as np
import pytest

import pyfusion
from pyfusion.fusion import _method, method_options
from pyfusion.options import Option, check, gb_to_bytes, pair, resolve

NET_METHODS = ("cnn", "wavelet-cnn", "cnn-plus")


def _pair(n=48, seed=0):
    rng = np.random.default_rng(seed)
    sharp = rng.random((n, n))
    blur = 0.25 * (np.roll(sharp, 1, 0) + np.roll(sharp, -1, 0) + np.roll(sharp, 1, 1) + np.roll(sharp, -1, 1))
    left = np.arange(n)[None, :] < n // 2
    return (np.where(left, sharp, blur) * 255).astype(np.uint8), (np.where(left, blur, sharp) * 255).astype(np.uint8)


def test_methods_are_public_with_descriptions():
    assert set(pyfusion.METHODS) == {"cnn", "dwt", "wavelet-cnn", "cnn-plus", "dtcwt"}
    assert all(isinstance(d, str) and d and "\n" not in d for d in pyfusion.METHODS.values())


@pytest.mark.parametrize("method", sorted(pyfusion.METHODS))
def test_each_method_declares_its_options_once(method):
    declared = method_options(method)
    names = [o.name for o in declared]
    assert len(names) == len(set(names))
    assert all(isinstance(o, Option) and o.help and "\n" not in o.help for o in declared)
    assert {"threads", "progress"} <= set(names)
    if method in NET_METHODS:
        assert {"model", "backend", "gpu", "max_memory"} <= set(names)
    # the method's fuse has no defaults of its own: they come from the declaration
    params = inspect.signature(_method(method).fuse).parameters
    assert [p.kind for p in params.values()] == [inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.VAR_KEYWORD]


def test_same_names_mean_the_same_thing():
    """An option that several methods take has one type, help and flag across them (defaults may differ)."""
    seen = {}
    for m in pyfusion.METHODS:
        for o in method_options(m):
            if o.name in ("threads", "progress", "backend", "gpu", "max_memory", "gf_eps", "threshold"):
                key = (o.type, o.help, o.flag, o.cli)
                assert seen.setdefault(o.name, key) == key, (m, o.name)


@pytest.mark.parametrize("method", sorted(pyfusion.METHODS))
def test_threads_one_works_for_every_method_and_matches_two(method):
    a, b = _pair()
    r1 = pyfusion.fuse([a, b], method=method, threads=1)
    r2 = pyfusion.fuse([a, b], method=method, threads=2, progress=False)
    assert r1.fused.dtype == np.uint8 and r1.fused.shape == a.shape
    np.testing.assert_array_equal(r1.fused, r2.fused)


@pytest.mark.parametrize("method", sorted(pyfusion.METHODS))
def test_unknown_option_is_a_one_line_error_naming_the_accepted_ones(method):
    a, b = _pair()
    with pytest.raises(ValueError) as e:
        pyfusion.fuse([a, b], method=method, bogus=1)
    msg = str(e.value)
    assert "\n" not in msg and "'bogus'" in msg
    assert msg.endswith(", ".join(o.name for o in method_options(method)))


def test_check_and_resolve():
    declared = (Option("x", int, 3, "an x"), Option("y", str, None, "a y"))
    assert check("m", declared, {"x": 1}) == {"x": 1}
    with pytest.raises(ValueError, match="takes no options 'p', 'q'; its options: x, y"):
        check("m", declared, {"p": 1, "q": 2})
    o = resolve(declared, {"y": "b"})
    assert (o.x, o.y) == (3, "b")
    with pytest.raises(TypeError):
        resolve(declared, {"z": 1})


def test_units_and_pairs():
    assert gb_to_bytes(None) is None and gb_to_bytes(1.5) == 3 << 29
    with pytest.raises(ValueError):
        gb_to_bytes(0)
    assert pair("a, b") == ("a", "b")
    with pytest.raises(ValueError):
        pair("a")


def test_wavelet_cnn_honours_its_two_models(tmp_path):
    """model=(low, high): the nets named are the ones run (a swapped pair gives other scores)."""
    a, b = _pair(64)
    r = pyfusion.fuse([a, b], method="wavelet-cnn", threads=1)
    same = pyfusion.fuse([a, b], method="wavelet-cnn", threads=1, model="wavelet_low,wavelet_high")
    np.testing.assert_array_equal(r.fused, same.fused)
    with pytest.raises(ValueError):   # the low net on the 3-channel high bands: wrong input channels
        pyfusion.fuse([a, b], method="wavelet-cnn", threads=1, model=("wavelet_high", "wavelet_high"))


def test_the_docs_options_table_is_generated_from_the_declarations():
    from fusionlab.commands import options_table

    assert options_table.main(["--check"]) == 0, "run `python -m fusionlab options-table`"
