"""Recovering the authors' decision from their fused image (fusionlab.reproduce)."""
import numpy as np
import pytest

from fusionlab.reproduce import compare, estimate_decision, psnr255, survey_pairs


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


# ------------------------------------------------------------------------------ make reproduce (the report)
def _tool(name):
    """The lab command NAME (its main(argv) is what `make reproduce` runs)."""
    import importlib

    return importlib.import_module(f"fusionlab.commands.{name}")


def _md_tables(text):
    """{heading: [[cell, ...], ...]} of the first table under each '## ' heading of a markdown text (header row
    first, the |---| row left out)."""
    out, heading = {}, None
    for line in text.splitlines():
        if line.startswith("## "):
            heading = line[3:].strip()
        elif line.startswith("|") and heading is not None:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if all(set(c) <= set("-:") for c in cells):
                continue
            out.setdefault(heading, []).append(cells)
        elif not line.strip() and heading in out:
            heading = None  # only the first table of a section
    return out


def _num(cell):
    return float(cell.strip("*"))


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_pool_keeps_means_and_the_largest_difference():
    from fusionlab.figures import pool

    x = np.arange(16.0).reshape(4, 4)
    np.testing.assert_array_equal(pool(x, 2), [[2.5, 4.5], [10.5, 12.5]])
    d = np.zeros((3, 3, 3))
    d[0, 1, 0], d[1, 0, 0], d[2, 2, 2] = 5.0, -7.0, 3.0
    p = pool(d, 2, how="maxabs")                       # 3x3 padded to 4x4 by the edge
    assert p.shape == (2, 2, 3) and p[0, 0, 0] == -7.0 and p[1, 1, 2] == 3.0 and p[0, 1, 0] == 0.0


def test_ranks_and_best_marks_judge_at_the_printed_precision():
    from fusionlab.reproduce import _table, ranks

    rows = {"published": {"A": {"QMI": 1.0, "QCV": 20.0}, "B": {"QMI": 0.9, "QCV": 10.0}},
            "ours": {"x": {"QMI": 1.00004, "QCV": 15.0}}, "check": {"c": {"QMI": 2.0, "QCV": 1.0}}}
    r = ranks(rows)["x"]
    assert r["QMI"] == {"rank": 1, "of": 3, "delta": 0.0, "best": "A"}          # a tie at 4 decimals
    assert r["QCV"] == {"rank": 2, "of": 3, "delta": -5.0, "best": "B"}         # lower is better
    lines = _table(rows)
    assert lines[2] == "| A | **1.0000** | 20.0000 |" and lines[3] == "| B | 0.9000 | **10.0000** |"
    assert lines[4] == "| **ours: `x`** | **1.0000** | 15.0000 |"
    assert lines[5] == "| check: c | 2.0000 | 1.0000 |"                         # never marked, never ranked


def test_report_refuses_a_doc_without_markers(tmp_path):
    from fusionlab.docblocks import replace_block
    from fusionlab.reproduce import DOC_BLOCK, check_doc

    doc = tmp_path / "r.md"
    assert check_doc(doc) is None
    assert replace_block(doc, DOC_BLOCK, "T").splitlines()[2] == "T"
    doc.write_text("# hand-written\n")
    assert "refusing" in check_doc(doc)
    with pytest.raises(ValueError, match="refusing"):
        replace_block(doc, DOC_BLOCK, "new", append=False)
    assert doc.read_text() == "# hand-written\n"
    doc.write_text("intro\n<!-- reproduce:table:start -->\n\nold\n\n<!-- reproduce:table:end -->\noutro\n")
    assert check_doc(doc) is None
    assert replace_block(doc, DOC_BLOCK, "new", append=False) == \
        "intro\n<!-- reproduce:table:start -->\n\nnew\n\n<!-- reproduce:table:end -->\noutro\n"
    assert _tool("reproduce").main(["--data", str(tmp_path), "--doc", str(tmp_path / "x.md"), "--quiet"]) == 2


@pytest.mark.shared
@pytest.mark.slow
def test_make_reproduce_on_two_pairs(shared_data, tmp_path):
    """`make reproduce`'s code path (tools/reproduce.py) on one grayscale and one colour pair: every output, the
    tables' rows and columns, the check row against the published CNN values, valid small PNGs, the same bytes
    when the tables and figures are made again."""
    import json

    from PIL import Image
    from test_metrics import QCV_RTOL, TOL

    from pyfusion.fusion import METHODS
    from pyfusion.metrics import LOWER_IS_BETTER, METRICS

    data = shared_data / "mfif"
    pairs = ["c_01", "g_10"]
    out, docs = tmp_path / "runs", tmp_path / "docs"
    argv = ["--data", str(data), "--out", str(out), "--survey", str(docs / "results_survey.md"),
            "--doc", str(docs / "reproduction.md"), "--figures", str(docs / "figures"), "--pairs", ",".join(pairs),
            "--quiet"]
    assert _tool("reproduce").main(argv) == 0

    for m in METHODS:
        assert all((out / m / f"{n}_ours-{m}.tif").is_file() for n in pairs)
    meta = json.loads((data / "metrics.json").read_text())
    published, metrics = meta["methods"], meta["metrics"]
    assert metrics == list(METRICS)

    # the survey's tables: 18 published rows, every method of ours, the check row; 8 metric columns
    survey = (docs / "results_survey.md").read_text()
    tables = _md_tables(survey)
    expected = {"grayscale (1 pair)": ["g_10"], "colour (1 pair)": ["c_01"], "all (2 pairs)": pairs}
    assert set(expected) <= set(tables)
    check_label = "check: our metric code on the published CNN images"
    for heading, images in expected.items():
        head, *rows = tables[heading]
        assert head == ["method"] + [f"{k} (lower better)" if k in LOWER_IS_BETTER else k for k in metrics]
        labels = [r[0] for r in rows]
        assert labels == published + [f"**ours: `{m}`**" for m in METHODS] + [check_label]
        vals = {r[0]: [_num(c) for c in r[1:]] for r in rows}
        for j, k in enumerate(metrics):
            ranked = [v[j] for lab, v in vals.items() if lab != check_label]
            best = (min if k in LOWER_IS_BETTER else max)(ranked)
            bold = [lab for lab, r in zip(labels, rows) if r[1 + j].startswith("**")]
            assert bold and all(vals[lab][j] == best for lab in bold), (heading, k)
            assert not rows[-1][1 + j].startswith("**")
            # the check row: our metric code on the authors' CNN images = the survey's per-image values
            ref = np.mean([meta["datasets"]["color" if i.startswith("c") else "grayscale"]["per_image"]
                           [published.index("CNN")][j][meta["datasets"]["color" if i.startswith("c") else
                                                            "grayscale"]["images"].index(i)] for i in images])
            got = vals[check_label][j]
            if k == "QCV":
                assert got == pytest.approx(ref, rel=QCV_RTOL, abs=5e-5), (heading, k)
            else:
                assert abs(got - ref) <= TOL + 5e-5, (heading, k, got, ref)       # + the 4-decimal rounding
            assert vals["CNN"][j] == pytest.approx(ref, abs=5e-5)

    # the numbers behind them, unrounded
    res = json.loads((out / "results.json").read_text())
    for label in ("grayscale", "colour", "all"):
        check = res["tables"][label]["check"]["our metric code on the published CNN images"]
        cnn = res["tables"][label]["published"]["CNN"]
        for k in metrics:
            if k == "QCV":
                assert check[k] == pytest.approx(cnn[k], rel=QCV_RTOL)
            else:
                assert abs(check[k] - cnn[k]) <= TOL
        assert set(res["tables"][label]["ours"]) == set(METHODS)

    # ours vs the authors' images, between the markers
    repro = (docs / "reproduction.md").read_text()
    assert repro.count("<!-- reproduce:table:") == 2
    rows = [line for line in repro.splitlines() if line.startswith("| c_01 ") or line.startswith("| g_10 ")]
    assert len(rows) == 2 and all(len(r.strip("|").split("|")) == 6 for r in rows)
    assert [r["image"] for r in res["comparison"]] == pairs
    assert all(r["psnr_db"] > 40 and r["decision_agreement"] > 0.95 for r in res["comparison"])

    # figures: valid PNGs, small, linked from the docs
    figs = sorted((docs / "figures").iterdir())
    assert [f.name for f in figs] == ["metrics_colour.png", "metrics_grayscale.png", "pair_c_01.png",
                                      "pair_g_10.png"]
    for f in figs:
        raw = f.read_bytes()
        assert raw[:8] == PNG_MAGIC and len(raw) <= 300_000, f
        with Image.open(f) as im:
            im.verify()
        assert f"(figures/{f.name})" in (survey if f.name.startswith("metrics") else repro)

    # deterministic: the tables and figures again, from the same fused images, are the same bytes
    before = {p: p.read_bytes() for p in docs.rglob("*") if p.is_file()}
    assert _tool("reproduce").main(argv + ["--resume"]) == 0
    after = {p: p.read_bytes() for p in docs.rglob("*") if p.is_file()}
    assert before.keys() == after.keys() and all(before[p] == after[p] for p in before)
